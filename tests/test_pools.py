"""The connection pool against a real MariaDB: hardening, FIFO fairness, discard, limits."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncmy.errors import ProgrammingError
from conftest import DB_HOST, DB_PORT, ScratchDatabase

from gateway.db.fakecredentials import StaticCredentials
from gateway.db.pools import ConnectionPool, PoolRegistry, connector
from gateway.errors import DatabaseUnavailable, Forbidden, PoolExhausted
from gateway.policy.decide import Decision
from gateway.settings import PoolSettings, SecretSource, TargetSettings

LOOP_TURNS = 1000  # event loop turns for the pool's waiting line to reach the state a test needs


def _target(db: ScratchDatabase, **pool: Any) -> TargetSettings:
    return TargetSettings(
        host=DB_HOST,
        port=DB_PORT,
        database=db.name,
        pool=PoolSettings(**pool),
        secrets={db.accounts["reader"].user: SecretSource(env="GWTEST_POOL_PW")},
    )


async def _waiting(pool: ConnectionPool, count: int) -> None:
    """Let the loop run until ``count`` tasks wait in ``pool``'s line (a bounded number of turns, no clock)."""
    for _ in range(LOOP_TURNS):
        if pool.waiting == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{pool.waiting} waiting in the pool's line, not {count}")


def _pool(db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch, **limits: Any) -> ConnectionPool:
    del monkeypatch  # the fake credential provider needs no environment
    target = _target(db, **limits)
    user = db.accounts["reader"].user
    return ConnectionPool(
        "test", connector(target, user, StaticCredentials(db.accounts["reader"].password)), target.pool
    )


@pytest.mark.anyio
async def test_multi_statements_refused_by_mariadb(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's multi-statements flag is cleared: MariaDB itself refuses a second statement."""
    pool = _pool(test_db, monkeypatch)
    async with pool.connection() as conn:
        with pytest.raises(ProgrammingError) as err:
            await conn.raw.query("SELECT 1; SELECT 2")
        assert err.value.args[0] == 1064
    await pool.close()


@pytest.mark.anyio
async def test_session_is_pinned(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each connection has the pinned sql_mode, utf8mb4, autocommit on and UTC."""
    pool = _pool(test_db, monkeypatch)
    async with pool.connection() as conn:
        cur = conn.raw.cursor()
        await cur.execute("SELECT @@session.sql_mode, @@character_set_client, @@autocommit, @@time_zone")
        mode, charset, autocommit, tz = await cur.fetchone()
        assert "ANSI_QUOTES" not in mode
        assert "NO_BACKSLASH_ESCAPES" not in mode
        assert "STRICT_TRANS_TABLES" in mode
        assert charset == "utf8mb4"
        assert autocommit == 1
        assert tz == "+00:00"
        await cur.execute("SELECT @@local_infile")  # the server may allow it; the client flag must not
        assert not conn.raw._local_infile
    await pool.close()


@pytest.mark.anyio
async def test_fifo_handoff(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one connection, waiters are served strictly in arrival order."""
    pool = _pool(test_db, monkeypatch, max_size=1)
    order: list[int] = []

    async def worker(n: int) -> None:
        async with pool.connection() as conn:
            order.append(n)
            await conn.raw.ping(reconnect=False)

    first = await pool.acquire()
    tasks = [asyncio.create_task(worker(n)) for n in range(8)]
    await _waiting(pool, 8)
    pool.release(first)
    await asyncio.gather(*tasks)
    assert order == list(range(8))
    assert pool.size == 1
    await pool.close()


@pytest.mark.anyio
async def test_discarded_connection_is_never_reused(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection marked discard is closed; the next user gets a new MariaDB session."""
    pool = _pool(test_db, monkeypatch, max_size=1)
    conn = await pool.acquire()
    first_id = conn.thread_id
    conn.discard = True
    pool.release(conn)
    assert pool.size == 0
    async with pool.connection() as again:
        assert again.thread_id != first_id
    await pool.close()


@pytest.mark.anyio
async def test_error_in_block_discards(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception while a connection is held throws the connection away."""
    pool = _pool(test_db, monkeypatch, max_size=1)
    with pytest.raises(RuntimeError):
        async with pool.connection():
            raise RuntimeError
    assert pool.size == 0
    assert pool.in_use == 0
    await pool.close()


@pytest.mark.anyio
async def test_acquire_timeout_is_pool_exhausted(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection within the acquire timeout -> PoolExhausted; the waiter leaves the line."""
    pool = _pool(test_db, monkeypatch, max_size=1, acquire_timeout=0.2)
    held = await pool.acquire()
    with pytest.raises(PoolExhausted):
        await pool.acquire()
    assert pool.waiting == 0
    pool.release(held)
    await pool.close()


@pytest.mark.anyio
async def test_waiting_line_is_bounded(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past max_waiting, a request is refused at once instead of queueing without bound."""
    pool = _pool(test_db, monkeypatch, max_size=1, max_waiting=2, acquire_timeout=1)
    held = await pool.acquire()
    waiters = [asyncio.create_task(pool.acquire()) for _ in range(2)]
    await _waiting(pool, 2)
    with pytest.raises(PoolExhausted):
        await pool.acquire()
    pool.release(held)
    for task in waiters:
        pool.release(await task)
    await pool.close()


@pytest.mark.anyio
async def test_cancelled_waiter_does_not_leak(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter cancelled (client gone) leaves no hole: the pool still serves everyone after."""
    pool = _pool(test_db, monkeypatch, max_size=1)
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await _waiting(pool, 1)
    waiter.cancel()
    pool.release(held)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with pool.connection():
        assert pool.in_use == 1
    assert pool.in_use == 0
    assert pool.size <= 1
    await pool.close()


@pytest.mark.anyio
async def test_lifetime_cap(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection older than max_lifetime is closed on return rather than reused."""
    now = [0.0]
    target = _target(test_db, max_size=1, max_lifetime=10)
    credentials = StaticCredentials(test_db.accounts["reader"].password)
    pool = ConnectionPool(
        "t", connector(target, test_db.accounts["reader"].user, credentials), target.pool, clock=lambda: now[0]
    )
    conn = await pool.acquire()
    first = conn.thread_id
    now[0] = 11.0
    pool.release(conn)
    async with pool.connection() as fresh:
        assert fresh.thread_id != first
    await pool.close()


@pytest.mark.anyio
async def test_bad_password_is_database_unavailable_without_the_secret(
    test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused login is database_unavailable naming the cause, never the password; the provider hears of it."""
    target = _target(test_db)
    credentials = StaticCredentials("wrong-password-123", source="the test's wrong password")
    pool = ConnectionPool("t", connector(target, test_db.accounts["reader"].user, credentials), target.pool)
    with pytest.raises(DatabaseUnavailable) as err:
        await pool.acquire()
    assert "1045" in err.value.detail
    assert "wrong-password-123" not in err.value.detail
    assert "the test's wrong password" in err.value.detail
    assert credentials.invalidated >= 1
    assert pool.size == 0
    await pool.close()


@pytest.mark.anyio
async def test_registry_needs_an_allowing_decision(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry hands out connections only for an allowing decision's (target, db_user)."""
    monkeypatch.setenv("GWTEST_POOL_PW", test_db.accounts["reader"].password)
    registry = PoolRegistry({"shop": _target(test_db)})
    await registry.open()
    user = test_db.accounts["reader"].user
    denied = Decision(allowed=False, code="forbidden", reason="no", target="shop")
    with pytest.raises(Forbidden, match="no allowing decision"):
        registry.connection(denied)
    allowed = Decision(allowed=True, code="allowed", reason="ok", target="shop", grant="g", db_user=user)
    async with registry.connection(allowed) as conn:
        await conn.raw.ping(reconnect=False)
    unknown = Decision(allowed=True, code="allowed", reason="ok", target="shop", grant="g", db_user="nobody")
    with pytest.raises(DatabaseUnavailable):
        registry.connection(unknown)
    await registry.close()


@pytest.mark.anyio
async def test_warm_up_opens_min_size_connections(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """`min_size: 3` opens three connections at start-up (it used to open one, three times)."""
    monkeypatch.setenv("GWTEST_POOL_PW", test_db.accounts["reader"].password)
    registry = PoolRegistry({"shop": _target(test_db, min_size=3, max_size=5)})
    await registry.open()
    try:
        pool = registry.pools()[("shop", test_db.accounts["reader"].user)]
        assert (pool.size, pool.idle) == (3, 3)
    finally:
        await registry.close()
