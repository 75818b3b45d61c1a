"""Statement review test set-up (issue 16): a database of its own with a ledger, the review users and policy.

``env`` (module scope) serves a gateway with the review policy on it; the helpers
ask, decide, execute and read the audit log the way the tests do.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    RunningGateway,
    ScratchDatabase,
    gateway_settings,
    root_connection,
    root_query,
    run,
    start_gateway,
    stop_gateway,
)
from oidcfixture import OidcProvider, running_provider

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


@dataclass
class Env:
    """The review gateway, its database, provider and clock."""

    gateway: RunningGateway
    db: ScratchDatabase
    idp: OidcProvider
    clock: Clock

    def client(self, user: str) -> httpx.Client:
        """A client with a fresh token of ``user``."""
        return self.gateway.client(user)

    def amounts(self) -> dict[int, int]:
        """The ledger as MariaDB has it (read as root, not through the gateway)."""
        return ledger(self.db)

    def reload_policy(self) -> None:
        """Make the gateway read its policy files now (rather than waiting for its watcher)."""
        app: Any = self.gateway.server.config.app  # uvicorn types it as any ASGI app; it is create_app's FastAPI
        app.state.services.policies.load()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A database of its own (accounts with their level on it), a provider with the review users, a gateway."""
    clock = Clock()
    with review_database() as db, running_provider(users=USERS) as idp:
        tmp = tmp_path_factory.mktemp("reviews")
        settings = gateway_settings(tmp, idp, db, env_prefix="GWREVIEW")
        write_review_policy(tmp / "policies", db)
        gateway = start_gateway(settings, idp, db, clock=clock)
        try:
            yield Env(gateway, db, idp, clock)
        finally:
            stop_gateway(gateway)


def ask(env: Env, sql: str, params: list[Any] | None = None, user: str = "ann") -> dict[str, Any]:
    """Send ``sql`` as ``user`` and expect it held for review (202 with a Location); return the reply."""
    with env.client(user) as http:
        reply = http.post(
            "/v1/query", json={"target": "shop", "sql": sql, "params": params or [], "reason": "ticket 42"}
        )
    assert reply.status_code == 202, reply.text
    assert reply.headers["location"] == f"/v1/reviews/{reply.json()['review']['id']}"
    body: dict[str, Any] = reply.json()
    return body


def verdict(env: Env, user: str, review: str, action: str = "approve") -> httpx.Response:
    """``user`` approves (or rejects) ``review`` with a comment."""
    with env.client(user) as http:
        return http.post(f"/v1/reviews/{review}/{action}", json={"comment": f"{user} checked the dry run"})


def approved(env: Env, sql: str, params: list[Any] | None = None) -> str:
    """Ann asks; rex and rae approve; the review id."""
    review = str(ask(env, sql, params)["review"]["id"])
    for reviewer in ("rex", "rae"):
        assert verdict(env, reviewer, review).status_code == 200
    return review


def execute(env: Env, review: str, user: str = "ann") -> httpx.Response:
    """``user`` executes ``review``."""
    with env.client(user) as http:
        return http.post(f"/v1/reviews/{review}/execute")


def problem(reply: httpx.Response) -> tuple[int, str]:
    """A problem reply's (status, code)."""
    return reply.status_code, str(reply.json()["code"])


def audit(env: Env, event: str) -> list[dict[str, Any]]:
    """The audit records of one kind, newest first, as the auditor reads them through the API."""
    env.gateway.audit_settled()
    with env.client("audra") as http:
        reply = http.get("/v1/audit", params={"event": event, "limit": 500})
    assert reply.status_code == 200, reply.text
    entries: list[dict[str, Any]] = reply.json()["entries"]
    return entries
