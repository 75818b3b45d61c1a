"""The shared audit store: MariaDB, one hash chain per gateway replica.

Each replica writes its own chain, named by its replica id
(``audit.replica_id``), with its own ``seq`` and its own head row in
``audit_chains``. Each :meth:`MariaDBAuditStore.append_batch` is one
transaction (group commit stays: many records, one commit, one redo-log flush
with MariaDB's default ``innodb_flush_log_at_trx_commit=1``)::

    SELECT seq, hash FROM audit_chains WHERE chain = <this replica> FOR UPDATE
    INSERT INTO audit_log ... (chain, seq, prev_hash, hash chained on from the head)
    UPDATE audit_chains SET seq = ..., hash = ... WHERE chain = <this replica>
    COMMIT

The row lock is this chain's only, so replicas never wait on each other
(two processes given the same id still make one correct chain: they take
turns on its row). Rows also get an AUTO_INCREMENT ``id``, the order in which
they were committed across all chains, which the auditor's list pages on
(merged by time, then ``id``). Signed checkpoints over every head
(:meth:`write_checkpoint`, ``gateway/audit/checkpoints.py``) make a cut tail
or a dropped chain visible; ``gateway/audit/chains.py`` verifies it all.

The store is synchronous: it runs in the audit log's writer thread (and, for
reads, in worker threads), so it uses PyMySQL, a plain blocking driver,
rather than asyncmy on a private event loop. Each store instance holds one
connection behind a lock; a connection that saw any error is closed and a
new one is made on next use, so a broken connection is never reused. The
schema is created and migrated on open (``gateway/audit/schema.py``) unless
the store is opened ``readonly``, which also makes the session read-only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pymysql

from gateway.audit import sharedchains
from gateway.audit.checkpoints import Checkpoint, Signer
from gateway.audit.query import Dialect, Row
from gateway.audit.reading import CHECKED, SQLAuditStore, text_column
from gateway.audit.schema import (
    CHAINS_TABLE,
    LATEST,
    LOG_TABLE,
    WIDTHS,
    applied_versions,
    check_not_newer,
    migrate,
)
from gateway.audit.store import GENESIS_HASH, Entry, Linked, link
from gateway.db.credentials import read_plain_secret
from gateway.db.migrations import SchemaTooNew
from gateway.db.storeconn import connect_store
from gateway.errors import AuditUnavailable, DatabaseUnavailable
from gateway.settings import AuditDatabaseSettings, SecretSource
from gateway.settings.auditchains import default_replica_id

_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - DATETIME columns hold naive UTC
_IDLE_CHECK = 30.0
_LOCK_WAIT = 10


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


_DIALECT = Dialect(table=LOG_TABLE, param="%s", time_value=_naive_utc, key="id")
_NAMES = ("chain", *CHECKED, "record", "prev_hash", "hash")
_LOCK_HEAD = f"SELECT seq, hash FROM {CHAINS_TABLE} WHERE chain = %s FOR UPDATE"  # noqa: S608 - a constant table name
_ADVANCE = f"UPDATE {CHAINS_TABLE} SET seq = %s, hash = %s WHERE chain = %s"  # noqa: S608 - a constant table name
_ADVANCE_FROM = f"{_ADVANCE} AND seq = %s AND hash = %s"
_INSERT = f"INSERT INTO {LOG_TABLE} ({', '.join(_NAMES)}) VALUES ({', '.join(['%s'] * len(_NAMES))})"  # noqa: S608 - fixed names


def read_secret(source: SecretSource) -> str:
    """Read the audit database password from its env var or file, now."""
    try:
        return read_plain_secret(source)
    except DatabaseUnavailable as exc:
        raise AuditUnavailable(f"audit store {exc.detail}") from None


class MariaDBAuditStore(SQLAuditStore):
    """The shared audit store in MariaDB; see the module docstring.

    ``chain`` is the replica id this store writes under (default: the host's
    name). ``commits`` counts successful transactions. Raises
    ``AuditUnavailable`` when the database cannot be reached, its schema is
    missing (readonly) or newer than this gateway knows.
    """

    dialect = _DIALECT

    def __init__(self, settings: AuditDatabaseSettings, *, readonly: bool = False, chain: str | None = None) -> None:
        self.settings = settings
        self.readonly = readonly
        self.chain = chain or default_replica_id()
        self.commits = 0
        self.checkpoints_written = 0
        self._checkpointed: dict[str, tuple[int, str]] | None = None  # the heads of the last checkpoint written
        self._closed = False
        self._lock = threading.Lock()
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._used = 0.0
        # This chain's head after this store's last commit: the next one moves the head row from it.
        self._head: tuple[int, str] | None = None
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    if not readonly:
                        migrate(cur, settings.database)
                        # This chain's head row, made once; only this chain's writers ever lock it.
                        cur.execute(
                            f"INSERT IGNORE INTO {CHAINS_TABLE} (chain, seq, hash) VALUES (%s, 0, %s)",  # noqa: S608 - a constant table name
                            (self.chain, GENESIS_HASH),
                        )
                    else:
                        applied = applied_versions(cur)
                        check_not_newer(applied)
                        if LATEST not in applied:
                            raise AuditUnavailable(f"the audit schema in {settings.database!r} is missing or too old")
            except SchemaTooNew as exc:
                self._discard()
                raise AuditUnavailable(str(exc)) from None
            except (pymysql.Error, TimeoutError) as exc:
                self._discard()
                raise AuditUnavailable(f"cannot create or migrate the audit schema ({exc})") from None
            except BaseException:
                self._discard()
                raise

    def _connect(self) -> pymysql.connections.Connection[Any]:
        cfg = self.settings
        session = [f"innodb_lock_wait_timeout = {_LOCK_WAIT}"]
        if self.readonly:
            session += ["TRANSACTION READ ONLY", f"max_statement_time = {cfg.query_timeout}"]
        password = read_secret(cfg.secret)
        return connect_store(
            cfg, password, what="audit", error=AuditUnavailable, session=session, create=not self.readonly
        )

    def _connection(self) -> pymysql.connections.Connection[Any]:
        """The open connection (caller holds the lock), checked after it sat idle; never one after close."""
        if self._closed:
            raise AuditUnavailable("the audit store is closed")
        now = time.monotonic()
        if self._conn is not None and now - self._used > _IDLE_CHECK:
            try:
                self._conn.ping(reconnect=False)
            except pymysql.Error:
                self._discard()
        if self._conn is None:
            self._conn = self._connect()
        self._used = now
        return self._conn

    def _discard(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _time_column(self, value: object) -> datetime:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return _EPOCH  # only a caller-made time string can be unreadable; it still sorts
        return _naive_utc(moment) if moment.tzinfo else moment

    def _text_column(self, name: str, value: object) -> str | None:
        text = text_column(value)
        return None if text is None else text[: WIDTHS[name]]  # the whole value stays in the record

    def _rows(self, sql: str, params: Sequence[object]) -> list[Row]:
        with self._lock:
            try:
                with self._connection().cursor() as cur:
                    cur.execute(sql, tuple(params))
                    return list(cur.fetchall())
            except BaseException:
                self._discard()
                raise

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        """Chain and commit ``records`` in one transaction that holds this chain's head row lock (only)."""
        with self._lock:
            head, self._head = self._head, None  # forgotten unless this commit succeeds
            try:
                conn = self._connection()
                conn.begin()
                with conn.cursor() as cur:
                    linked = self._advanced(cur, records, head)
                    cur.executemany(_INSERT, [(self.chain, *row) for row in linked.rows])
                conn.commit()
            except BaseException:
                # Whatever state the session is in (open transaction, lost link), never reuse it.
                self._discard()
                raise
            self._head = (linked.seq, linked.hash)
            self.commits += 1
            return linked.entries

    def _advanced(self, cur: Any, records: Sequence[Mapping[str, object]], head: tuple[int, str] | None) -> Linked:  # noqa: ANN401 - a PyMySQL cursor
        """Link ``records`` on from this chain's head and move the head row past them (locking it).

        With the head of this store's last commit remembered, one conditional
        UPDATE both locks the row and checks that nobody moved it since (the
        same replica id configured twice, a restored database); otherwise, or
        when it did move, the head is read under ``FOR UPDATE`` first.
        """
        if head is not None:
            linked = link(records, *head, self.row_columns, chain=self.chain)
            moved = cur.execute(_ADVANCE_FROM, (linked.seq, linked.hash, self.chain, *head))
            if moved == 1:
                return linked
        cur.execute(_LOCK_HEAD, (self.chain,))
        found = cur.fetchone()
        if found is None:
            raise AuditUnavailable(f"the head row of audit chain {self.chain!r} is missing")
        linked = link(records, int(found[0]), str(found[1]), self.row_columns, chain=self.chain)
        cur.execute(_ADVANCE, (linked.seq, linked.hash, self.chain))
        return linked

    def chain_heads(self) -> dict[str, tuple[int, str]]:
        """Each chain's head (seq, hash) from its head row; the ``_legacy`` chain's from version 1's head row."""
        return sharedchains.heads(self._rows)

    def chains_in_log(self) -> set[str]:
        """The chains that have entries."""
        return sharedchains.chains_in_log(self._rows)

    def iter_chain(self, chain: str, batch: int = 1000, after_seq: int = 0) -> Iterator[tuple[Entry, tuple[str, ...]]]:
        """One chain's entries after ``after_seq`` in seq order, each with its columns that disagree with its record."""
        for row in sharedchains.chain_rows(self._rows, chain, batch, after_seq):
            entry = sharedchains.entry_of(row)
            yield entry, sharedchains.mismatches(self._mismatches(row[4:-1], entry), row[-1], entry)

    def iter_checkpoints(self, batch: int = 1000) -> Iterator[Checkpoint]:
        """Every stored checkpoint, oldest first."""
        return sharedchains.checkpoints(self._rows, batch)

    def write_checkpoint(self, signer: Signer, time: str) -> Checkpoint | None:
        """Sign and store a checkpoint over every chain head, unless none moved since this store's last one."""
        heads = self.chain_heads()  # after close: AuditUnavailable (a round still running at shutdown)
        if heads == self._checkpointed:
            return None
        with self._lock:
            try:
                with self._connection().cursor() as cur:
                    written = sharedchains.insert_checkpoint(cur, signer, time, self.chain, heads)
            except BaseException:
                self._discard()
                raise
        self._checkpointed = heads
        self.checkpoints_written += 1
        return written

    def close(self) -> None:
        """Close the connection; nothing reopens it."""
        with self._lock:
            self._closed = True
            self._discard()
