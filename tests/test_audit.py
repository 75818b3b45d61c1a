from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from gateway.audit.fake import MemoryAuditStore
from gateway.audit.format import redact_literals
from gateway.audit.log import AuditLog
from gateway.audit.records import DecisionRecord, OutcomeRecord, Who
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import GENESIS_HASH, canonical, chain_hash
from gateway.audit.verify import VerifyResult, verify
from gateway.errors import AuditUnavailable

NOW = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Path of a fresh audit database file."""
    return tmp_path / "audit.db"


def clock() -> datetime:
    """Return a fixed moment with microseconds."""
    return NOW


def who(i: int, user: str = "alice") -> Who:
    """The shared fields of request ``i`` by ``user``."""
    return Who(request_id=f"req-{i}", user=user, user_verified=True, groups=("eng",))


def record(i: int, user: str = "alice", **extra: Any) -> DecisionRecord:
    """Build a decision record for request ``i``."""
    fields: dict[str, Any] = {
        "target": "main",
        "db_user": "reader",
        "statement": "SELECT name FROM users WHERE id = 7",
        "transaction": False,
        "decision": "allow",
        "code": "ok",
        "grant": "eng-read",
        **extra,
    }
    return DecisionRecord(who=who(i, user), **fields)


def outcome(i: int, **extra: Any) -> OutcomeRecord:
    """Build an outcome record for request ``i``."""
    return OutcomeRecord(who=who(i), **{"target": "main", "duration_ms": 1.5, "code": "ok", **extra})


def stored(i: int, **extra: Any) -> dict[str, object]:
    """The mapping the log stores for decision ``i`` (for writing to a store directly)."""
    return record(i, **extra).fields()


def filled_store(path: Path, n: int = 10) -> Path:
    """Write ``n`` chained entries to a SQLite audit file and close it."""
    store = SQLiteAuditStore(path)
    store.append_batch([stored(i) for i in range(1, n + 1)])
    store.close()
    return path


def rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Run ``sql`` on the file through a separate connection, as an attacker would."""
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(sql, params).fetchall()


def check(path: Path, **kwargs: Any) -> VerifyResult:
    """Verify the file through a read-only store."""
    store = SQLiteAuditStore(path, readonly=True)
    try:
        return verify(store, **kwargs)
    finally:
        store.close()


DISK_GONE = sqlite3.OperationalError("disk I/O error")


def gated() -> tuple[MemoryAuditStore, threading.Event, threading.Event]:
    """The in-memory store whose writes wait until ``gate`` opens; ``entered`` is set once one waits."""
    entered, gate = threading.Event(), threading.Event()

    def wait(records: Sequence[Mapping[str, object]]) -> None:
        entered.set()
        gate.wait(10)

    return MemoryAuditStore(before_write=wait), entered, gate


@pytest.mark.anyio
async def test_append_returns_committed_entry_with_gapless_chain(path: Path) -> None:
    """Each append returns its chained entry only after the row is committed to the file."""
    log = AuditLog(SQLiteAuditStore(path), clock=clock)
    prev = GENESIS_HASH
    for i in range(1, 6):
        entry = await log.append(record(i))
        assert (entry["seq"], entry["prev_hash"]) == (i, prev)
        body = canonical({k: v for k, v in entry.items() if k not in ("prev_hash", "hash")})
        assert entry["hash"] == chain_hash(prev, body)
        assert entry["time"] == "2025-01-02T03:04:05.000006Z"
        # A second, independent connection already sees it: it is committed.
        assert rows(path, "SELECT hash FROM audit WHERE seq = ?", (i,)) == [(entry["hash"],)]
        prev = entry["hash"]
    await log.close()


def test_store_is_durable_wal_with_full_sync(path: Path) -> None:
    """The embedded store runs in WAL mode with synchronous=FULL (fsync on every commit)."""
    store = SQLiteAuditStore(path)
    assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)
    store.close()


@pytest.mark.anyio
async def test_concurrent_appends_are_all_stored_and_group_committed(path: Path) -> None:
    """500 concurrent appends get distinct gap-free seqs, a valid chain and fewer commits."""
    store = SQLiteAuditStore(path)
    log = AuditLog(store)
    entries = await asyncio.gather(*(log.append(record(i)) for i in range(500)))
    assert sorted(e["seq"] for e in entries) == list(range(1, 501))
    assert [e["request_id"] for e in entries] == [f"req-{i}" for i in range(500)]
    assert store.commits < 500
    result = verify(store)
    assert (result.ok, result.count, result.head_seq) == (True, 500, 500)
    await log.close()


@pytest.mark.anyio
async def test_close_flushes_pending_appends(path: Path) -> None:
    """close() commits every append already queued before stopping the writer."""
    log = AuditLog(SQLiteAuditStore(path))
    tasks = [asyncio.create_task(log.append(record(i))) for i in range(100)]
    await asyncio.sleep(0)
    await log.close()
    assert len(await asyncio.gather(*tasks)) == 100
    assert check(path).count == 100
    with pytest.raises(AuditUnavailable):
        await log.append(record(101))


@pytest.mark.anyio
async def test_reopen_resumes_the_chain(path: Path) -> None:
    """A log opened on an existing file continues its seq and hash chain."""
    log = AuditLog(SQLiteAuditStore(path))
    last = [await log.append(record(i)) for i in range(3)][-1]
    await log.close()
    log = AuditLog(SQLiteAuditStore(path))
    entry = await log.append(record(3))
    assert (entry["seq"], entry["prev_hash"]) == (4, last["hash"])
    await log.close()
    assert check(path).ok


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 150])
def test_a_group_of_any_size_is_one_transaction(path: Path, size: int) -> None:
    """A group goes in as multi-row INSERTs of up to 64 rows in one transaction: gapless, verified.

    The first group reads the head in a transaction; the second goes on from the remembered head (up to
    64 rows: one INSERT in autocommit mode).
    """
    store = SQLiteAuditStore(path)
    try:
        fields = [record(i).fields() | {"time": "2026-12-02T10:00:00.000000Z"} for i in range(2 * size)]
        entries = store.append_batch(fields[:size]) + store.append_batch(fields[size:])
        assert store.commits == 2
    finally:
        store.close()
    assert [e["seq"] for e in entries] == list(range(1, 2 * size + 1))
    stored = rows(path, "SELECT seq, request_id, hash FROM audit ORDER BY seq")
    assert stored == [(e["seq"], e["request_id"], e["hash"]) for e in entries]
    assert check(path).ok


def test_two_stores_on_one_file_keep_one_chain(path: Path) -> None:
    """A store goes on from the head of its own last commit; when another process appended since, it reads it.

    (``gateway policy import`` appends to the gateway's file while the gateway runs.)
    """
    gateway, cli = SQLiteAuditStore(path), SQLiteAuditStore(path)
    try:
        for i in range(3):
            for store in (gateway, gateway, cli):
                (entry,) = store.append_batch([record(i).fields() | {"time": "2026-12-02T10:00:00.000000Z"}])
        assert entry["seq"] == 9
        assert gateway.commits == 6
        assert cli.commits == 3
    finally:
        gateway.close()
        cli.close()
    assert [seq for (seq,) in rows(path, "SELECT seq FROM audit ORDER BY seq")] == list(range(1, 10))
    assert check(path).ok


def test_verify_passes_on_a_clean_log_and_reports_progress(path: Path) -> None:
    """A clean log verifies; progress is reported per batch and at the end."""
    filled_store(path, 25)
    seen: list[int] = []
    result = check(path, progress=seen.append, batch=10)
    last = rows(path, "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")[0]
    assert (result.ok, result.count, result.problems) == (True, 25, [])
    assert (result.head_seq, result.head_hash) == last
    assert seen == [10, 20, 25]
    assert check(path, expected_head=last).ok


def test_verify_passes_on_an_empty_log(path: Path) -> None:
    """An empty log is valid and its head is the genesis hash."""
    SQLiteAuditStore(path).close()
    result = check(path)
    assert (result.ok, result.count, result.head_seq, result.head_hash) == (
        True,
        0,
        0,
        GENESIS_HASH,
    )


def test_verify_detects_an_edited_record(path: Path) -> None:
    """Changing a field in one stored record is reported at that seq."""
    filled_store(path)
    blob = orjson.loads(rows(path, "SELECT record FROM audit WHERE seq = 5")[0][0])
    blob["user"] = "mallory"
    rows(path, "UPDATE audit SET record = ? WHERE seq = 5", (orjson.dumps(blob),))
    result = check(path)
    assert not result.ok
    assert result.problems == ["seq 5: hash does not match the record (record edited)"]


def test_verify_detects_an_edited_and_rehashed_record(path: Path) -> None:
    """Re-computing the edited record's hash breaks the link from the next seq (and the copied column differs)."""
    filled_store(path)
    blob = orjson.loads(rows(path, "SELECT record FROM audit WHERE seq = 5")[0][0])
    blob["decision"] = "deny"
    prev = rows(path, "SELECT prev_hash FROM audit WHERE seq = 5")[0][0]
    digest = chain_hash(prev, canonical(blob))
    rows(path, "UPDATE audit SET record = ?, hash = ? WHERE seq = 5", (canonical(blob), digest))
    problems = check(path).problems
    assert problems == [
        "seq 5: stored column(s) decision differ from the hashed record (row edited)",
        "seq 6: prev_hash does not link to seq 5 (inserted or replaced)",
    ]


def test_verify_detects_a_deleted_record(path: Path) -> None:
    """Deleting a middle row is reported as the missing seq."""
    filled_store(path)
    rows(path, "DELETE FROM audit WHERE seq = 5")
    problems = check(path).problems
    assert problems == ["seq 5: missing, next entry is seq 6 (deleted or reordered)"]


def test_verify_detects_a_missing_first_record(path: Path) -> None:
    """A log that does not start at seq 1 is reported."""
    filled_store(path)
    rows(path, "DELETE FROM audit WHERE seq = 1")
    problems = check(path).problems
    assert problems == ["seq 1: missing, next entry is seq 2 (deleted or reordered)"]


def test_verify_detects_reordered_records(path: Path) -> None:
    """Swapping the contents of two rows is reported at the swapped seqs."""
    filled_store(path)
    five, six = (rows(path, f"SELECT record, prev_hash, hash FROM audit WHERE seq = {s}")[0] for s in (5, 6))
    update = "UPDATE audit SET record = ?, prev_hash = ?, hash = ? WHERE seq = ?"
    rows(path, update, (*six, 5))
    rows(path, update, (*five, 6))
    assert check(path).problems == [
        "seq 5: missing, next entry is seq 6 (deleted or reordered)",
        "seq 5: out of order after seq 6 (reordered or inserted)",
    ]


def test_verify_detects_an_inserted_record(path: Path) -> None:
    """A forged row, correctly chained into the middle, breaks the seqs and links after it."""
    filled_store(path)
    rows(path, "UPDATE audit SET seq = -seq WHERE seq > 5")
    rows(path, "UPDATE audit SET seq = 1 - seq WHERE seq < 0")
    prev = rows(path, "SELECT hash FROM audit WHERE seq = 5")[0][0]
    forged = stored(99, user="mallory")
    body = canonical({**forged, "seq": 6})
    # A careful forger fills the plain columns too, so only the chain can give the row away.
    rows(
        path,
        "INSERT INTO audit (seq, request_id, event, user, target, decision, code, statement, record, prev_hash, hash)"
        " VALUES (6, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            *(forged[k] for k in ("request_id", "event", "user", "target", "decision", "code", "statement")),
            body,
            prev,
            chain_hash(prev, body),
        ),
    )
    result = check(path)
    assert result.count == 11
    assert result.problems[:2] == [
        "seq 6: out of order after seq 6 (reordered or inserted)",
        "seq 7: prev_hash does not link to seq 6 (inserted or replaced)",
    ]
    # The rows moved up to make room keep their hashed seq: their seq column gives them away too.
    assert result.problems[2:] == [
        f"seq {n}: stored column(s) seq differ from the hashed record (row edited)" for n in (8, 9, 10)
    ]


def test_verify_detects_a_forged_row_appended_with_a_bad_hash(path: Path) -> None:
    """A row appended outside the log without the chain key material fails its hash."""
    filled_store(path)
    body = canonical({**stored(11), "seq": 11})
    rows(
        path,
        "INSERT INTO audit (seq, record, prev_hash, hash) VALUES (11, ?, ?, ?)",
        (body, GENESIS_HASH, "0" * 64),
    )
    assert check(path).problems == ["seq 11: hash does not match the record (record edited)"]


def test_truncated_tail_is_found_only_against_the_shipped_head(path: Path) -> None:
    """Cutting the tail keeps a valid chain; the SIEM's last head exposes it."""
    filled_store(path)
    head = rows(path, "SELECT seq, hash FROM audit WHERE seq = 10")[0]
    rows(path, "DELETE FROM audit WHERE seq > 8")
    assert check(path).ok
    result = check(path, expected_head=head)
    assert not result.ok
    assert result.problems == [
        "seq 9-10: missing, the chain ends at seq 8 but the shipped head names seq 10 (tail truncated)"
    ]
    wrong = check(path, expected_head=(8, "f" * 64))
    assert wrong.problems == ["seq 8: hash differs from the shipped head (rewritten)"]


@pytest.mark.anyio
async def test_failing_store_refuses_then_recovers(path: Path) -> None:
    """A store write error raises AuditUnavailable; later appends work without a seq gap."""
    store = MemoryAuditStore()
    log = AuditLog(store)
    await log.append(record(1))
    store.failing = DISK_GONE
    with capture_logs() as logs, pytest.raises(AuditUnavailable) as caught:
        await log.append(record(2))
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    # record 1's audit_record event is emitted after its caller is answered, so it may land here.
    assert [e["event"] for e in logs if e["event"] != "audit_record"] == ["audit_write_failed"]
    store.failing = None
    assert (await log.append(record(3)))["seq"] == 2
    await log.close()
    assert verify(store).ok


@pytest.mark.anyio
async def test_locked_database_refuses_then_recovers(path: Path) -> None:
    """While another process holds the file's write lock, appends fail; then they succeed."""
    log = AuditLog(SQLiteAuditStore(path, busy_timeout=0.05))
    await log.append(record(1))
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(AuditUnavailable):
        await log.append(record(2))
    locker.execute("ROLLBACK")
    locker.close()
    assert (await log.append(record(3)))["seq"] == 2
    await log.close()
    assert check(path).ok


@pytest.mark.anyio
async def test_full_queue_refuses_instead_of_growing(path: Path) -> None:
    """With the writer busy and the queue at its bound, append fails at once."""
    store, entered, gate = gated()
    log = AuditLog(store, max_pending=1)
    first = asyncio.create_task(log.append(record(1)))
    await asyncio.to_thread(entered.wait, 10)
    second = asyncio.create_task(log.append(record(2)))
    await asyncio.sleep(0)
    with pytest.raises(AuditUnavailable, match="queue is full"):
        await log.append(record(3))
    gate.set()
    assert [e["seq"] for e in await asyncio.gather(first, second)] == [1, 2]
    await log.close()


@pytest.mark.anyio
async def test_slow_store_times_out_as_unavailable(path: Path) -> None:
    """An append the store does not commit within the timeout fails; the log carries on."""
    store, _, gate = gated()
    log = AuditLog(store, timeout=0.05)
    with pytest.raises(AuditUnavailable, match="in time"):
        await log.append(record(1))
    gate.set()
    assert (await log.append(record(2)))["seq"] == 2
    await log.close()
    assert verify(store).count == 2


@pytest.mark.anyio
async def test_invalid_records_are_refused_without_using_a_seq(path: Path) -> None:
    """Records without a request_id, with fields of no kind, non-JSON values or naive times are refused."""
    log = AuditLog(SQLiteAuditStore(path))
    with pytest.raises(ValueError, match="request_id"):
        await log.append(dataclasses.replace(record(1), who=Who(request_id="", user=None)))
    with pytest.raises(TypeError, match="seq"):
        record(1, seq=7)  # the chain fields are the log's: no record kind has them
    with pytest.raises(TypeError):
        await log.append(outcome(1, rows=object()))
    with pytest.raises(ValueError, match="timezone"):
        await log.append(record(1, time=datetime(2025, 1, 1)))  # noqa: DTZ001 - a naive datetime is the point of the test
    entry = await log.append(record(1, time=datetime(2025, 1, 1, 12, tzinfo=UTC)))
    assert (entry["seq"], entry["time"]) == (1, "2025-01-01T12:00:00.000000Z")
    await log.close()


@pytest.mark.anyio
async def test_a_record_that_cannot_be_stored_fails_alone_in_its_group(path: Path) -> None:
    """Records are prepared in the writer thread: a bad one fails its own caller, the group commits the rest."""
    log = AuditLog(SQLiteAuditStore(path))
    try:
        bad, good, naive = await asyncio.gather(
            log.append(outcome(1, rows=object())),
            log.append(record(2)),
            log.append(record(3, time=datetime(2025, 1, 1))),  # noqa: DTZ001 - a naive datetime is the point
            return_exceptions=True,
        )
        assert isinstance(bad, TypeError)
        assert isinstance(naive, ValueError)
        assert not isinstance(good, BaseException)
        assert (good["seq"], good["request_id"]) == (1, "req-2")
        assert log.stats.failed == 2
    finally:
        await log.close()
    store = SQLiteAuditStore(path, readonly=True)
    try:
        assert verify(store).count == 1
    finally:
        store.close()


@pytest.mark.anyio
async def test_redaction_replaces_literals_in_stored_statement(path: Path) -> None:
    """With redact_literals on, the stored and returned statement has no literals."""
    log = AuditLog(SQLiteAuditStore(path), redact_literals=True)
    entry = await log.append(record(1, statement="SELECT * FROM t1 WHERE pw = 'it''s' AND n = 42"))
    await log.close()
    assert entry["statement"] == "SELECT * FROM t1 WHERE pw = ? AND n = ?"
    assert b"it''s" not in rows(path, "SELECT record FROM audit")[0][0]


@pytest.mark.anyio
async def test_statement_is_kept_as_sent_without_redaction(path: Path) -> None:
    """With redact_literals off, the statement is stored exactly as sent."""
    log = AuditLog(SQLiteAuditStore(path))
    entry = await log.append(record(1, statement="SELECT 'x', 1"))
    await log.close()
    assert entry["statement"] == "SELECT 'x', 1"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 'a''b', \"c\\\"d\", 'e\\'f'", "SELECT ?, ?, ?"),
        (
            "SELECT `col1`, t2.x3 FROM t4 WHERE a IN (1, 2.5, .5, 1e-3, 0xFF)",
            "SELECT `col1`, t2.x3 FROM t4 WHERE a IN (?, ?, ?, ?, ?)",
        ),
        ("SELECT X'0F', N'naïve', b'101'", "SELECT ?, ?, ?"),
        ("SELECT `it's`, 'not ` ident' FROM t", "SELECT `it's`, ? FROM t"),
        ("SELECT 'unterminated secret 123", "SELECT ?"),
        ("SELECT 1abc FROM t LIMIT 10", "SELECT 1abc FROM t LIMIT ?"),
    ],
)
def test_redact_literals(sql: str, expected: str) -> None:
    """Strings (quotes, escapes, prefixes), numbers and unterminated strings become ``?``."""
    assert redact_literals(sql) == expected


@pytest.mark.anyio
async def test_committed_entries_are_emitted_as_log_events(path: Path) -> None:
    """Each committed entry becomes one ``audit_record`` event on the ``audit`` logger."""
    with capture_logs() as logs:
        log = AuditLog(SQLiteAuditStore(path), clock=clock)
        entries = [await log.append(record(i)) for i in range(3)]
        await log.close()
    assert len(logs) == 3
    for event, entry in zip(logs, entries, strict=True):
        assert event["event"] == "audit_record"
        assert event["logger"] == "audit"
        assert event["audit_event"] == "decision"
        assert (event["seq"], event["hash"], event["prev_hash"]) == (
            entry["seq"],
            entry["hash"],
            entry["prev_hash"],
        )
        assert event["request_id"] == entry["request_id"]
        assert event["time"] == "2025-01-02T03:04:05.000006Z"


@pytest.mark.anyio
async def test_verify_reads_while_the_log_writes(path: Path) -> None:
    """A read-only store verifies the file while the log keeps appending."""
    log = AuditLog(SQLiteAuditStore(path))
    await asyncio.gather(*(log.append(record(i)) for i in range(50)))
    reader = SQLiteAuditStore(path, readonly=True)
    writing = asyncio.gather(*(log.append(record(i)) for i in range(50, 100)))
    result = await asyncio.to_thread(verify, reader)
    await writing
    assert result.ok
    assert result.count >= 50
    assert verify(reader).count == 100
    reader.close()
    await log.close()


@pytest.mark.anyio
async def test_queued_outcomes_outlive_a_store_outage(path: Path) -> None:
    """A failed commit fails the awaited records at once but keeps retry records until the store takes them."""
    store = MemoryAuditStore()
    log = AuditLog(store, clock=clock)
    await log.append(record(1))
    store.failing = DISK_GONE
    kept = log.submit(outcome(2), retry=True)
    with pytest.raises(AuditUnavailable):
        await log.append(record(3))  # a decision: refused while the store fails
    assert not kept.done()
    barrier = asyncio.create_task(asyncio.to_thread(log.wait_committed, 10))
    await asyncio.sleep(0.3)  # several retries fail meanwhile
    assert not barrier.done(), "a barrier waits for the records kept for a retry"
    assert log.pending == 1
    store.failing = None
    entry = await asyncio.wait_for(kept, 10)
    assert await barrier
    await log.close()
    assert entry["request_id"] == "req-2"
    assert [e["request_id"] for e in store.iter_entries()] == ["req-1", "req-2"]
    assert verify(store).ok


@pytest.mark.anyio
async def test_close_logs_whole_the_records_it_cannot_store(path: Path) -> None:
    """Closing while the store still fails: after the retry window each kept record is logged in full, then failed."""
    store = MemoryAuditStore(failing=DISK_GONE)
    log = AuditLog(store, clock=clock, close_retry=0.3)
    kept = log.submit(outcome(7, error="lock wait timeout"), retry=True)
    with capture_logs() as logs:
        await log.close()
    unsaved = [e for e in logs if e["event"] == "audit_record_unsaved"]
    assert [(e["record"]["request_id"], e["record"]["error"]) for e in unsaved] == [("req-7", "lock wait timeout")]
    with pytest.raises(AuditUnavailable):
        kept.result()


@pytest.mark.anyio
@pytest.mark.parametrize(("linger", "commits"), [(5.0, 1), (0.0, 2)])
async def test_a_queued_record_waits_to_share_the_next_commit(path: Path, linger: float, commits: int) -> None:
    """A queued record nobody awaits lingers so the next awaited record commits with it: one commit, not two."""
    store = SQLiteAuditStore(path)
    log = AuditLog(store, clock=clock, linger=linger)
    queued = log.submit(outcome(1), retry=True)
    await asyncio.sleep(0.05)
    decision = await log.append(record(2))  # ends the linger at once: someone waits on this one
    assert (await queued)["seq"] == 1
    assert decision["seq"] == 2
    assert store.commits == commits
    await log.close()


@pytest.mark.anyio
async def test_a_lone_queued_record_commits_after_the_linger(path: Path) -> None:
    """With nothing else coming, a queued record is committed once the linger ends (and a barrier ends it early)."""
    log = AuditLog(SQLiteAuditStore(path), clock=clock, linger=0.05)
    entry = await asyncio.wait_for(log.submit(outcome(1), retry=True), 5)
    assert entry["seq"] == 1
    slow = AuditLog(SQLiteAuditStore(path.with_name("slow.db")), clock=clock, linger=30)
    slow.submit(outcome(2), retry=True)
    assert await asyncio.to_thread(slow.wait_committed, 5)
    await asyncio.gather(log.close(), slow.close())
