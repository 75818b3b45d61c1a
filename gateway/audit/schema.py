"""The shared audit store's own schema in MariaDB, created and migrated by the gateway.

``audit_schema_version`` lists the migrations applied. Every replica runs
:func:`migrate` at start-up under a named lock (``GET_LOCK``), so replicas
starting together apply each migration once. Every statement of a migration
is idempotent (``IF NOT EXISTS``, ``INSERT IGNORE``): MariaDB commits DDL
implicitly, so a migration cut short by a crash is simply run again.
Migrations only ever add, so a replica still on older code keeps writing
while a newer one migrates (a rolling upgrade).

Tables:

* ``audit_log``: one row per entry; ``record`` holds the canonical bytes
  that were hashed, the other columns copy fields out of it for filtering.
  Each filter has an index ending in ``time`` (InnoDB appends the primary key
  ``seq``), which serves both the filter and the newest-first order.
* ``audit_head``: version 1's single chain head (last ``seq`` and ``hash``),
  which every replica locked for its whole transaction. Since version 2 it is
  the head of the ``_legacy`` chain only: the records written before the
  upgrade (and by a replica still on older code during a rolling upgrade).

Version 2 (issue 14): one chain per replica. ``audit_log`` gets ``id`` (an
AUTO_INCREMENT primary key: the row's place in the whole log, for paging and
export) and ``chain`` (the replica id; existing rows are the ``_legacy``
chain), with ``seq`` unique per chain. ``audit_chains`` holds each chain's
head, locked only by that chain's writer, so replicas never wait on each
other. ``audit_checkpoints`` holds the signed checkpoints over every head
(``gateway/audit/checkpoints.py``). A database with a version this gateway
does not know is refused: it was migrated by newer code.
"""

from __future__ import annotations

from typing import Any

from gateway.db.migrations import Migration, Migrations

LOG_TABLE = "audit_log"
HEAD_TABLE = "audit_head"
CHAINS_TABLE = "audit_chains"
CHECKPOINTS_TABLE = "audit_checkpoints"
LEGACY_CHAIN = "_legacy"  # never a valid replica id (gateway/settings/auditchains.py)
VERSION_TABLE = "audit_schema_version"
LOCK_TIMEOUT = 30

# Column widths of the copied filter columns; longer values are cut to fit
# (the whole value stays in ``record``), so a hostile claim cannot fail a batch.
WIDTHS = {"request_id": 128, "event": 32, "user": 255, "target": 128, "decision": 16, "code": 64}

# (name, columns): the filter indexes, also used by the benchmark to build them after a bulk load.
INDEXES = (
    ("audit_time", "time"),
    ("audit_request_id", "request_id"),
    ("audit_user_time", "user, time"),
    ("audit_target_time", "target, time"),
    ("audit_target_decision_time", "target, decision, time"),
    ("audit_decision_time", "decision, time"),
    ("audit_code_time", "code, time"),
    ("audit_event_time", "event, time"),
)

_V1 = (
    f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
        seq BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        time DATETIME(6) NOT NULL,
        request_id VARCHAR({WIDTHS["request_id"]}) NULL,
        event VARCHAR({WIDTHS["event"]}) NULL,
        user VARCHAR({WIDTHS["user"]}) NULL,
        target VARCHAR({WIDTHS["target"]}) NULL,
        decision VARCHAR({WIDTHS["decision"]}) NULL,
        code VARCHAR({WIDTHS["code"]}) NULL,
        statement MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL,
        record MEDIUMBLOB NOT NULL,
        prev_hash CHAR(64) CHARACTER SET ascii NOT NULL,
        hash CHAR(64) CHARACTER SET ascii NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    f"""CREATE TABLE IF NOT EXISTS {HEAD_TABLE} (
        id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        seq BIGINT UNSIGNED NOT NULL,
        hash CHAR(64) CHARACTER SET ascii NOT NULL
    ) ENGINE=InnoDB""",
    f"INSERT IGNORE INTO {HEAD_TABLE} (id, seq, hash) VALUES (1, 0, '{'0' * 64}')",  # noqa: S608 - constants
    *(f"CREATE INDEX IF NOT EXISTS {name} ON {LOG_TABLE} ({columns})" for name, columns in INDEXES),
)


def _has_column(cursor: Any, table: str, column: str) -> bool:  # noqa: ANN401 - a DB-API cursor
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() "
        "AND table_name = %s AND column_name = %s",
        (table, column),
    )
    return bool(cursor.fetchone()[0])


def _chains_in_log(cursor: Any) -> None:  # noqa: ANN401 - a DB-API cursor
    """One statement (atomic DDL): the row id as primary key, the chain column, seq unique per chain."""
    if _has_column(cursor, LOG_TABLE, "chain"):
        return  # done by an earlier run that stopped before recording the version
    cursor.execute(
        f"""ALTER TABLE {LOG_TABLE}
            DROP PRIMARY KEY,
            ADD COLUMN id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY FIRST,
            ADD COLUMN chain VARCHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '{LEGACY_CHAIN}' AFTER id,
            ADD UNIQUE KEY audit_chain_seq (chain, seq)"""
    )


_V2 = (
    _chains_in_log,
    f"""CREATE TABLE IF NOT EXISTS {CHAINS_TABLE} (
        chain VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY,
        seq BIGINT UNSIGNED NOT NULL,
        hash CHAR(64) CHARACTER SET ascii NOT NULL,
        created DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
    ) ENGINE=InnoDB""",
    f"""CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        time VARCHAR(40) CHARACTER SET ascii NOT NULL,
        writer VARCHAR(64) CHARACTER SET ascii NOT NULL,
        key_id VARCHAR(64) CHARACTER SET ascii NOT NULL,
        body MEDIUMBLOB NOT NULL,
        signature VARBINARY(64) NOT NULL
    ) ENGINE=InnoDB""",
)

MIGRATIONS: tuple[Migration, ...] = (
    (1, "audit log, chain head, filter indexes", _V1),
    (2, "one hash chain per replica (row id, chain column, chain heads), signed checkpoints", _V2),
)
LATEST = MIGRATIONS[-1][0]


SCHEMA = Migrations("audit", VERSION_TABLE, MIGRATIONS, LOCK_TIMEOUT)
applied_versions = SCHEMA.applied
check_not_newer = SCHEMA.check_not_newer
migrate = SCHEMA.migrate
