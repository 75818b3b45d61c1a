"""``audit.writer: process``: the audit store's work in a child process, with the same guarantees as the thread.

The child is a real process (spawned), the stores are the real SQLite file and
the real shared MariaDB store. End to end, replica ``two`` of
``test_audit_shared.py`` writes through a child process beside two thread writers.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from auditfixture import audit_db, audit_root_query
from processes import ended
from test_audit import NOW, outcome, record

from gateway.audit.caps import RecordCaps
from gateway.audit.log import AuditLog
from gateway.audit.process import ProcessStore
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.verify import verify
from gateway.errors import AuditUnavailable
from gateway.settings import AuditDatabaseSettings, AuditSettings, SecretSource

__all__ = ["audit_db"]

pytestmark = pytest.mark.anyio


def _assert_verifies(path: Path, count: int) -> None:
    """The SQLite log at ``path`` verifies and holds ``count`` entries."""
    reader = SQLiteAuditStore(path, readonly=True)
    try:
        result = verify(reader)
        assert result.ok, result.problems
        assert result.count == count
    finally:
        reader.close()


async def test_the_child_writes_a_verifiable_chain_and_ends_with_the_pipe(tmp_path: Path) -> None:
    """Concurrent appends through a child process: every record stored once, in order, chained; close ends it."""
    path = tmp_path / "audit.db"
    store = await asyncio.to_thread(ProcessStore, AuditSettings(path=path))
    child = store.pid
    assert child is not None
    assert child != os.getpid()
    log = AuditLog(store)
    try:
        entries = await asyncio.gather(*(log.append(record(i)) for i in range(50)))
        assert sorted(e["seq"] for e in entries) == list(range(1, 51))
        assert {e["request_id"] for e in entries} == {f"req-{i}" for i in range(50)}
        last = await log.append(outcome(50))
        assert last["seq"] == 51
    finally:
        await log.close()
    assert ended(child)
    _assert_verifies(path, 51)


async def test_a_killed_child_fails_no_later_batch_the_next_starts_anew(tmp_path: Path) -> None:
    """SIGKILL to the child: the next batch starts a new one, which continues the chain from the store's head."""
    path = tmp_path / "audit.db"
    store = await asyncio.to_thread(ProcessStore, AuditSettings(path=path))
    log = AuditLog(store)
    try:
        await log.append(record(1))
        first = store.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert ended(first)
        entry = await log.append(record(2))
        assert entry["seq"] == 2  # the new child read the head the dead one committed
        assert store.starts == 2
        assert store.pid not in {None, first}
    finally:
        await log.close()
    _assert_verifies(path, 2)


async def test_a_store_that_cannot_open_stops_the_start(tmp_path: Path) -> None:
    """The child cannot log in to the shared store: the constructor raises the store's own reason."""
    os.environ["GWTEST_AUDIT_WRONG"] = "not-the-password"
    try:
        settings = AuditSettings(
            store="mariadb",
            mariadb=AuditDatabaseSettings(
                host="127.0.0.1",
                database="gwaudit_nowhere",
                user="gw_no_such_account",
                secret=SecretSource(env="GWTEST_AUDIT_WRONG"),
            ),
        )
        with pytest.raises(AuditUnavailable, match=r"Access denied|cannot create or migrate"):
            await asyncio.to_thread(ProcessStore, settings)
    finally:
        os.environ.pop("GWTEST_AUDIT_WRONG", None)
    del tmp_path


async def test_the_stores_failure_fails_the_batch_and_the_store_comes_back(audit_db: AuditDatabaseSettings) -> None:
    """The shared store locked out mid-run: the awaited record fails (AuditUnavailable); unlocked, appends work."""
    settings = AuditSettings(store="mariadb", mariadb=audit_db, replica_id="proc")
    store = await asyncio.to_thread(ProcessStore, settings)
    log = AuditLog(store, timeout=30)
    try:
        await log.append(record(1))
        audit_root_query(f"ALTER USER '{audit_db.user}'@'%' ACCOUNT LOCK")
        for (session,) in audit_root_query(
            "SELECT id FROM information_schema.processlist WHERE user = %s", (audit_db.user,)
        ):
            audit_root_query(f"KILL {int(session)}")
        try:
            with pytest.raises(AuditUnavailable):
                await log.append(record(2))
            assert store.starts == 1  # the child answered with the store's error; it was not replaced
            assert log.last_error is not None
        finally:
            audit_root_query(f"ALTER USER '{audit_db.user}'@'%' ACCOUNT UNLOCK")
        entry = await log.append(record(3))
        assert entry["request_id"] == "req-3"
    finally:
        await log.close()


async def test_the_child_caps_and_redacts_exactly_as_the_log_does(tmp_path: Path) -> None:
    """The same records through the thread writer and through the child: byte-identical entries (hashes too)."""
    caps = RecordCaps(text=100)
    records = [
        record(1, time=NOW, grant="g" * 500, statement="SELECT name FROM users WHERE id = 7 AND note = 'secret'"),
        outcome(1, time=NOW, error="e" * 300),
    ]
    local = AuditLog(SQLiteAuditStore(tmp_path / "thread.db"), redact_literals=True, caps=caps)
    try:
        expected = [await local.append(r) for r in records]
    finally:
        await local.close()
    store = await asyncio.to_thread(
        ProcessStore, AuditSettings(path=tmp_path / "child.db", redact_literals=True), caps=caps
    )
    remote = AuditLog(store, redact_literals=True, caps=caps)
    try:
        stored = [await remote.append(r) for r in records]
    finally:
        await remote.close()
    assert stored == expected
    assert "'secret'" not in str(stored[0]["statement"])  # redacted
    assert str(stored[0]["grant"]).endswith("…[truncated, 500 chars]")  # capped


async def test_a_record_that_cannot_be_stored_fails_alone(tmp_path: Path) -> None:
    """A record that is not JSON fails its own caller (AuditUnavailable); the others are stored."""
    store = await asyncio.to_thread(ProcessStore, AuditSettings(path=tmp_path / "audit.db"))
    log = AuditLog(store)
    try:
        bad, good = await asyncio.gather(
            log.append(record(1, grant=object())), log.append(record(2)), return_exceptions=True
        )
        assert isinstance(bad, AuditUnavailable)
        assert "cannot be stored" in bad.detail
        assert not isinstance(good, BaseException)
        assert good["request_id"] == "req-2"
        assert log.stats.failed == 1
    finally:
        await log.close()
