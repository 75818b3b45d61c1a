"""The state store's schema in MariaDB: versioned, idempotent migrations run under a named lock.

``state_schema_version`` lists the migrations applied. Every replica runs
:func:`migrate` at start-up under ``GET_LOCK``, so replicas starting at the same
moment apply each migration once (the others find it recorded when they get
the lock). Every statement is idempotent (``IF NOT EXISTS``, ``INSERT
IGNORE``): MariaDB commits DDL implicitly, so a migration cut short by a crash
is simply run again. A database holding a version this gateway does not know
(a newer gateway migrated it) is refused: start-up stops rather than write
rows an older schema reading would misunderstand.

Tables:

* ``state_revision``: one row (``id = 1``) with the revision, bumped by every
  change to the managed policy documents in the same transaction; replicas
  poll it (a primary-key read) and an edit's conditional ``UPDATE ... WHERE
  revision = <read>`` makes concurrent edits one success, one 412.
* ``policy_documents``: managed policy documents by name (YAML bytes), merged
  with the read-only base files as if they were files of that name.
* ``access_requests``: the access requests (``gateway.state.requests``).
* ``aliases``: the names each person has been seen with (``gateway.state.aliases``).

Version 2 (issue 16 on the shared store):

* ``reviews`` and ``review_verdicts``: statement reviews and their verdicts
  (``gateway.state.reviews``), one row per review, one per person's verdict.

Version 3:

* ``console_sessions``: web console sessions by the SHA-256 of the cookie,
  their contents sealed under a key derived from the cookie
  (``gateway.console.sharedsessions``), with when they end.
"""

from __future__ import annotations

from gateway.db.migrations import Migration, Migrations, SchemaLocked, SchemaTooNew
from gateway.errors import StateUnavailable
from gateway.state.connection import Cursor

VERSION_TABLE = "state_schema_version"
LOCK_TIMEOUT = 30

_V1 = (
    """CREATE TABLE IF NOT EXISTS state_revision (
        id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
        revision BIGINT UNSIGNED NOT NULL
    ) ENGINE=InnoDB""",
    "INSERT IGNORE INTO state_revision (id, revision) VALUES (1, 0)",
    """CREATE TABLE IF NOT EXISTS policy_documents (
        name VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        content MEDIUMBLOB NOT NULL,
        revision BIGINT UNSIGNED NOT NULL,
        updated_at CHAR(27) CHARACTER SET ascii NOT NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE IF NOT EXISTS access_requests (
        id VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        requester VARCHAR(255) NOT NULL,
        target VARCHAR(128) NOT NULL,
        access VARCHAR(16) NOT NULL,
        duration_s DOUBLE NOT NULL,
        reason TEXT NOT NULL,
        state VARCHAR(16) NOT NULL,
        created_at CHAR(27) CHARACTER SET ascii NOT NULL,
        expires_at CHAR(27) CHARACTER SET ascii NOT NULL,
        decided_by VARCHAR(255) NULL,
        decided_at CHAR(27) CHARACTER SET ascii NULL,
        decision_reason TEXT NULL,
        grant_name VARCHAR(128) NULL,
        requester_issuer VARCHAR(512) NULL,
        requester_sub VARCHAR(255) NULL,
        INDEX access_requests_created (created_at),
        INDEX access_requests_requester (requester, created_at),
        INDEX access_requests_person (requester_sub, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS aliases (
        issuer VARCHAR(255) NOT NULL,
        sub VARCHAR(255) NOT NULL,
        name VARCHAR(255) NOT NULL,
        first_seen CHAR(27) CHARACTER SET ascii NOT NULL,
        PRIMARY KEY (issuer, sub, name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)

_V2 = (
    """CREATE TABLE IF NOT EXISTS reviews (
        id VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        digest CHAR(64) CHARACTER SET ascii NOT NULL,
        author VARCHAR(255) NOT NULL,
        author_issuer VARCHAR(512) NOT NULL,
        author_sub VARCHAR(255) NOT NULL,
        target VARCHAR(128) NOT NULL,
        grant_name VARCHAR(128) NOT NULL,
        transaction_ TINYINT NOT NULL,
        statements MEDIUMTEXT NOT NULL,
        reason TEXT NULL,
        dry_run MEDIUMTEXT NOT NULL,
        reviewers TEXT NOT NULL,
        min_approvals INT NOT NULL,
        state VARCHAR(16) NOT NULL,
        created_at CHAR(27) CHARACTER SET ascii NOT NULL,
        expires_at CHAR(27) CHARACTER SET ascii NOT NULL,
        executed_at CHAR(27) CHARACTER SET ascii NULL,
        result MEDIUMTEXT NULL,
        INDEX reviews_created (created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS review_verdicts (
        review_id VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        issuer VARCHAR(255) NOT NULL,
        sub VARCHAR(255) NOT NULL,
        name VARCHAR(255) NOT NULL,
        verdict VARCHAR(8) NOT NULL,
        comment TEXT NULL,
        at CHAR(27) CHARACTER SET ascii NOT NULL,
        seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT UNIQUE,
        PRIMARY KEY (review_id, issuer, sub)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)

_V3 = (
    """CREATE TABLE IF NOT EXISTS console_sessions (
        id_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
        sealed BLOB NOT NULL,
        expires_at DOUBLE NOT NULL,
        INDEX console_sessions_expires (expires_at)
    ) ENGINE=InnoDB""",
)

MIGRATIONS: tuple[Migration, ...] = (
    (1, "revision, managed policy documents, access requests, aliases", _V1),
    (2, "statement reviews and their verdicts", _V2),
    (3, "web console sessions", _V3),
)
LATEST = MIGRATIONS[-1][0]


SCHEMA = Migrations("state", VERSION_TABLE, MIGRATIONS, LOCK_TIMEOUT)


def migrate(cursor: Cursor, database: str) -> list[int]:
    """Apply the migrations this database lacks, under the schema lock; return the versions applied now.

    ``StateUnavailable`` when the lock is not had in time or the database is newer than this gateway.
    """
    try:
        return SCHEMA.migrate(cursor, database)
    except (SchemaTooNew, SchemaLocked) as exc:
        raise StateUnavailable(str(exc)) from None
