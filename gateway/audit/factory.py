"""Open the audit store the settings name: the embedded SQLite file or the shared MariaDB store."""

from __future__ import annotations

from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStore
from gateway.settings import AuditSettings


def open_audit_store(settings: AuditSettings, *, readonly: bool = False) -> AuditStore:
    """Open (and, unless ``readonly``, create or migrate) the configured audit store."""
    if settings.store == "mariadb" and settings.mariadb is not None:
        from gateway.audit.mariadb import MariaDBAuditStore  # noqa: PLC0415 - only this store needs the driver

        return MariaDBAuditStore(settings.mariadb, readonly=readonly, chain=settings.replica_id)
    return SQLiteAuditStore(settings.path, readonly=readonly)
