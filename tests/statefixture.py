"""A scratch database and account for the shared state store (``state.store: mariadb``).

``scratch_state_db`` makes ``gwstate_<time>_<rand>`` and an account that may
use only that database (its password in an env var, as the config requires),
and drops both afterwards; leftovers of interrupted runs older than an hour
are dropped first. The gateway creates the schema itself on first open.
``lock_account`` / ``unlock_account`` take the store away from the gateway
(new logins refused, open sessions killed) and give it back: the store down.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from auditfixture import audit_root_query
from conftest import DB_HOST, DB_PORT, LEFTOVER_AGE

from gateway.settings import SecretSource, StateDatabaseSettings

__all__ = ["lock_account", "scratch_state_db", "state_db", "state_root_query", "unlock_account"]

state_root_query = audit_root_query


def _drop(database: str, account: str) -> None:
    audit_root_query(f"DROP DATABASE IF EXISTS `{database}`")
    audit_root_query(f"DROP USER IF EXISTS '{account}'@'%'")


def _drop_leftovers() -> None:
    rows = audit_root_query("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'gwstate\\_%'")
    for (name,) in rows:
        parts = name.split("_")
        if len(parts) == 3 and parts[1].isdigit() and time.time() - int(parts[1]) > LEFTOVER_AGE:
            _drop(name, f"gws{parts[1][-4:]}{parts[2]}")


@contextlib.contextmanager
def scratch_state_db() -> Iterator[StateDatabaseSettings]:
    """Make a fresh, empty state store (database and account dropped after the block)."""
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    database, account = f"gwstate_{stamp}_{rand}", f"gws{stamp[-4:]}{rand}"
    password = secrets.token_urlsafe(18)
    env_name = f"GWTEST_STATE_PASSWORD_{rand.upper()}"
    os.environ[env_name] = password
    try:
        _drop_leftovers()
        audit_root_query(f"CREATE USER '{account}'@'%%' IDENTIFIED BY %s", (password,))
        # The account may create and use only its own database.
        audit_root_query(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{account}'@'%'")
        yield StateDatabaseSettings(
            host=DB_HOST, port=DB_PORT, database=database, user=account, secret=SecretSource(env=env_name)
        )
    finally:
        _drop(database, account)
        os.environ.pop(env_name, None)


@pytest.fixture
def state_db() -> Iterator[StateDatabaseSettings]:
    """Settings for a fresh, empty state store (database and account dropped after)."""
    with scratch_state_db() as settings:
        yield settings


def lock_account(settings: StateDatabaseSettings) -> None:
    """The store down for the gateway: its account locked and every session of it killed."""
    audit_root_query(f"ALTER USER '{settings.user}'@'%' ACCOUNT LOCK")
    rows: list[Any] = audit_root_query(
        "SELECT id FROM information_schema.processlist WHERE user = %s", (settings.user,)
    )
    for (session,) in rows:
        with contextlib.suppress(Exception):  # a session may end by itself meanwhile
            audit_root_query(f"KILL {int(session)}")


def unlock_account(settings: StateDatabaseSettings) -> None:
    """The store back."""
    audit_root_query(f"ALTER USER '{settings.user}'@'%' ACCOUNT UNLOCK")
