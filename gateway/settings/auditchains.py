"""Settings of the shared audit store's chains: this replica's id and its signed checkpoints.

On the shared (MariaDB) audit store every replica keeps a hash chain of its
own, named by ``audit.replica_id`` (default: the host name, made to fit the
pattern), and every ``audit.checkpoints.interval`` seconds signs a checkpoint
over every chain's head with an Ed25519 key (``gateway/audit/checkpoints.py``).
The private key comes from an env var or a file (a mounted Secret), never from
the config file; the public keys that verification trusts are public and may
sit in the config, by key id.
"""

from __future__ import annotations

import re
import socket
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from gateway.settings.common import FROZEN
from gateway.settings.targets import SecretSource

# A replica id: what a Kubernetes pod or host name may look like, lower case, at most 64 characters.
REPLICA_ID_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,63}$"
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_NOT_IN_ID = re.compile(r"[^a-z0-9.-]+")


def replica_id_from(hostname: str) -> str:
    """The default replica id for ``hostname``: lower case, other characters as ``-``, at most 64 characters."""
    name = _NOT_IN_ID.sub("-", hostname.lower()).lstrip(".-")[:64]
    return name or "replica"


def default_replica_id() -> str:
    """The host's name as a replica id (a pod's name in Kubernetes)."""
    return replica_id_from(socket.gethostname())


class AnchorSettings(BaseModel):
    """Copies of every checkpoint in an S3 bucket with Object Lock, outside the database's reach.

    The bucket must have Object Lock enabled; each copy is written with
    ``mode`` retention for ``retention_days``, so not even the bucket's owner
    (COMPLIANCE) can delete or overwrite it before then. Credentials come
    from boto3's normal chain (IRSA on EKS), never from the config.
    """

    model_config = FROZEN
    bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")]
    prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9!_.*'()/-]{0,200}$")] = "audit-checkpoints/"
    region: str | None = None
    endpoint_url: str | None = None  # a VPC endpoint, or a local stand-in in tests
    retention_days: Annotated[int, Field(ge=1, le=36500)] = 400
    mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"


class CheckpointSettings(BaseModel):
    """Signed checkpoints over every chain head (shared store only).

    ``signing_key``: an Ed25519 private key (PEM, PKCS#8) in an env var or a
    file; with it, this replica writes a checkpoint every ``interval`` seconds
    while its chains move. ``public_keys``: key id -> the public key
    (base64 of the 32 raw bytes, or PEM) that verification accepts; keep
    retired keys here so old checkpoints still verify after a rotation.
    """

    model_config = FROZEN
    interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    key_id: Annotated[str | None, Field(pattern=KEY_ID_PATTERN)] = None
    signing_key: SecretSource | None = None
    public_keys: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], str] = {}
    anchor: AnchorSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_inline_private_key(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic hands raw input
        if isinstance(data, dict):
            if isinstance(data.get("signing_key"), str):  # a value error to pydantic: reported with the rest
                raise ValueError(  # noqa: TRY004 - pydantic collects ValueErrors, not TypeErrors
                    "the checkpoint signing key never sits in the config file: use signing_key.env or .file"
                )
            for key_id, value in (data.get("public_keys") or {}).items():
                if isinstance(value, str) and "PRIVATE" in value.upper():
                    raise ValueError(f"public_keys.{key_id} holds a private key: only public keys belong in the config")
        return data

    @model_validator(mode="after")
    def _key_and_id_together(self) -> CheckpointSettings:
        if (self.signing_key is None) != (self.key_id is None):
            raise ValueError("audit.checkpoints.signing_key and key_id go together")
        if self.signing_key is not None and self.signing_key.aws_secret is not None:
            raise ValueError("audit.checkpoints.signing_key takes env or file (mount the Secret as a file)")
        if self.key_id is not None and self.key_id not in self.public_keys:
            raise ValueError(
                f"audit.checkpoints.public_keys needs the signing key's public half under {self.key_id!r}, "
                "or no replica could verify its checkpoints"
            )
        return self


class ChainSettings(BaseModel):
    """Mixed into the audit settings: the replica's chain id and the checkpoints."""

    replica_id: str = Field(default_factory=default_replica_id)
    checkpoints: CheckpointSettings = CheckpointSettings()

    @field_validator("replica_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not re.fullmatch(REPLICA_ID_PATTERN, value):
            raise ValueError(
                "audit.replica_id is lower-case letters, digits, '.' and '-', starting with a letter or digit, "
                "at most 64 characters"
            )
        return value
