"""One blocking connection to the state store, used from worker threads, never reused after an error.

PyMySQL, as the audit store uses: every call runs in a worker thread
(``asyncio.to_thread``), never on the event loop. A :class:`Link` holds one
connection behind a lock; a connection that saw any error is closed and the
next call makes a new one, so a broken session (an open transaction, a lost
link) is never handed on. Every failure to reach or use the store is
``StateUnavailable`` (503 ``state_unavailable``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pymysql

from gateway.db.credentials import read_plain_secret
from gateway.db.storeconn import connect_store
from gateway.errors import DatabaseUnavailable, StateUnavailable
from gateway.settings import StateDatabaseSettings

T = TypeVar("T")
Connection = Any  # a pymysql connection (PyMySQL ships no type information)
Cursor = Any  # PyMySQL ships no type information
_IDLE_CHECK = 30.0
LOCK_WAIT = 10  # seconds an edit waits for another replica's row lock (innodb_lock_wait_timeout)
RETRY_AFTER = 1.0  # seconds a link answers "unavailable" at once after a failure, before it tries again


def connect(cfg: StateDatabaseSettings, *, create: bool = False) -> Connection:
    """A new autocommit connection to the state database (``create``: CREATE DATABASE IF NOT EXISTS first)."""
    try:
        password = read_plain_secret(cfg.secret)
    except DatabaseUnavailable as exc:
        raise StateUnavailable(f"state store {exc.detail}") from None
    session = (f"innodb_lock_wait_timeout = {LOCK_WAIT}", f"max_statement_time = {cfg.query_timeout}")
    return connect_store(cfg, password, what="state", error=StateUnavailable, session=session, create=create)


class Link:
    """One connection behind a lock; ``run`` gives a cursor, and any error drops the connection.

    Two guards keep a store that stops answering (a network partition) from
    stalling every caller: after a failure the link answers ``StateUnavailable``
    at once for ``RETRY_AFTER`` seconds (then tries again), and a caller waits
    at most ``wait`` seconds for the connection while another call holds it.
    """

    def __init__(self, cfg: StateDatabaseSettings, *, wait: float | None = None) -> None:
        self._cfg = cfg
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._used = 0.0
        self._wait = cfg.connect_timeout + cfg.query_timeout + 5 if wait is None else wait
        self._down_until = 0.0
        self._down_reason = ""

    def run(self, work: Callable[[Cursor], T]) -> T:
        """Call ``work(cursor)`` on the connection (autocommit); ``StateUnavailable`` on a database error."""
        with self._held(), self._cursor() as cur:
            return work(cur)

    def transaction(self, work: Callable[[Cursor], T]) -> T:
        """Call ``work(cursor)`` inside one transaction, committed if it returns, rolled back if it raises."""
        with self._held(), self._cursor() as cur:
            conn = self._conn
            if conn is None:  # _cursor has just opened it
                raise StateUnavailable("the state store connection is gone")
            conn.begin()
            result = work(cur)
            conn.commit()
            return result

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        if time.monotonic() < self._down_until:
            raise StateUnavailable(self._down_reason)
        if not self._lock.acquire(timeout=self._wait):
            raise StateUnavailable("the state store is not answering (another call has waited on it too long)")
        try:
            yield
        finally:
            self._lock.release()

    def _trip(self, reason: str) -> StateUnavailable:
        """Answer at once for a while: the next attempt is ``RETRY_AFTER`` seconds away."""
        self._down_reason = reason
        self._down_until = time.monotonic() + RETRY_AFTER
        return StateUnavailable(reason)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Cursor]:
        now = time.monotonic()
        if self._conn is not None and now - self._used > _IDLE_CHECK:
            try:
                self._conn.ping(reconnect=False)
            except pymysql.Error:
                self.close_unlocked()
        if self._conn is None:
            try:
                self._conn = connect(self._cfg)
            except StateUnavailable as exc:
                raise self._trip(exc.detail) from None
        self._used = now
        try:
            with self._conn.cursor() as cur:
                yield cur
        except pymysql.Error as exc:
            self.close_unlocked()
            raise self._trip(f"the state store failed ({exc})") from None
        except BaseException:
            self.close_unlocked()
            raise

    def close_unlocked(self) -> None:
        """Close the connection (caller holds the lock, or nobody else uses the link)."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.close_unlocked()
