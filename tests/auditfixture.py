"""A scratch database and account for the shared (MariaDB) audit store.

``audit_db`` makes ``gwaudit_<time>_<rand>`` and an account that may use only
that database (its password in an env var, as the config requires), and
drops both after the test. Leftovers of interrupted runs older than an hour
are dropped first. The gateway creates the schema itself on first open.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from conftest import DB_HOST, DB_PORT, LEFTOVER_AGE

from gateway.settings import AuditDatabaseSettings, SecretSource

__all__ = ["audit_db", "audit_root_query", "module_audit_db", "scratch_audit_db"]


def _root() -> Any:
    return pymysql.connect(
        host=DB_HOST,
        port=DB_PORT,
        user=os.environ.get("GATEWAY_TEST_DB_ROOT_USER", "root"),
        password=os.environ.get("GATEWAY_TEST_DB_ROOT_PASSWORD", ""),
        autocommit=True,
    )


def audit_root_query(sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement as the administrator and return its rows (to inspect or tamper with the store)."""
    conn = _root()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def _drop(cur: Any, database: str, account: str) -> None:
    cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    cur.execute(f"DROP USER IF EXISTS '{account}'@'%'")


def _drop_leftovers(cur: Any) -> None:
    cur.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'gwaudit\\_%'")
    for (name,) in cur.fetchall():
        parts = name.split("_")
        if len(parts) == 3 and parts[1].isdigit() and time.time() - int(parts[1]) > LEFTOVER_AGE:
            _drop(cur, name, f"gwa{parts[1][-4:]}{parts[2]}")


@contextlib.contextmanager
def scratch_audit_db() -> Iterator[AuditDatabaseSettings]:
    """Make a fresh, empty shared audit store (database and account dropped after the block)."""
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    database, account = f"gwaudit_{stamp}_{rand}", f"gwa{stamp[-4:]}{rand}"
    password = secrets.token_urlsafe(18)
    env_name = f"GWTEST_AUDIT_PASSWORD_{rand.upper()}"
    os.environ[env_name] = password
    conn = _root()
    try:
        with conn.cursor() as cur:
            _drop_leftovers(cur)
            cur.execute(f"CREATE USER '{account}'@'%%' IDENTIFIED BY %s", (password,))
            # The account may create and use only its own database.
            cur.execute(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{account}'@'%'")
        yield AuditDatabaseSettings(
            host=DB_HOST, port=DB_PORT, database=database, user=account, secret=SecretSource(env=env_name)
        )
    finally:
        with conn.cursor() as cur:
            _drop(cur, database, account)
        conn.close()
        os.environ.pop(env_name, None)


@pytest.fixture
def audit_db() -> Iterator[AuditDatabaseSettings]:
    """Settings for a fresh, empty shared audit store (database and account dropped after)."""
    with scratch_audit_db() as settings:
        yield settings


@pytest.fixture(scope="module")
def module_audit_db() -> Iterator[AuditDatabaseSettings]:
    """A shared audit store for a module's long-lived gateways (e.g. two replicas)."""
    with scratch_audit_db() as settings:
        yield settings
