"""Versioned, idempotent schema migrations for the gateway's own stores (the shared audit and state stores).

Each store lists its migrations (version, description, steps); :class:`Migrations`
applies the ones a database lacks under a named lock (``GET_LOCK``), so replicas
starting at the same moment migrate once, records each in the store's version
table, and refuses a database a newer gateway migrated (``SchemaTooNew``). A
step is SQL, or a function of the cursor for a guarded step; every step is
idempotent, so a migration cut short is finished by the next start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

Step: TypeAlias = str | Callable[[Any], None]  # SQL, or a function of the cursor (for a guarded step)
Migration: TypeAlias = tuple[int, str, tuple[Step, ...]]


class SchemaTooNew(Exception):
    """The database was migrated by a newer gateway than this one."""


class SchemaLocked(TimeoutError):
    """Another gateway held the schema lock for longer than the lock timeout."""


@dataclass(frozen=True)
class Migrations:
    """One store's migrations: ``store`` (``"audit"``, ``"state"``) names its lock and its errors."""

    store: str
    version_table: str
    steps: tuple[Migration, ...]
    lock_timeout: float = 30

    @property
    def latest(self) -> int:
        """The newest version this gateway knows."""
        return self.steps[-1][0]

    def applied(self, cursor: Any) -> set[int]:  # noqa: ANN401 - a DB-API cursor
        """The migration versions recorded in the database (empty when there is no schema)."""
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
            (self.version_table,),
        )
        if cursor.fetchone()[0] == 0:
            return set()
        cursor.execute(f"SELECT version FROM {self.version_table}")  # noqa: S608 - the store's fixed name
        return {int(version) for (version,) in cursor.fetchall()}

    def check_not_newer(self, applied: set[int]) -> None:
        """Refuse a schema with a migration this gateway does not know (a newer gateway wrote it)."""
        newer = sorted(v for v in applied if v > self.latest)
        if newer:
            raise SchemaTooNew(
                f"the {self.store} schema is at version {newer[-1]}, newer than this gateway's {self.latest}: "
                "upgrade the gateway (it refuses to start against a newer schema)"
            )

    def migrate(self, cursor: Any, database: str) -> list[int]:  # noqa: ANN401 - a DB-API cursor
        """Apply the migrations this database lacks, under the schema lock; return the versions applied now."""
        lock = f"gateway_{self.store}_schema.{database}"[:64]
        cursor.execute("SELECT GET_LOCK(%s, %s)", (lock, self.lock_timeout))
        if cursor.fetchone()[0] != 1:
            raise SchemaLocked(f"another gateway holds the {self.store} schema lock; nothing was migrated")
        try:
            cursor.execute(
                f"""CREATE TABLE IF NOT EXISTS {self.version_table} (
                    version INT NOT NULL PRIMARY KEY,
                    description VARCHAR(200) NOT NULL,
                    applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
                ) ENGINE=InnoDB"""
            )
            applied = self.applied(cursor)
            self.check_not_newer(applied)
            done = []
            for version, description, statements in self.steps:
                if version in applied:
                    continue
                for step in statements:
                    if callable(step):
                        step(cursor)
                    else:
                        cursor.execute(step)
                cursor.execute(
                    f"INSERT IGNORE INTO {self.version_table} (version, description) VALUES (%s, %s)",  # noqa: S608 - the store's fixed name
                    (version, description),
                )
                done.append(version)
            return done
        finally:
            cursor.execute("SELECT RELEASE_LOCK(%s)", (lock,))
            cursor.fetchall()
