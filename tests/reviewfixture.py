"""Statement review test set-up (issue 16): a database of its own with a ledger, the review users and policy."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import ScratchDatabase, root_connection, root_query, run

from gateway.db.provision import drop, provision

USERS: dict[str, dict[str, Any]] = {
    "ann": {"email": "ann@example.com", "groups": ["engineers", "reviewers"]},
    "ann-laptop": {"email": "ann@example.com", "groups": ["reviewers"]},  # another sub, the same name
    "rex": {"email": "rex@example.com", "groups": ["reviewers"]},
    "rae": {"email": "rae@example.com", "groups": ["reviewers"]},
    "olga": {"email": "olga@example.com", "groups": ["ops"]},
    "bo": {"email": "bo@example.com", "groups": ["bulk"]},
    "audra": {"email": "audra@example.com", "groups": []},
}
LEDGER_ROWS = 10


class Clock:
    """The gateway's injected clock: real time plus a shift a test may add to."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


POLICY = """\
version: 1
roles:
  auditor: ["user:audra@example.com"]
grants:
  - name: eng-write
    subjects: ["group:engineers"]
    target: shop
    access: write
    db_user: {writer}
    tables: {{allow: ["{db}.*"]}}
    statement_timeout: 5s
    review: {{writes: true, reviewers: ["group:reviewers"], min_approvals: 2, valid_for: 1h}}
  - name: ops-ddl
    subjects: ["group:ops"]
    target: shop
    access: ddl
    db_user: {ddl}
    tables: {{allow: ["{db}.*"]}}
    review: {{ddl: true, writes: true, reviewers: ["group:reviewers"], valid_for: 10m}}
  - name: bulk-write
    subjects: ["group:bulk"]
    target: shop
    access: write
    db_user: {writer}
    tables: {{allow: ["{db}.*"]}}
    review: {{writes: true, reviewers: ["group:reviewers"], tables: ["{db}.ledger"], min_rows: 2}}
"""


def write_review_policy(directory: Path, db: ScratchDatabase) -> None:
    """Replace the test policy with the review policy for ``db``."""
    accounts = {level: account.user for level, account in db.accounts.items()}
    (directory / "policy.yaml").write_text(POLICY.format(db=db.name, **accounts), encoding="utf-8")


def ledger(db: ScratchDatabase) -> dict[int, int]:
    """The ledger as MariaDB has it (read as root, not through the gateway)."""
    rows = root_query(f"SELECT id, amount FROM `{db.name}`.ledger ORDER BY id")
    return {int(i): int(a) for i, a in rows}


@contextlib.contextmanager
def review_database() -> Iterator[ScratchDatabase]:
    """A database with its three accounts (each its level on the whole database) and a ledger of 10 rows."""
    name, prefix = f"gwtest_{int(datetime.now(UTC).timestamp())}_{secrets.token_hex(3)}", f"gwr{secrets.token_hex(4)}"

    async def setup() -> ScratchDatabase:
        conn = await root_connection()
        try:
            accounts = await provision(conn, name, prefix)
            async with conn.cursor() as cur:
                await cur.execute(f"CREATE TABLE `{name}`.ledger (id INT PRIMARY KEY, amount INT NOT NULL)")
                rows = ", ".join(f"({i}, {i * 100})" for i in range(1, LEDGER_ROWS + 1))
                await cur.execute(f"INSERT INTO `{name}`.ledger VALUES {rows}")
            return ScratchDatabase(name, prefix, accounts)
        finally:
            conn.close()

    async def teardown() -> None:
        conn = await root_connection()
        try:
            await drop(conn, name, prefix)
        finally:
            conn.close()

    db = run(setup())
    try:
        yield db
    finally:
        run(teardown())
