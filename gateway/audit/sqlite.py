"""The embedded audit store: one SQLite file, no server needed.

Rows, reads and the hash chain are those every SQL store shares
(``gateway/audit/reading.py``, ``gateway/audit/store.py``); this module adds
the file: its schema and migration, WAL with ``synchronous=FULL``, and one
``BEGIN IMMEDIATE`` transaction per batch.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from gateway.audit.query import Dialect, Row
from gateway.audit.reading import CHECKED, SQLAuditStore, insert_sql
from gateway.audit.store import GENESIS_HASH, Entry, Linked, column_mismatches, link

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

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


def _format_time(moment: datetime) -> str:
    # The stored form (``gateway.audit.format.format_time``): fixed width, so text order is time order.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_DIALECT = Dialect(table="audit", param="?", time_value=_format_time)
# Rows per INSERT statement: one statement (one sqlite3_step, one release and re-take of the GIL) for a
# group instead of one per row. Under load the writer thread waits for the event loop's GIL at every
# re-take: with 64 clients a 63-record group took 10-15 ms to commit one row at a time, 4.5-6.5 ms so
# (docs/benchmarks.md). At most 64 rows x 12 columns: far under SQLite's 32,766 bound parameters.
_ROWS_PER_INSERT = 64


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert(rows: int) -> str:
    return insert_sql(_DIALECT, rows)


class SQLiteAuditStore(SQLAuditStore):
    """The embedded store: one SQLite file in WAL mode with ``synchronous=FULL``.

    Each :meth:`append_batch` is one transaction and one fsync. The store
    remembers the chain's head after its own last commit, and a group of up to
    64 records is then one multi-row INSERT in autocommit mode (one
    ``sqlite3_step``, so the writer thread re-takes the GIL once per commit);
    otherwise (the first commit, more records, or after a failure) it is one
    ``BEGIN IMMEDIATE`` transaction that reads the head inside it, so reopening
    a file resumes its chain and a commit that failed late cannot fork it.
    ``seq`` is the primary key: a remembered head gone stale because another
    process appended (``gateway policy import``) fails the INSERT, and the
    commit is made again from the head read.
    ``commits`` counts successful transactions (group commit makes it smaller
    than the number of records). The connection may be used from any thread;
    a lock serialises access. ``readonly=True`` opens an existing file for
    verification and export only.
    """

    dialect = _DIALECT

    def __init__(self, path: str | Path, *, readonly: bool = False, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.commits = 0
        self._lock = threading.Lock()
        # The chain's head after this store's last commit: the next one need not read it. ``seq`` is the
        # primary key, so a head gone stale (another process appended) fails the INSERT, and is read again.
        self._head: tuple[int, str] | None = None
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
        with _immediate(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
                if columns and "statement" not in columns:
                    for sql in _ADD_STATEMENT:
                        conn.execute(sql)
                for sql in _MIGRATION:
                    conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        """Chain and durably commit ``records`` in one transaction; return their entries."""
        with self._lock:
            head, self._head = self._head, None  # forgotten unless this commit succeeds
            try:
                linked = self._append(records, head)
            except sqlite3.IntegrityError:
                if head is None:
                    raise
                # Another process appended since this one's last commit (its seq collided): read the head.
                linked = self._append(records, None)
            self._head = (linked.seq, linked.hash)
            self.commits += 1
            return linked.entries

    def _append(self, records: Sequence[Mapping[str, object]], head: tuple[int, str] | None) -> Linked:
        """One transaction; the chain goes on from ``head``, or from the head read inside it when None."""
        conn = self._conn
        if head is not None and 0 < len(records) <= _ROWS_PER_INSERT:
            # One statement in autocommit mode is its own transaction (synchronous=FULL: synced when it
            # returns): one sqlite3_step for the whole commit, where BEGIN and COMMIT would add two.
            linked = link(records, *head, self.row_columns)
            conn.execute(_insert(len(linked.rows)), [value for row in linked.rows for value in row])
            return linked
        with _immediate(conn):
            if head is None:
                found = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                head = found or (0, GENESIS_HASH)
            seq, prev = head
            linked = link(records, seq, prev, self.row_columns)
            rows = linked.rows
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[start : start + _ROWS_PER_INSERT]
                conn.execute(_insert(len(chunk)), [value for row in chunk for value in row])
        return linked

    def _rows(self, sql: str, params: Sequence[object]) -> list[Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _mismatches(self, stored: Sequence[object], entry: Entry) -> tuple[str, ...]:
        bad = column_mismatches(CHECKED, stored, (entry.get("seq"), *self.row_columns(entry)))
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

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL on the last close)."""
        with self._lock:
            self._conn.close()


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction taken at once (``BEGIN IMMEDIATE``): committed, or rolled back on any failure."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
