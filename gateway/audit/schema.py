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
* ``audit_head``: a single row with the chain head (last ``seq`` and
  ``hash``). Writers lock it (``SELECT ... FOR UPDATE``) for the whole
  transaction, which makes every replica's records one chain.
"""

from __future__ import annotations

from typing import Any

LOG_TABLE = "audit_log"
HEAD_TABLE = "audit_head"
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

MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = ((1, "audit log, chain head, filter indexes", _V1),)
LATEST = MIGRATIONS[-1][0]


def applied_versions(cursor: Any) -> set[int]:  # noqa: ANN401 - a DB-API cursor
    """The migration versions recorded in the database (empty when there is no schema)."""
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s",
        (VERSION_TABLE,),
    )
    if cursor.fetchone()[0] == 0:
        return set()
    cursor.execute(f"SELECT version FROM {VERSION_TABLE}")  # noqa: S608 - fixed name
    return {int(version) for (version,) in cursor.fetchall()}


def migrate(cursor: Any, database: str) -> list[int]:  # noqa: ANN401 - a DB-API cursor
    """Apply the migrations this database lacks; return the versions applied now."""
    cursor.execute(
        f"""CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
            version INT NOT NULL PRIMARY KEY,
            description VARCHAR(200) NOT NULL,
            applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
        ) ENGINE=InnoDB"""
    )
    lock = f"gateway_audit_schema.{database}"[:64]
    cursor.execute("SELECT GET_LOCK(%s, %s)", (lock, LOCK_TIMEOUT))
    if cursor.fetchone()[0] != 1:
        raise TimeoutError("another gateway holds the audit schema lock")
    try:
        applied = applied_versions(cursor)
        done = []
        for version, description, statements in MIGRATIONS:
            if version in applied:
                continue
            for sql in statements:
                cursor.execute(sql)
            cursor.execute(
                f"INSERT IGNORE INTO {VERSION_TABLE} (version, description) VALUES (%s, %s)",  # noqa: S608 - a constant table name
                (version, description),
            )
            done.append(version)
        return done
    finally:
        cursor.execute("SELECT RELEASE_LOCK(%s)", (lock,))
        cursor.fetchall()
