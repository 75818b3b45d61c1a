"""Filtering and paging the audit log, the same on the embedded and the shared store (and the fake)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from auditfixture import audit_db

from gateway.audit.fake import MemoryAuditStore
from gateway.audit.format import format_time
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.query import AuditFilter, encode_cursor
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify
from gateway.errors import InvalidRequest

__all__ = ["audit_db"]

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USERS = ("alice@example.com", "bob@example.com", "carol@example.com")


def make_record(i: int) -> dict[str, Any]:
    """Record ``i``: users, targets, decisions and statements vary; records 20 and 21 share a time."""
    moment = T0 + timedelta(minutes=20 if i == 21 else i)
    deny = i % 5 == 0
    statement = f"SELECT * FROM items WHERE id = {i}"
    if i in (7, 33):
        statement = f"SELECT * FROM notes WHERE body LIKE 'a%b' AND id = {i}"
    if i == 12:
        statement = "SELECT * FROM notes WHERE body LIKE 'axxb'"
    return {
        "event": "decision" if i % 2 else "outcome",
        "request_id": f"req-{i}",
        "time": format_time(moment),
        "user": USERS[i % 3],
        "target": "shop" if i % 4 else "crm",
        "decision": "deny" if deny else "allow",
        "code": "forbidden" if deny else "ok",
        "statement": statement,
    }


RECORDS = [make_record(i) for i in range(1, 41)]


@pytest.fixture(params=["sqlite", "mariadb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """An audit store of each kind (and the tests' in-memory fake), holding RECORDS (seq i = record i)."""
    opened: AuditStore
    if request.param == "sqlite":
        opened = SQLiteAuditStore(tmp_path / "audit.db")
    elif request.param == "memory":
        opened = MemoryAuditStore()
    else:
        opened = MariaDBAuditStore(request.getfixturevalue("audit_db"))
    opened.append_batch(RECORDS[:25])
    opened.append_batch(RECORDS[25:])
    yield opened
    opened.close()


Match = Callable[[dict[str, Any]], bool]


def expected(match: Match) -> list[int]:
    """Seqs of the records ``match`` accepts, newest first (time, then seq)."""
    chosen = [(r["time"], i) for i, r in enumerate(RECORDS, start=1) if match(r)]
    return [seq for _, seq in sorted(chosen, reverse=True)]


def all_pages(store: AuditStore, filters: AuditFilter, limit: int = 7, max_pages: int = 100) -> list[int]:
    """Follow next_cursor to the end; return the seqs in page order."""
    seqs: list[int] = []
    cursor = None
    for _ in range(max_pages):
        page = store.query(filters, cursor, limit)
        assert len(page.entries) <= limit
        seqs += [e["seq"] for e in page.entries]
        cursor = page.next_cursor
        if cursor is None:
            return seqs
    pytest.fail("paging did not end")


CASES: list[tuple[AuditFilter, Match]] = [
    (AuditFilter(), lambda _: True),
    (AuditFilter(user="bob@example.com"), lambda r: r["user"] == "bob@example.com"),
    (AuditFilter(target="crm", decision="deny"), lambda r: r["target"] == "crm" and r["decision"] == "deny"),
    (AuditFilter(code="forbidden"), lambda r: r["code"] == "forbidden"),
    (
        AuditFilter(event="outcome", user="alice@example.com"),
        lambda r: r["event"] == "outcome" and "alice" in r["user"],
    ),
    (AuditFilter(request_id="req-17"), lambda r: r["request_id"] == "req-17"),
    (AuditFilter(user="nobody@example.com"), lambda _: False),
]


@pytest.mark.parametrize(("filters", "match"), CASES)
def test_filters_return_matching_entries_newest_first_across_pages(
    store: AuditStore, filters: AuditFilter, match: Match
) -> None:
    """Each filter returns exactly the matching entries, newest first, through cursor pages of 7."""
    assert all_pages(store, filters) == expected(match)


def test_same_time_entries_are_ordered_by_seq_and_split_cleanly(store: AuditStore) -> None:
    """Records 20 and 21 share a time: seq breaks the tie, and a page boundary between them loses nothing."""
    first = store.query(AuditFilter(until=T0 + timedelta(minutes=20, seconds=1)), None, 1)
    assert [e["seq"] for e in first.entries] == [21]
    second = store.query(AuditFilter(until=T0 + timedelta(minutes=20, seconds=1)), first.next_cursor, 1)
    assert [e["seq"] for e in second.entries] == [20]


def test_time_range_is_since_inclusive_until_exclusive(store: AuditStore) -> None:
    """The since bound includes its instant, until excludes its own."""
    filters = AuditFilter(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=15))
    assert all_pages(store, filters) == [14, 13, 12, 11, 10]


def test_entries_are_the_stored_records_with_chain_fields(store: AuditStore) -> None:
    """A page's entries are the records as hashed, with seq, prev_hash and hash (and chain), so they can be checked."""
    (entry,) = store.query(AuditFilter(request_id="req-9")).entries
    chain = {"chain": store.chain} if isinstance(store, MariaDBAuditStore) else {}
    assert entry == {**RECORDS[8], **chain, "seq": 9, "prev_hash": entry["prev_hash"], "hash": entry["hash"]}
    assert verify(store).ok


def test_oldest_first_reverses_the_order(store: AuditStore) -> None:
    """oldest_first pages the same entries from the other end (used by export)."""
    filters = AuditFilter(user="carol@example.com")
    page = store.query(filters, None, 500, oldest_first=True)
    assert [e["seq"] for e in page.entries] == expected(lambda r: "carol" in r["user"])[::-1]


def test_free_text_is_a_case_insensitive_literal_substring(store: AuditStore) -> None:
    """Free text (q) matches the statement case-insensitively, and % and _ in q are literal characters."""
    assert all_pages(store, AuditFilter(q="LIKE 'A%B'")) == [33, 7]
    assert all_pages(store, AuditFilter(q="id = 1")) == expected(lambda r: "id = 1" in r["statement"])
    assert all_pages(store, AuditFilter(q="_")) == []


def test_free_text_scan_is_bounded_and_resumes_with_the_cursor(store: AuditStore) -> None:
    """With a scan bound of 5, pages examine at most 5 records each, may come back empty, and still find all."""
    cast("Any", store).text_scan_limit = 5  # every store kind has the bound; the protocol does not name it
    pages, seqs, cursor = 0, [], None
    while True:
        page = store.query(AuditFilter(q="notes"), cursor, 10)
        pages += 1
        seqs += [e["seq"] for e in page.entries]
        cursor = page.next_cursor
        if cursor is None or pages > 20:
            break
    assert seqs == [33, 12, 7]
    assert pages == 9  # 40 records, 5 per window, then one empty page that finds the end


def test_bad_cursors_are_invalid_requests(store: AuditStore) -> None:
    """A cursor that is not ours, or points at no record, is refused as invalid_request."""
    for cursor in ("not-a-cursor", "MTIz", encode_cursor(999)):
        with pytest.raises(InvalidRequest):
            store.query(AuditFilter(), cursor, 5)


def test_filter_times_must_be_timezone_aware() -> None:
    """A naive since/until is a programming error, never silently a local time."""
    with pytest.raises(ValueError, match="timezone-aware"):
        AuditFilter(since=datetime(2026, 1, 1))  # noqa: DTZ001 - a naive datetime is the point of the test


OLD_SCHEMA = """
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY, time TEXT, request_id TEXT, event TEXT, user TEXT,
    target TEXT, decision TEXT, code TEXT, record BLOB, prev_hash TEXT, hash TEXT
);
CREATE INDEX audit_user_seq ON audit (user, seq);
"""


def test_sqlite_file_from_before_the_statement_column_is_migrated(tmp_path: Path) -> None:
    """An audit file written by the earlier schema gains the statement column (filled in) and the indexes."""
    path = tmp_path / "old.db"
    new = SQLiteAuditStore(tmp_path / "new.db")
    new.append_batch(RECORDS[:3])
    rows = list(
        new._conn.execute(
            "SELECT seq, time, request_id, event, user, target, decision, code, record, prev_hash, hash FROM audit"
        )
    )
    new.close()
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.executemany("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    migrated = SQLiteAuditStore(path)
    try:
        assert migrated._conn.execute("PRAGMA user_version").fetchone() == (1,)
        assert [e["seq"] for e in migrated.query(AuditFilter(q="id = 2")).entries] == [2]
        indexes = {r[1] for r in migrated._conn.execute("PRAGMA index_list(audit)")}
        assert {"audit_user_time", "audit_target_time", "audit_code_time"} <= indexes
        assert "audit_user_seq" not in indexes
        assert verify(migrated).ok
    finally:
        migrated.close()


@pytest.mark.parametrize("name", ["q", "user", "target", "request_id"])
def test_a_nul_in_a_text_filter_is_refused(name: str) -> None:
    """A NUL would end SQLite's LIKE pattern early (``a<NUL>b`` matching everything): refused as invalid_request."""
    changes: dict[str, Any] = {name: "a\x00b"}
    with pytest.raises(InvalidRequest, match="cannot contain a NUL"):
        dataclasses.replace(AuditFilter(), **changes)
