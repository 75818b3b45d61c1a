"""Where audit entries are kept: the store interface and the embedded SQLite store.

An *entry* is a record (a dict of JSON values) plus ``seq``, ``prev_hash`` and
``hash``. The store assigns ``seq`` and links the chain inside the same
transaction that writes the rows, so sequence order is chain order even if
several writers share one store::

    body = canonical({**record, "seq": seq})
    hash = sha256(prev_hash.encode() + body).hexdigest()

The first entry's ``prev_hash`` is :data:`GENESIS_HASH`. ``AuditStore`` is the
swap point: the embedded :class:`SQLiteAuditStore` needs no server; the shared
MariaDB store for several replicas (``gateway/audit/mariadb.py``) implements the
same methods. Both index the same columns and answer :meth:`AuditStore.query`
through the shared SQL in ``gateway/audit/query.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from gateway.audit.query import DEFAULT_LIMIT, TEXT_SCAN_LIMIT, AuditFilter, Dialect, page

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

Entry = dict[str, Any]

GENESIS_HASH = "0" * 64
CHAIN_FIELDS = frozenset({"seq", "prev_hash", "hash"})


@dataclass(frozen=True, slots=True)
class AuditPage:
    """One page of :meth:`AuditStore.query`: entries in page order, and the cursor for the next page."""

    entries: list[Entry]
    next_cursor: str | None


def statement_text(record: Mapping[str, object]) -> str | None:
    """The statement column's text: the statement, or a transaction's statements one per line."""
    statement = record.get("statement")
    if isinstance(statement, str):
        return statement
    if isinstance(statement, list):
        return "\n".join(str(s) for s in statement)
    return None


def canonical(record: Mapping[str, object]) -> bytes:
    """Return the canonical bytes of ``record``: compact JSON with sorted keys."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: str, body: bytes) -> str:
    """Return the SHA-256 hex digest over the previous hash and a record's bytes."""
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


class AuditStore(Protocol):
    """A durable, append-only home for hash-chained audit entries."""

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        """Chain and durably commit ``records`` in one transaction; return their entries."""
        ...

    def iter_entries(self, after_seq: int = 0, batch: int = 1000) -> Iterator[Entry]:
        """Yield entries with ``seq > after_seq`` in seq order, ``batch`` rows per read."""
        ...

    def last(self) -> Entry | None:
        """Return the entry with the highest seq, or ``None`` for an empty log."""
        ...

    def query(
        self,
        filters: AuditFilter,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        oldest_first: bool = False,
    ) -> AuditPage:
        """One page of entries matching ``filters``, newest first; see ``gateway/audit/query.py``."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


@runtime_checkable
class ColumnCheckedStore(Protocol):
    """A store that copies fields out of the hashed record into plain columns (for filters).

    Verification must see an edit to those columns too: editing ``user`` or
    ``time`` of a row would hide it from filters while the hashed record stays
    intact. Both stores implement this.
    """

    def iter_checked(self, after_seq: int = 0, batch: int = 1000) -> Iterator[tuple[Entry, tuple[str, ...]]]:
        """Entries in seq order, each with the names of its stored columns that disagree with its record."""
        ...


@runtime_checkable
class AnchoredStore(Protocol):
    """A store that also keeps its chain head apart from the entries (the MariaDB head row)."""

    def recorded_head(self) -> tuple[int, str]:
        """The head (seq, hash) as recorded by the last commit."""
        ...


# Schema version 1 (``PRAGMA user_version``): the statement column for free text,
# and one index per filter ending in time (rowid = seq is implied), as in MariaDB.
_SCHEMA_VERSION = 1
_MIGRATION = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, time TEXT, request_id TEXT, event TEXT, user TEXT,
        target TEXT, decision TEXT, code TEXT, record BLOB, prev_hash TEXT, hash TEXT, statement TEXT
    )""",
    "DROP INDEX IF EXISTS audit_user_seq",
    "CREATE INDEX IF NOT EXISTS audit_time ON audit (time)",
    "CREATE INDEX IF NOT EXISTS audit_request_id ON audit (request_id)",
    "CREATE INDEX IF NOT EXISTS audit_target_decision_time ON audit (target, decision, time)",
    *(
        f"CREATE INDEX IF NOT EXISTS audit_{c}_time ON audit ({c}, time)"
        for c in ("user", "target", "decision", "code", "event")
    ),
)
# A file written before version 1 has no statement column: add it and fill it in.
_ADD_STATEMENT = (
    "ALTER TABLE audit ADD COLUMN statement TEXT",
    (
        "UPDATE audit SET statement = CASE WHEN json_valid(CAST(record AS TEXT)) "
        "THEN json_extract(CAST(record AS TEXT), '$.statement') END"
    ),
)
_INSERT = (
    "INSERT INTO audit (seq, time, request_id, event, user, target, decision, code, statement, record, prev_hash, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = "SELECT seq, record, prev_hash, hash FROM audit"
_COLUMNS = ("time", "request_id", "event", "user", "target", "decision", "code")
# Every column a row holds besides record, prev_hash and hash (which the chain check covers).
_CHECKED = ("seq", *_COLUMNS, "statement")
_SELECT_CHECKED = f"SELECT seq, record, prev_hash, hash, {', '.join(_CHECKED)} FROM audit"  # noqa: S608 - fixed names


def _format_time(moment: datetime) -> str:
    # The stored form (``gateway.audit.format.format_time``): fixed width, so text order is time order.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DIALECT = Dialect(table="audit", param="?", time_value=_format_time)


def _text(value: object) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def _row_columns(record: Mapping[str, object]) -> tuple[object, ...]:
    """The plain columns copied out of ``record`` (in :data:`_COLUMNS` order, then the statement)."""
    return (*(_text(record.get(name)) for name in _COLUMNS), statement_text(record))


def column_mismatches(names: Sequence[str], stored: Sequence[object], expected: Sequence[object]) -> tuple[str, ...]:
    """The names whose stored value differs from the value the hashed record implies."""
    return tuple(name for name, got, want in zip(names, stored, expected, strict=True) if got != want)


def _sqlite_mismatches(stored: Sequence[object], entry: Entry) -> tuple[str, ...]:
    bad = column_mismatches(_CHECKED, stored, (entry.get("seq"), *_row_columns(entry)))
    statement = entry.get("statement")
    # A file migrated from before the statement column holds a transaction's list as JSON text.
    if (
        bad
        and bad[-1] == "statement"
        and isinstance(statement, list)
        and stored[-1] == orjson.dumps(statement).decode()
    ):
        bad = bad[:-1]
    return bad


def decode_entry(record: bytes, prev_hash: str, digest: str) -> Entry:
    """Rebuild an entry from its stored record bytes (``seq`` included) and chain columns."""
    try:
        body = orjson.loads(record)
    except orjson.JSONDecodeError:
        body = None
    # An unreadable row still yields an entry, so verification can name it.
    entry: Entry = body if isinstance(body, dict) else {}
    entry["prev_hash"] = prev_hash
    entry["hash"] = digest
    return entry


class SQLiteAuditStore:
    """The embedded store: one SQLite file in WAL mode with ``synchronous=FULL``.

    Each :meth:`append_batch` is one ``BEGIN IMMEDIATE`` transaction and one
    fsync. The chain head is read inside that transaction, so reopening a file
    resumes its chain and a commit that failed late cannot fork it.
    ``commits`` counts successful transactions (group commit makes it smaller
    than the number of records). The connection may be used from any thread;
    a lock serialises access. ``readonly=True`` opens an existing file for
    verification and export only.
    """

    def __init__(self, path: str | Path, *, readonly: bool = False, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.commits = 0
        self.text_scan_limit = TEXT_SCAN_LIMIT  # records one free-text page may examine
        self._lock = threading.Lock()
        if readonly:
            uri = f"file:{path}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        else:
            self._conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False)
        # Autocommit mode: transactions are opened and closed explicitly below.
        self._conn.isolation_level = None
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if not readonly:
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL syncs the WAL on every commit: a record is on disk before we answer.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._migrate()

    def _migrate(self) -> None:
        """Bring the file to the current schema; safe to run from several processes at once."""
        conn = self._conn
        if conn.execute("PRAGMA user_version").fetchone()[0] >= _SCHEMA_VERSION:
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
                if columns and "statement" not in columns:
                    for sql in _ADD_STATEMENT:
                        conn.execute(sql)
                for sql in _MIGRATION:
                    conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        """Chain and durably commit ``records`` in one transaction; return their entries."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
                seq, prev = head.fetchone() or (0, GENESIS_HASH)
                rows: list[tuple[object, ...]] = []
                entries: list[Entry] = []
                for record in records:
                    seq += 1
                    body = canonical({**record, "seq": seq})
                    digest = chain_hash(prev, body)
                    rows.append((seq, *_row_columns(record), body, prev, digest))
                    entries.append({**record, "seq": seq, "prev_hash": prev, "hash": digest})
                    prev = digest
                conn.executemany(_INSERT, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            self.commits += 1
            return entries

    def iter_entries(self, after_seq: int = 0, batch: int = 1000) -> Iterator[Entry]:
        """Yield entries with ``seq > after_seq`` in seq order, ``batch`` rows per read.

        Each batch is its own short query (keyset pagination), so no cursor or
        lock is held while the caller works and writers are never blocked.
        Entries are decoded from the stored record bytes (``seq`` included),
        not from the indexed columns, so verification sees what was hashed.
        """
        for row in self._rows_after(_SELECT, after_seq, batch):
            yield decode_entry(row[1], row[2], row[3])

    def iter_checked(self, after_seq: int = 0, batch: int = 1000) -> Iterator[tuple[Entry, tuple[str, ...]]]:
        """Entries in seq order, each with the names of its plain columns that disagree with its record."""
        for row in self._rows_after(_SELECT_CHECKED, after_seq, batch):
            entry = decode_entry(row[1], row[2], row[3])
            yield entry, _sqlite_mismatches(row[4:], entry)

    def _rows_after(self, select: str, after_seq: int, batch: int) -> Iterator[tuple[Any, ...]]:
        while True:
            with self._lock:
                rows = self._conn.execute(f"{select} WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, batch)).fetchall()
            yield from rows
            if rows:
                after_seq = rows[-1][0]
            if len(rows) < batch:
                return

    def last(self) -> Entry | None:
        """Return the entry with the highest seq, or ``None`` for an empty log."""
        with self._lock:
            row = self._conn.execute(f"{_SELECT} ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else decode_entry(row[1], row[2], row[3])

    def query(
        self,
        filters: AuditFilter,
        cursor: str | None = None,
        limit: int = DEFAULT_LIMIT,
        *,
        oldest_first: bool = False,
    ) -> AuditPage:
        """One page of entries matching ``filters``, newest first; see ``gateway/audit/query.py``."""

        def execute(sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
            with self._lock:
                return self._conn.execute(sql, params).fetchall()

        result = page(
            execute, _DIALECT, filters, cursor, limit, oldest_first=oldest_first, scan_limit=self.text_scan_limit
        )
        return AuditPage([decode_entry(r[1], r[2], r[3]) for r in result.rows], result.next_cursor)

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL on the last close)."""
        with self._lock:
            self._conn.close()
