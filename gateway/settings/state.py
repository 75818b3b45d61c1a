"""The shared state store (``state:``): where admin edits, access requests and the revision live."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from gateway.settings.common import FROZEN
from gateway.settings.shared import SharedDatabaseSettings


class StateDatabaseSettings(SharedDatabaseSettings):
    """The MariaDB state store's connection (``state.mariadb``): the audit store's model."""

    section: ClassVar[str] = "state.mariadb"
    query_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0


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
