"""The shared state store (``state:``): where admin edits, access requests and the revision live."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

from gateway.settings.common import FROZEN, refuse_passwords
from gateway.settings.targets import SecretSource, TlsSettings


class StateDatabaseSettings(BaseModel):
    """The MariaDB state store's connection: the audit store's model (``audit.mariadb``), its secret sources."""

    model_config = FROZEN
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 3306
    database: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
    user: str
    secret: SecretSource
    tls: TlsSettings = TlsSettings()
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    query_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic hands raw input
        return refuse_passwords(data, "state.mariadb.secret.env or .file")

    @model_validator(mode="after")
    def _readable_secret(self) -> StateDatabaseSettings:
        # Read in worker threads with a blocking driver, as the audit store's is: env and file only.
        if self.secret.aws_secret is not None:
            raise ValueError("state.mariadb.secret takes env or file (mount a Secrets Manager value as a file)")
        return self


class StateSettings(BaseModel):
    """``embedded``: policy files and SQLite in ``admin.state_dir`` (one node); ``mariadb``: shared by replicas."""

    model_config = FROZEN
    store: Literal["embedded", "mariadb"] = "embedded"
    mariadb: StateDatabaseSettings | None = None
    # Seconds between two reads of the revision row (one primary-key read) by every replica.
    poll_interval: Annotated[float, Field(gt=0, le=60)] = 0.5

    @model_validator(mode="after")
    def _store_configured(self) -> StateSettings:
        if self.store == "mariadb" and self.mariadb is None:
            raise ValueError("state.store mariadb needs a state.mariadb section (host, database, user, secret)")
        return self
