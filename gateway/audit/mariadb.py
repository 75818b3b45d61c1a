"""The shared audit store: one hash chain in MariaDB for every gateway replica.

Each :meth:`MariaDBAuditStore.append_batch` is one transaction (group commit
stays: many records, one commit, one redo-log flush with MariaDB's default
``innodb_flush_log_at_trx_commit=1``)::

    SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE   -- waits for other replicas
    INSERT INTO audit_log ... (seq, prev_hash, hash chained on from the head)
    UPDATE audit_head SET seq = ..., hash = ...
    COMMIT

The head row lock serialises writers across replicas, so seq order is chain
order and one verification covers every replica's records.

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
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pymysql

from gateway.audit.query import Dialect, Row
from gateway.audit.reading import SQLAuditStore, insert_sql, text_column
from gateway.audit.schema import HEAD_TABLE, LATEST, LOG_TABLE, WIDTHS, applied_versions, migrate
from gateway.audit.store import Entry, link
from gateway.db.credentials import read_plain_secret
from gateway.errors import AuditUnavailable, DatabaseUnavailable
from gateway.settings import AuditDatabaseSettings, SecretSource

_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001 - DATETIME columns hold naive UTC
_IDLE_CHECK = 30.0
_LOCK_WAIT = 10


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


_DIALECT = Dialect(table=LOG_TABLE, param="%s", time_value=_naive_utc)
_INSERT = insert_sql(_DIALECT)


def read_secret(source: SecretSource) -> str:
    """Read the audit database password from its env var or file, now."""
    try:
        return read_plain_secret(source)
    except DatabaseUnavailable as exc:
        raise AuditUnavailable(f"audit store {exc.detail}") from None


class MariaDBAuditStore(SQLAuditStore):
    """The shared audit store in MariaDB; see the module docstring.

    ``commits`` counts successful transactions. Raises ``AuditUnavailable``
    when the database cannot be reached or its schema is missing (readonly).
    """

    dialect = _DIALECT

    def __init__(self, settings: AuditDatabaseSettings, *, readonly: bool = False) -> None:
        self.settings = settings
        self.readonly = readonly
        self.commits = 0
        self._lock = threading.Lock()
        self._conn: pymysql.connections.Connection[Any] | None = None
        self._used = 0.0
        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    if not readonly:
                        migrate(cur, settings.database)
                    elif LATEST not in applied_versions(cur):
                        raise AuditUnavailable(f"the audit schema in {settings.database!r} is missing or too old")
            except (pymysql.Error, TimeoutError) as exc:
                self._discard()
                raise AuditUnavailable(f"cannot create or migrate the audit schema ({exc})") from None
            except BaseException:
                self._discard()
                raise

    def _connect(self) -> pymysql.connections.Connection[Any]:
        cfg = self.settings
        tls: dict[str, Any] = {}
        if cfg.tls.enabled:
            # Our own context, so "enabled" can only mean verified TLS (never a silent fallback).
            context = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
            context.check_hostname = cfg.tls.verify_hostname
            context.verify_mode = ssl.CERT_REQUIRED
            tls["ssl"] = context
        session = [f"innodb_lock_wait_timeout = {_LOCK_WAIT}"]
        if self.readonly:
            session += ["TRANSACTION READ ONLY", f"max_statement_time = {cfg.query_timeout}"]
        try:
            conn = pymysql.connect(
                host=cfg.host,
                port=cfg.port,
                user=cfg.user,
                password=read_secret(cfg.secret),
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.query_timeout + 5,
                write_timeout=cfg.query_timeout + 5,
                **tls,
            )
        except pymysql.Error as exc:
            raise AuditUnavailable(f"cannot connect to the audit store at {cfg.host}:{cfg.port} ({exc})") from None
        try:
            with conn.cursor() as cur:
                if not self.readonly:
                    # Without the privilege, an existing database is still fine: USE decides.
                    with contextlib.suppress(pymysql.err.OperationalError):
                        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg.database}`")
                conn.select_db(cfg.database)
                for setting in session:
                    cur.execute(f"SET SESSION {setting}")
        except pymysql.Error as exc:
            conn.close()
            raise AuditUnavailable(f"cannot use audit database {cfg.database!r} ({exc})") from None
        return conn

    def _connection(self) -> pymysql.connections.Connection[Any]:
        """The open connection (caller holds the lock), checked after it sat idle."""
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
        """Chain and commit ``records`` in one transaction that holds the head row lock."""
        with self._lock:
            try:
                conn = self._connection()
                conn.begin()
                with conn.cursor() as cur:
                    cur.execute(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1 FOR UPDATE")  # noqa: S608 - a constant table name
                    head = cur.fetchone()
                    if head is None:
                        raise AuditUnavailable("the audit chain head row is missing")
                    linked = link(records, int(head[0]), str(head[1]), self.row_columns)
                    cur.executemany(_INSERT, linked.rows)
                    advance = f"UPDATE {HEAD_TABLE} SET seq = %s, hash = %s WHERE id = 1"  # noqa: S608 - a fixed name
                    cur.execute(advance, (linked.seq, linked.hash))
                conn.commit()
            except BaseException:
                # Whatever state the session is in (open transaction, lost link), never reuse it.
                self._discard()
                raise
            self.commits += 1
            return linked.entries

    def recorded_head(self) -> tuple[int, str]:
        """The chain head row (seq, hash): verification checks the log still reaches it (a cut tail)."""
        rows = self._rows(f"SELECT seq, hash FROM {HEAD_TABLE} WHERE id = 1", ())  # noqa: S608 - fixed name
        if not rows:
            raise AuditUnavailable("the audit chain head row is missing")
        return int(rows[0][0]), str(rows[0][1])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._discard()
