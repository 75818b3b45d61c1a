"""An in-memory audit store for tests: the :class:`~gateway.audit.store.AuditStore` protocol, nothing on disk.

Tests swap it in (``create_app(..., audit_store=...)``, ``AuditLog(store)``)
rather than patching or subclassing a real store. It chains entries exactly
as the SQL stores do (``gateway/audit/store.py``), so :func:`~gateway.audit.verify.verify`
checks it, and answers :meth:`MemoryAuditStore.query` with the same order,
filters, cursors and bounded free-text scans (``gateway/audit/query.py``).
Faults are set by the test:

* ``failing``: an exception every write raises while it is set (a disk that
  went away), before anything is stored;
* ``before_write``: called with each batch before it is stored, in the audit
  writer's thread (a test can hold a write there until it lets it go).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from gateway.audit.format import format_time
from gateway.audit.query import (
    DEFAULT_LIMIT,
    EQUALITY_FILTERS,
    MAX_LIMIT,
    TEXT_SCAN_LIMIT,
    AuditFilter,
    decode_cursor,
    encode_cursor,
)
from gateway.audit.reading import text_column
from gateway.audit.store import GENESIS_HASH, AuditPage, Entry, link, statement_text
from gateway.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence


class MemoryAuditStore:
    """Audit entries in a list; thread-safe like the real stores (the writer thread and readers share it)."""

    def __init__(
        self,
        *,
        failing: Exception | None = None,
        before_write: Callable[[Sequence[Mapping[str, object]]], None] | None = None,
    ) -> None:
        self.failing = failing
        self.before_write = before_write
        self.commits = 0
        self.closed = False
        self.text_scan_limit = TEXT_SCAN_LIMIT  # records one free-text page may examine
        self._entries: list[Entry] = []
        self._lock = threading.Lock()

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        """Chain ``records`` on from the last entry and keep them; raise ``failing`` while it is set."""
        if self.before_write is not None:
            self.before_write(records)
        if self.failing is not None:
            raise self.failing
        with self._lock:
            seq, prev = (
                (int(self._entries[-1]["seq"]), str(self._entries[-1]["hash"])) if self._entries else (0, GENESIS_HASH)
            )
            linked = link(records, seq, prev, lambda _: ())
            self._entries.extend(dict(e) for e in linked.entries)
            self.commits += 1
        return linked.entries

    def iter_entries(self, after_seq: int = 0, batch: int = 1000) -> Iterator[Entry]:
        """Yield entries with ``seq > after_seq`` in seq order (copies: callers may change them)."""
        del batch
        with self._lock:
            kept = [dict(e) for e in self._entries if e["seq"] > after_seq]
        yield from kept

    def last(self) -> Entry | None:
        """Return the entry with the highest seq, or ``None`` for an empty log."""
        with self._lock:
            return dict(self._entries[-1]) if self._entries else None

    def query(
        self,
        filters: AuditFilter,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        oldest_first: bool = False,
    ) -> AuditPage:
        """One page of entries matching ``filters``, newest first (by time, then seq), as the SQL stores page."""
        limit = max(1, min(limit, MAX_LIMIT))
        with self._lock:
            matching = [dict(e) for e in self._entries if _matches(e, filters)]
            by_seq = {e["seq"]: e for e in self._entries}
        matching.sort(key=_order, reverse=not oldest_first)
        if cursor is not None:
            seq = decode_cursor(cursor)
            if seq not in by_seq:
                raise InvalidRequest("the cursor does not point at a record of this log")
            after = _order(by_seq[seq])
            matching = [e for e in matching if (_order(e) > after if oldest_first else _order(e) < after)]
        boundary: Entry | None = None
        if filters.q:  # a bounded scan: the text_scan_limit-th record in page order ends this page's window
            if len(matching) >= self.text_scan_limit:
                boundary = matching[self.text_scan_limit - 1]
                matching = matching[: self.text_scan_limit]
            matching = [e for e in matching if _contains(e, filters.q)]
        if len(matching) > limit:
            return AuditPage(matching[:limit], encode_cursor(int(matching[limit - 1]["seq"])))
        return AuditPage(matching, None if boundary is None else encode_cursor(int(boundary["seq"])))

    def close(self) -> None:
        """Nothing to release; noted for tests that check the log closed its store."""
        self.closed = True


def _order(entry: Entry) -> tuple[str, int]:
    return (str(entry.get("time")), int(entry["seq"]))


def _matches(entry: Entry, filters: AuditFilter) -> bool:
    """Whether ``entry`` passes every filter but the free text (times compare in the stored text form)."""
    for name in EQUALITY_FILTERS:
        wanted = getattr(filters, name)
        if wanted is not None and text_column(entry.get(name)) != wanted:
            return False
    time = str(entry.get("time"))
    after_since = filters.since is None or time >= format_time(filters.since)
    return after_since and (filters.until is None or time < format_time(filters.until))


def _contains(entry: Entry, text: str) -> bool:
    statement = statement_text(entry)
    return statement is not None and text.lower() in statement.lower()
