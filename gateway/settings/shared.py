"""The connection of a MariaDB the gateway keeps its own data in (the shared audit store, the state store)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from gateway.settings.common import FROZEN, refuse_passwords
from gateway.settings.targets import SecretSource, TlsSettings


class SharedDatabaseSettings(BaseModel):
    """Host, account and secret of a shared store; its password comes from ``secret`` (env or file only)."""

    model_config = FROZEN
    section: ClassVar[str] = "mariadb"  # the config path problems name
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 3306
    database: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
    user: str
    secret: SecretSource
    tls: TlsSettings = TlsSettings()
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    query_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic hands raw input
        return refuse_passwords(data, f"{cls.section}.secret.env or .file")

    @model_validator(mode="after")
    def _readable_secret(self) -> SharedDatabaseSettings:
        # Read in worker threads with a blocking driver, without the async Secrets Manager client the
        # pools use: only env and file sources work here.
        if self.secret.aws_secret is not None:
            raise ValueError(f"{self.section}.secret takes env or file (mount a Secrets Manager value as a file)")
        return self
