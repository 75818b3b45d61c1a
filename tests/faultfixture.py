"""Fixtures of the fault suite: a private MariaDB, gateway settings for it, audit counts, the report.

A pytest plugin (``pytest_plugins`` in ``conftest.py``), so its fixtures and
its terminal summary exist once per session whichever modules run.

- ``private_db`` (session): a ``mariadbd`` of the suite's own (own datadir and
  port, ``tests/privatemariadb.py``) seeded with the demo schema and
  least-privilege accounts by ``gateway.db.provision``; tests stop, kill and
  restart it. The shared server on 3306 is never stopped or reconfigured.
- ``fault_settings``: gateway settings whose target ``shop`` is that server,
  directly or through a ``FaultProxy``.
- ``audit_by_request``: the audit store's records grouped by request id, to
  count them against the replies.
- ``fault_report``: what each test measured (requests, replies by code,
  records lost), printed in the terminal summary and kept in
  ``.faults-report.json`` at the repository root.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncmy
import pytest
from conftest import ScratchDatabase, gateway_settings
from faultload import Reply
from oidcfixture import OidcProvider
from privatemariadb import MariaDBServer, MariaDBStartError, remove_leftovers, running_mariadb

from gateway.db.provision import provision
from gateway.settings import Settings

__all__ = ["fault_report", "private_db"]

REPORT_PATH = Path(__file__).resolve().parent.parent / ".faults-report.json"
DATABASE = "gwfault"
PREFIX = "gwf"
_REPORT_KEY = pytest.StashKey[list[dict[str, Any]]]()
Records = dict[str, list[tuple[str, str | None, str | None]]]  # request id -> (event, decision, code)


@dataclass(frozen=True)
class PrivateDatabase:
    """The private server and the demo database on it (``env``: the accounts' passwords for a subprocess)."""

    server: MariaDBServer
    db: ScratchDatabase

    @property
    def env(self) -> dict[str, str]:
        """Env var names and passwords of the accounts (for a subprocess gateway)."""
        return {_env_name(level): a.password for level, a in self.db.accounts.items()}

    def gateway_threads(self) -> int:
        """Connections the gateway's accounts hold on the server now (from its processlist)."""
        users = [a.user for a in self.db.accounts.values()]
        marks = ", ".join(["%s"] * len(users))
        rows = self.server.query(f"SELECT COUNT(*) FROM information_schema.processlist WHERE user IN ({marks})", users)
        return int(rows[0][0])


def _env_name(level: str) -> str:
    # Not the GWTEST_* names conftest uses: those belong to the shared server's accounts
    # (fault_settings passes the same prefix to gateway_settings).
    return f"GWFAULT_{level.upper()}_PASSWORD"


async def _seed(server: MariaDBServer) -> ScratchDatabase:
    root = await asyncmy.connect(unix_socket=str(server.socket), user="root", password="", autocommit=True)
    try:
        accounts = await provision(root, DATABASE, PREFIX)
    finally:
        root.close()
    return ScratchDatabase(DATABASE, PREFIX, accounts)


@pytest.fixture(scope="session")
def private_db() -> Iterator[PrivateDatabase]:
    """A private MariaDB with the demo database, for the whole session (tests may restart it)."""
    remove_leftovers("gwfault-")
    try:
        with running_mariadb("gwfault-", args=("--max-connections=300", "--innodb-buffer-pool-size=32M")) as server:
            db = asyncio.run(_seed(server))
            yield PrivateDatabase(server, db)
    except MariaDBStartError as exc:
        pytest.fail(str(exc), pytrace=False)


def fault_settings(
    tmp: Path,
    idp: OidcProvider,
    private: PrivateDatabase,
    *,
    port: int | None = None,
    pool: dict[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for a gateway on ``private`` (``port``: a proxy's port instead of the server's)."""
    return gateway_settings(
        tmp,
        idp,
        private.db,
        host="127.0.0.1",
        port=port or private.server.port,
        pool={"max_size": 4, "acquire_timeout": 3, "connect_timeout": 2, **(pool or {})},
        env_prefix="GWFAULT",  # not conftest's GWTEST_*: those belong to the shared server's accounts
        **overrides,
    )


def audit_by_request(path: Path) -> Records:
    """The SQLite audit store's records by the caller's request id: ``(event, decision, code)`` in seq order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT json_extract(CAST(record AS TEXT), '$.client_request_id'), event, decision, code"
            " FROM audit ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    records: Records = defaultdict(list)
    for request_id, event, decision, code in rows:
        records[request_id].append((event, decision, code))
    return records


DENIED_CODES = frozenset({"forbidden", "revoked", "statement_rejected", "unknown_target", "invalid_request"})


def records_lost(path: Path, replies: Sequence[Reply]) -> int:
    """Count the audit records missing for answered requests in the SQLite store at ``path``."""
    return count_lost(audit_by_request(path), replies)


def count_lost(records: Records, replies: Sequence[Reply]) -> int:
    """Count the audit records missing for answered requests.

    Each needs a ``decision`` (``auth`` for a 401), and each one its decision
    record allowed an ``outcome`` too (whatever then happened: ok, timeout,
    unavailable); a request refused before the decision was made (a denial,
    or the view catalogue unreachable: ``pool_exhausted``,
    ``database_unavailable``) has no outcome. A request refused with
    ``audit_unavailable`` has no records: none is expected.
    """
    lost = 0
    for reply in replies:
        if reply.status is None or reply.code == "audit_unavailable":
            continue
        found = records.get(reply.request_id, [])
        events = {event for event, _, _ in found}
        if reply.code == "unauthenticated":
            lost += "auth" not in events
            continue
        decisions = [decision for event, decision, _ in found if event == "decision"]
        lost += not decisions
        allowed = decisions[0] == "allow" if decisions else reply.code not in DENIED_CODES
        if allowed:
            lost += "outcome" not in events
    return lost


@dataclass
class Measure:
    """What one fault test measured; printed as one line in the terminal summary."""

    test: str
    requests: int = 0
    replies: dict[str, int] = field(default_factory=dict)
    records_lost: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """``test: N requests; 200 ok=..., 503 ...; records lost 0; notes``."""
        replies = ", ".join(f"{k}={v}" for k, v in self.replies.items()) or "-"
        lost = "" if self.records_lost is None else f"; records lost {self.records_lost}"
        notes = "".join(f"; {k} {v}" for k, v in self.notes.items())
        return f"{self.test}: {self.requests} requests; {replies}{lost}{notes}"


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Iterator[Measure]:
    """A ``Measure`` for the test to fill; kept for the terminal summary and ``.faults-report.json``."""
    measure = Measure(request.node.name)
    yield measure
    entries = request.config.stash.setdefault(_REPORT_KEY, [])
    entries.append({"test": measure.test, "line": measure.line(), **measure.__dict__})
    REPORT_PATH.write_text(json.dumps(entries, indent=1, default=str) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """After the run: the fault tests' measurements, one line per test."""
    entries = terminalreporter.config.stash.get(_REPORT_KEY, [])
    terminal = terminalreporter
    if entries:
        terminal.section("fault suite measurements")
        for entry in entries:
            terminal.write_line(entry["line"])
