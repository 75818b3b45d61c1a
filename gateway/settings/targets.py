"""Database targets: where they are, how the gateway logs in (secrets or IAM), TLS, pools, privileges."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from gateway.settings.common import FROZEN, refuse_passwords


class AwsSecretSource(BaseModel):
    """A password in AWS Secrets Manager, cached for ``ttl`` seconds."""

    model_config = FROZEN
    secret_id: str
    region: str | None = None  # None: boto3's normal chain (AWS_REGION, profile)
    key: str | None = "password"  # JSON key of the secret string; None: the whole string
    ttl: Annotated[float, Field(gt=0, le=86400)] = 300.0
    endpoint_url: str | None = None  # a VPC endpoint, or a local stand-in in tests


class SecretSource(BaseModel):
    """Where a database password comes from: an env var, a file or AWS Secrets Manager (never inline)."""

    model_config = FROZEN
    env: str | None = None
    file: Path | None = None
    aws_secret: AwsSecretSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        if sum(v is not None for v in (self.env, self.file, self.aws_secret)) != 1:
            raise ValueError("a secret source names exactly one of env, file or aws_secret")
        return self


# RDS IAM auth tokens are valid for 15 minutes; reuse and recycle well before.
IAM_TOKEN_LIFETIME = 900.0
IAM_MAX_REUSE = 840.0


class IamSettings(BaseModel):
    """RDS IAM authentication: a short-lived token per new connection, for each ``db_user``."""

    model_config = FROZEN
    region: str
    db_users: Annotated[tuple[str, ...], Field(min_length=1)]
    token_ttl: Annotated[float, Field(gt=0, le=IAM_MAX_REUSE)] = 600.0  # reuse a minted token this long


class TlsSettings(BaseModel):
    """TLS to the database."""

    model_config = FROZEN
    enabled: bool = False
    ca_file: Path | None = None
    verify_hostname: bool = True


class PoolSettings(BaseModel):
    """Limits of the pool for each (target, db_user)."""

    model_config = FROZEN
    min_size: Annotated[int, Field(ge=0, le=100)] = 0
    max_size: Annotated[int, Field(ge=1, le=500)] = 10
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    acquire_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    max_lifetime: Annotated[float, Field(gt=0, le=86400)] = 600.0
    max_waiting: Annotated[int, Field(ge=0, le=100_000)] = 1000
    max_connects_per_second: Annotated[float, Field(gt=0, le=1000)] = 50.0  # per target (RDS throttles IAM logins)


DriftMode = Literal["warn", "refuse"]


class PrivilegeSettings(BaseModel):
    """The database accounts' own privileges as the second enforcer (SECURITY rule 32).

    The gateway compares each pool account's ``SHOW GRANTS`` with what the
    policies need (as ``gateway db check`` does) at start-up, after every policy
    change and every ``recheck_interval`` seconds (``retry_interval`` after a
    check that could not run). An account holding more is reported in
    ``/readyz``, the ``gateway_db_privilege_drift`` metric and a
    ``db_privilege_drift`` log event; with ``drift: refuse`` its statements are
    also refused (``503 privilege_drift``) until a check finds it clean.
    """

    model_config = FROZEN
    drift: DriftMode = "warn"
    recheck_interval: Annotated[float, Field(gt=0, le=86400)] = 300.0
    retry_interval: Annotated[float, Field(gt=0, le=3600)] = 10.0


class TargetSettings(BaseModel):
    """One database target: where it is and how the gateway authenticates."""

    model_config = FROZEN
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 3306
    database: str
    tls: TlsSettings = TlsSettings()
    pool: PoolSettings = PoolSettings()
    auth_mode: Literal["secret", "iam"] = "secret"
    secrets: dict[str, SecretSource] = Field(default_factory=dict)  # db_user -> source
    iam: IamSettings | None = None
    privilege_drift: DriftMode | None = None  # this target's privileges.drift (None: the global one)

    @model_validator(mode="after")
    def _auth_mode_fits(self) -> TargetSettings:
        if self.auth_mode == "secret":
            if self.iam is not None:
                raise ValueError("iam settings given but auth_mode is secret")
            return self
        problems = []
        if self.iam is None:
            problems.append("auth_mode iam needs iam: {region, db_users}")
        if self.secrets:
            problems.append("auth_mode iam takes its accounts from iam.db_users, not secrets")
        if not (self.tls.enabled and self.tls.verify_hostname):
            problems.append(
                "auth_mode iam requires TLS with certificate and hostname verification "
                "(tls.enabled: true, tls.verify_hostname: true): IAM tokens are sent in cleartext inside TLS"
            )
        if self.pool.max_lifetime > IAM_MAX_REUSE:
            problems.append(f"auth_mode iam caps pool.max_lifetime at {IAM_MAX_REUSE:g}s (tokens live 15 minutes)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def db_users(self) -> tuple[str, ...]:
        """The database accounts the gateway opens pools for on this target."""
        if self.iam is not None:
            return self.iam.db_users
        return tuple(self.secrets)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic hands raw input
        return refuse_passwords(data, "secrets.<db_user>.env or .file")
