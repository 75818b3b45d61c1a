"""One bounded, fair connection pool per ``(target, db_user)``.

asyncmy's own pool passes the password fixed at creation to every connect and
lets a newly arriving task take a freed connection ahead of tasks already
waiting. This pool asks the credential provider for a password for every new
connection, hands freed connections to waiters in arrival order (FIFO), caps
the number of waiters, caps each connection's lifetime and throws a broken or
possibly dirty connection away instead of handing it to the next user.

The only way to a connection is ``PoolRegistry.connection(decision)``: the
``(target, db_user)`` comes from an allowing policy ``Decision``, and an
account whose privileges drifted under ``drift: refuse`` is not served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import structlog
from asyncmy import errors as db_errors

from gateway.db.connector import Connector, ConnectStats
from gateway.db.connectrate import ConnectRate
from gateway.db.credentials import CredentialProvider, provider_for
from gateway.db.driftstate import DriftState
from gateway.errors import DatabaseUnavailable, Forbidden, PoolExhausted
from gateway.policy.decide import Decision
from gateway.settings import PoolSettings, TargetSettings

log = structlog.get_logger("gateway.db.pools")

# Pinned so the gateway's lexer and MariaDB agree on quoting: no ANSI_QUOTES,
# backslash escapes on (SECURITY rules 9 and 17).
SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
# One statement (multi-statements are off); asyncmy's own sql_mode option does not quote.
INIT_COMMAND = f"SET SESSION sql_mode = '{SQL_MODE}', time_zone = '+00:00'"


@dataclass(eq=False)
class Pooled:
    """A connection plus what the pool needs to know about it."""

    raw: Any  # asyncmy Connection
    created: float
    discard: bool = field(default=False)

    @property
    def thread_id(self) -> int:
        """MariaDB's id of this connection (for KILL QUERY)."""
        return int(self.raw.thread_id())


def _alive(conn: Pooled) -> bool:
    """False once the link is known dead: closed by us, or by the server or the network while idle.

    A restarted server, ``KILL CONNECTION`` or a cut link leaves an idle
    connection with its stream at EOF or failed; asyncmy's own pool checks the
    same ``_stream_broken`` before handing a free connection out.
    """
    raw = conn.raw
    return bool(raw.connected) and not getattr(raw, "_stream_broken", False)


class _Slot:
    """Sent to a waiter instead of a connection: 'you may open a new one'."""


_SLOT = _Slot()
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()


class ConnectionPool:
    """A FIFO pool of asyncmy connections for one ``(target, db_user)``."""

    def __init__(
        self,
        name: str,
        connect: Callable[[], Any],
        limits: PoolSettings,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.name = name
        self._connect = connect
        self._limits = limits
        self._clock = clock or asyncio.get_running_loop().time
        self._idle: deque[Pooled] = deque()
        self._waiters: deque[asyncio.Future[Pooled | _Slot]] = deque()
        self._size = 0
        self._in_use = 0
        self._closed = False

    @property
    def size(self) -> int:
        """Connections open or being opened."""
        return self._size

    @property
    def in_use(self) -> int:
        """Connections handed out now."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Tasks waiting for a connection."""
        return len(self._waiters)

    @property
    def connect_stats(self) -> ConnectStats | None:
        """Results of opening new connections (when the connector counts them)."""
        stats = getattr(self._connect, "stats", None)
        return stats if isinstance(stats, ConnectStats) else None

    @property
    def idle(self) -> int:
        """Open connections ready to be handed out."""
        return len(self._idle)

    async def _open(self) -> Pooled:
        try:
            raw = await asyncio.wait_for(self._connect(), self._limits.connect_timeout)
        except BaseException as exc:
            self._size -= 1
            self._wake_one(_SLOT)
            if isinstance(exc, TimeoutError):  # a server that accepts but never answers the handshake
                detail = f"no connection to {self.name} within the {self._limits.connect_timeout:g}s connect timeout"
                if self.connect_stats is not None:
                    self.connect_stats.count("connect_timeout", detail)
                raise DatabaseUnavailable(detail) from None
            raise
        return Pooled(raw=raw, created=self._clock())

    def _expired(self, conn: Pooled) -> bool:
        return self._clock() - conn.created >= self._limits.max_lifetime

    async def acquire(self) -> Pooled:
        """Take a connection, open one, or wait in line (up to the acquire timeout)."""
        if self._closed:
            raise DatabaseUnavailable(f"pool {self.name} is closed")
        while self._idle and not self._waiters:
            conn = self._idle.popleft()
            if self._expired(conn) or not _alive(conn):
                self._close_conn(conn)
                continue
            self._in_use += 1
            return conn
        if self._size < self._limits.max_size and not self._waiters:
            self._size += 1
            conn = await self._open()
            self._in_use += 1
            return conn
        got = await self._wait()
        if isinstance(got, _Slot):
            conn = await self._open()
        else:
            conn = got
        self._in_use += 1
        return conn

    async def _wait(self) -> Pooled | _Slot:
        if len(self._waiters) >= self._limits.max_waiting:
            raise PoolExhausted(f"too many requests waiting for a connection to {self.name}")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Pooled | _Slot] = loop.create_future()
        self._waiters.append(fut)

        def expire() -> None:
            if not fut.done():
                self._waiters.remove(fut)
                fut.set_exception(
                    PoolExhausted(f"no connection to {self.name} within {self._limits.acquire_timeout:g}s")
                )

        timer = loop.call_later(self._limits.acquire_timeout, expire)
        try:
            return await fut
        except asyncio.CancelledError:
            # The caller went away: give back whatever it was handed, or leave the line.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._hand_back(fut.result())
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise
        finally:
            timer.cancel()

    def _wake_one(self, item: Pooled | _Slot) -> bool:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                if isinstance(item, _Slot):
                    self._size += 1
                fut.set_result(item)
                return True
        return False

    def _hand_back(self, item: Pooled | _Slot) -> None:
        if isinstance(item, _Slot):
            self._size -= 1  # the slot counted a connection that was never opened
            self._wake_one(_SLOT)
        elif not self._wake_one(item):
            self._idle.append(item)

    def release(self, conn: Pooled) -> None:
        """Return a connection; a discarded or expired one is closed, never reused."""
        self._in_use -= 1
        if conn.discard or self._closed or self._expired(conn) or not _alive(conn):
            self._close_conn(conn)
            self._wake_one(_SLOT)
            return
        self._hand_back(conn)

    def _close_conn(self, conn: Pooled) -> None:
        self._size -= 1
        with contextlib.suppress(Exception):
            conn.raw.close()

    async def close(self) -> None:
        """Close idle connections and refuse new acquires; in-use ones close on release."""
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(DatabaseUnavailable(f"pool {self.name} is closing"))
        while self._idle:
            conn = self._idle.popleft()
            self._size -= 1
            with contextlib.suppress(Exception):
                await conn.raw.ensure_closed()

    async def warm(self, count: int) -> None:
        """Open ``count`` connections (held together, so each is a new one), then give them back."""
        held: list[Pooled] = []
        try:
            for _ in range(count):
                held.append(await self.acquire())  # noqa: PERF401 - a failure keeps what was opened so far
        except DatabaseUnavailable as exc:
            log.warning("pool_warmup_failed", pool=self.name, detail=exc.detail, opened=len(held))
        finally:
            for conn in held:
                self.release(conn)

    async def check(self, within: float) -> None:
        """Prove the pool can hand out a working connection (for /readyz)."""
        try:
            async with asyncio.timeout(within), self.connection() as conn:
                await conn.raw.ping(reconnect=False)
        except (DatabaseUnavailable, PoolExhausted):
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            raise DatabaseUnavailable(f"{self.name} is not usable ({type(exc).__name__})") from None

    async def show_grants(self) -> list[str]:
        """The account's own ``SHOW GRANTS``, over a short-lived side connection (never waiting for a slot).

        Plain ``SHOW GRANTS`` (not ``FOR CURRENT_USER()``): it also lists what
        ``PUBLIC`` and an active role give the session.
        """
        raw = await asyncio.wait_for(self._connect(), self._limits.connect_timeout)
        try:
            async with raw.cursor() as cur:
                await cur.execute("SHOW GRANTS")
                return [str(row[0]) for row in await cur.fetchall()]
        finally:
            # Closed at once, without a goodbye: a polite close could wait forever on a stalled link.
            with contextlib.suppress(Exception):
                raw.close()

    async def kill(self, thread_id: int, *, connection: bool) -> bool:
        """Cancel a statement (``KILL QUERY``) or a whole connection (``KILL CONNECTION``).

        Sent over a new connection of the same account, outside the pool: an
        account may kill its own threads without the PROCESS privilege.
        """
        what = "CONNECTION" if connection else "QUERY"
        try:
            raw = await asyncio.wait_for(self._connect(), self._limits.connect_timeout)
        except (DatabaseUnavailable, TimeoutError) as exc:
            log.error("kill_connect_failed", pool=self.name, error=type(exc).__name__)
            return False
        try:
            await raw.query(f"KILL {what} {int(thread_id)}")
        except db_errors.MySQLError as exc:  # e.g. 1094: the statement has already ended
            log.info("kill_failed", pool=self.name, thread_id=thread_id, errno=exc.args[0] if exc.args else None)
            return False
        finally:
            with contextlib.suppress(Exception):
                await raw.ensure_closed()
        return True

    @contextlib.asynccontextmanager
    async def connection(self, waiting: AbstractContextManager[Any] = _NOTHING) -> AsyncIterator[Pooled]:
        """Hold a connection for the block; mark ``discard`` to have it thrown away.

        ``waiting`` is entered for the wait for a connection (a tracing span).
        """
        with waiting:
            conn = await self.acquire()
        try:
            yield conn
        except BaseException:
            conn.discard = True
            raise
        finally:
            self.release(conn)


def connector(
    target: TargetSettings,
    db_user: str,
    credentials: CredentialProvider,
    rate: ConnectRate | None = None,
) -> Connector:
    """Return the connector opening hardened connections for ``(target, db_user)``."""
    return Connector(target, db_user, credentials, INIT_COMMAND, rate)


class PoolRegistry:
    """Every pool of the gateway, opened in the lifespan and closed on shutdown."""

    def __init__(self, targets: dict[str, TargetSettings], drift: DriftState | None = None) -> None:
        self._targets = targets
        self._pools: dict[tuple[str, str], ConnectionPool] = {}
        # The privilege check's verdicts: with drift: refuse, a drifting account is not served.
        self.drift = drift if drift is not None else DriftState()

    async def open(self) -> None:
        """Create one pool per configured ``(target, db_user)`` and warm ``min_size``."""
        for name, target in self._targets.items():
            rate = ConnectRate(name, target.pool.max_connects_per_second)
            for db_user in target.db_users():
                creds = provider_for(name, target, db_user)
                pool = ConnectionPool(f"{name}/{db_user}", connector(target, db_user, creds, rate), target.pool)
                self._pools[(name, db_user)] = pool
                await pool.warm(target.pool.min_size)

    def pools(self) -> dict[tuple[str, str], ConnectionPool]:
        """All pools by ``(target, db_user)`` (for readiness and metrics)."""
        return dict(self._pools)

    def pool_for(self, decision: Decision) -> ConnectionPool:
        """The pool of an allowing decision's ``(target, db_user)`` (for streams that hold a connection)."""
        if not decision.allowed or decision.db_user is None:
            raise Forbidden("no allowing decision")
        pool = self._pools.get((decision.target, decision.db_user))
        if pool is None:
            raise DatabaseUnavailable(
                f"no credentials configured for db_user {decision.db_user} on target {decision.target}"
            )
        refusal = self.drift.refusal(decision.target, decision.db_user)
        if refusal is not None:
            raise refusal
        return pool

    def connection(
        self, decision: Decision, waiting: AbstractContextManager[Any] = _NOTHING
    ) -> contextlib.AbstractAsyncContextManager[Pooled]:
        """Hold a connection for an allowing decision's ``(target, db_user)``."""
        return self.pool_for(decision).connection(waiting)

    async def close(self) -> None:
        """Close every pool."""
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
