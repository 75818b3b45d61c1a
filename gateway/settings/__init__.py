"""Gateway configuration: a YAML file plus ``GATEWAY_*`` environment overrides.

Environment variables win over the file; nested keys use ``__``
(``GATEWAY_LISTEN__PORT=9000``). Settings are frozen and validated as a whole:
every problem is reported at once, and insecure combinations (dev mode off
loopback, an algorithm list with ``none`` or ``HS*``, a password in the file)
are refused.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gateway.errors import ConfigError
from gateway.settings.auditchains import ChainSettings, CheckpointSettings
from gateway.settings.common import FROZEN
from gateway.settings.issuers import ALLOWED_ALGORITHMS, MIN_JWKS_COOLDOWN, IssuerSettings
from gateway.settings.shared import SharedDatabaseSettings
from gateway.settings.state import StateDatabaseSettings, StateSettings
from gateway.settings.targets import (
    AwsSecretSource,
    IamSettings,
    PoolSettings,
    PrivilegeSettings,
    SecretSource,
    TargetSettings,
    TlsSettings,
)

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AdminSettings",
    "AuditDatabaseSettings",
    "AuditSettings",
    "AwsSecretSource",
    "CheckpointSettings",
    "ConsoleSettings",
    "DevSettings",
    "FloodSettings",
    "IamSettings",
    "IssuerSettings",
    "LimitSettings",
    "ListenSettings",
    "PoolSettings",
    "PrivilegeSettings",
    "SecretSource",
    "Settings",
    "StateDatabaseSettings",
    "StateSettings",
    "TargetSettings",
    "TlsSettings",
    "TracingSettings",
    "is_loopback",
    "load_settings",
]


class AuditDatabaseSettings(SharedDatabaseSettings):
    """The shared MariaDB audit store (``audit.store: mariadb``); its password comes from ``secret``."""

    section: ClassVar[str] = "audit.mariadb"


class FloodSettings(BaseModel):
    """How many records of unauthenticated requests are written one by one (``gateway/audit/flood.py``)."""

    model_config = FROZEN
    per_client_rate: Annotated[float, Field(gt=0)] = 0.2  # records per second, refilled, per client address
    per_client_burst: Annotated[int, Field(ge=1)] = 10
    global_rate: Annotated[float, Field(gt=0)] = 2.0  # the same for the whole gateway
    global_burst: Annotated[int, Field(ge=1)] = 100
    window: Annotated[float, Field(gt=0, le=86400)] = 60.0  # seconds one auth_flood aggregate collects
    max_clients: Annotated[int, Field(ge=1)] = 10_000  # addresses whose buckets are kept
    max_aggregates: Annotated[int, Field(ge=1)] = 100  # addresses with an aggregate of their own per window


class AuditSettings(ChainSettings):
    """Where the audit log goes (and, on the shared store, this replica's chain and checkpoints)."""

    model_config = FROZEN
    store: Literal["sqlite", "mariadb"] = "sqlite"
    path: Path = Path("audit.db")
    mariadb: AuditDatabaseSettings | None = None
    redact_literals: bool = False
    queue_limit: Annotated[int, Field(ge=1)] = 10_000
    # Where the store's work runs: the audit writer thread, beside the event loop, or a child process of
    # its own (``gateway/audit/process.py``), so the store's Python work does not share the loop's GIL.
    writer: Literal["thread", "process"] = "thread"
    # The decision record is always durable before a statement runs. The outcome
    # record is queued and committed with the next group (milliseconds later, and
    # always before shutdown ends); true makes each reply wait for it as well.
    await_outcome: bool = False
    # Records of requests refused before a valid token (401, 413, 431): rate-limited, the rest aggregated.
    unauthenticated: FloodSettings = FloodSettings()

    @model_validator(mode="after")
    def _store_configured(self) -> AuditSettings:
        if self.store == "mariadb" and self.mariadb is None:
            raise ValueError("audit.store mariadb needs an audit.mariadb section (host, database, user, secret)")
        return self


class LimitSettings(BaseModel):
    """Caps on what one request may ask for."""

    model_config = FROZEN
    max_body_bytes: Annotated[int, Field(gt=0)] = 256 * 1024
    # All request headers together (names and values); a bearer token alone may be 8 KB.
    max_header_bytes: Annotated[int, Field(ge=16 * 1024)] = 32 * 1024
    max_sql_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    max_sql_depth: Annotated[int, Field(gt=0)] = 64
    max_params: Annotated[int, Field(gt=0)] = 1000
    max_statements: Annotated[int, Field(gt=0)] = 50
    max_rows: Annotated[int, Field(gt=0)] = 10_000
    max_result_bytes: Annotated[int, Field(gt=0)] = 64 * 1024 * 1024
    default_statement_timeout: Annotated[float, Field(gt=0)] = 30.0
    max_statement_timeout: Annotated[float, Field(gt=0)] = 300.0
    # Streamed (NDJSON) results keep memory flat, so they have their own, larger row cap.
    max_stream_rows: Annotated[int, Field(gt=0)] = 10_000_000
    # How long what the catalogue says of a view (its base tables) is trusted: a view redefined outside
    # the gateway is seen within this time; DDL run through the gateway is seen at once.
    view_cache_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0


class TracingSettings(BaseModel):
    """OpenTelemetry tracing (off by default): spans exported with OTLP over HTTP."""

    model_config = FROZEN
    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # the collector's OTLP/HTTP traces URL
    service_name: str = "db-gateway"
    sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0  # of new traces; a caller's sampled flag is kept
    export_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0


class DevSettings(BaseModel):
    """The built-in dev issuer (dev mode only)."""

    model_config = FROZEN
    key_file: Path = Path(".run/dev-issuer-key.json")
    audience: str = "db-gateway"
    token_lifetime: Annotated[int, Field(gt=0, le=86400)] = 3600


class ListenSettings(BaseModel):
    """Where the HTTP server listens."""

    model_config = FROZEN
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, lt=65536)] = 8080


class AdminSettings(BaseModel):
    """Admin edits of the policy files, access requests and statement reviews."""

    model_config = FROZEN
    managed_file: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\.ya?ml$")] = "managed.yaml"
    state_dir: Path = Path("state")  # access requests (SQLite); never inside the policies directory
    request_ttl: Annotated[float, Field(gt=0)] = 86400.0  # seconds a pending access request lives
    max_request_duration: Annotated[float, Field(gt=0)] = 7 * 86400.0  # longest grant a request may ask for
    # Statement review (issue 16): how many rows a reviewed write may change beyond (or short of) its dry run's
    # count, per statement, when it is executed; past it the execution rolls back (review_rows_changed).
    review_row_margin: Annotated[int, Field(ge=0)] = 0
    # The dry run's sample of the rows a single-table UPDATE / DELETE would change (0: counts only), and the
    # most JSON bytes the samples of one review keep (stored with the review).
    review_sample_rows: Annotated[int, Field(ge=0, le=1000)] = 20
    review_sample_bytes: Annotated[int, Field(ge=1024, le=1048576)] = 65536


class ConsoleSettings(BaseModel):
    """The web console (``gateway/console/``): sign-in, sessions, result pages."""

    model_config = FROZEN
    enabled: bool = True
    # The URL browsers reach the gateway at (the sign-in redirect URI is <public_url>/console/callback).
    # None: http://<listen.host>:<listen.port>, which is accepted on loopback only.
    public_url: Annotated[str | None, Field(pattern=r"^https?://[A-Za-z0-9.:\[\]-]+$")] = None
    issuer: str | None = None  # which configured issuer signs people in; None: the first (dev mode: the dev issuer)
    client_id: Annotated[str, Field(min_length=1, max_length=256)] = "gateway-console"
    client_secret: SecretSource | None = None  # a confidential client's secret (env or file); PKCE always
    scope: Annotated[str, Field(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$")] = "openid email"
    idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 1800.0  # seconds without a request ends a session
    absolute_timeout: Annotated[float, Field(gt=0, le=7 * 86400)] = 8 * 3600.0  # seconds after sign-in, whatever
    cookie_secure: bool | None = None  # None: Secure unless public_url is http on loopback
    max_sessions: Annotated[int, Field(ge=1)] = 10_000  # per process; the oldest go first past it
    page_rows: Annotated[int, Field(gt=0, le=100_000)] = 1000  # rows a result page shows (CSV: the stream cap)


class Settings(BaseSettings):
    """The whole gateway configuration (frozen)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
    )
    dev_mode: bool = False
    listen: ListenSettings = ListenSettings()
    issuers: tuple[IssuerSettings, ...] = ()
    jwks_cooldown: Annotated[float, Field(ge=MIN_JWKS_COOLDOWN)] = MIN_JWKS_COOLDOWN
    policies_dir: Path = Path("policies")
    targets: dict[str, TargetSettings] = Field(default_factory=dict)
    audit: AuditSettings = AuditSettings()
    limits: LimitSettings = LimitSettings()
    dev: DevSettings = DevSettings()
    metrics_public: bool = True
    admin: AdminSettings = AdminSettings()
    tracing: TracingSettings = TracingSettings()
    privileges: PrivilegeSettings = PrivilegeSettings()
    console: ConsoleSettings = ConsoleSettings()
    state: StateSettings = StateSettings()

    @model_validator(mode="after")
    def _secure_defaults(self) -> Settings:
        if self.dev_mode and not is_loopback(self.listen.host):
            raise ValueError("dev mode is refused unless the gateway listens on loopback")
        if not self.dev_mode and not self.issuers:
            raise ValueError("no issuers configured (only dev mode runs without an IdP)")
        if not self.targets:
            raise ValueError("no targets configured")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 - part of the hook's signature
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files on purpose
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - secrets come per db_user
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment wins over the values given (the YAML file's contents)."""
        return (env_settings, init_settings)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(path: Path | None, **overrides: Any) -> Settings:  # noqa: ANN401 - overrides are raw config values, validated by Settings
    """Load settings from ``path`` (YAML) and the environment; raise ``ConfigError``."""
    values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        values.update(loaded or {})
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid gateway configuration:\n  " + "\n  ".join(lines)) from None
