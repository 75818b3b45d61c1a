"""Fault suite: connections killed server-side, and links cut, stalled or slowed by a proxy."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path

import pytest
from conftest import RunningGateway, start_gateway, stop_gateway
from faultfixture import Measure, PrivateDatabase, fault_settings, records_lost
from faultload import Job, Reply, count, drive, malformed, mixed, tally, until
from faultproxy import FaultProxy
from oidcfixture import OidcProvider

from gateway.db.pools import ConnectionPool

pytestmark = pytest.mark.faults

# About 10^9 rows to count: runs until the reader grant's 2 s statement timeout unless killed first.
LONG_READ = "SELECT COUNT(*) FROM items a, items b, items c"
NO_HANG = 12.0  # seconds: the longest any request may take here (statement timeout 2 s + 2 s grace, with margin)
PROGRESS_BOUND = 30.0  # seconds for the load to make progress, or for a fault to reach it


def _pools(gw: RunningGateway) -> list[ConnectionPool]:
    return list(gw.services.pools.pools().values())


def _gateway_threads(private_db: PrivateDatabase, *, command: str | None = None) -> list[tuple[int, str | None]]:
    users = [a.user for a in private_db.db.accounts.values()]
    marks = ", ".join(["%s"] * len(users))
    rows = private_db.server.query(
        f"SELECT id, info FROM information_schema.processlist WHERE user IN ({marks})",
        users,
    )
    return [(int(i), info) for i, info in rows if command is None or (info and command in info)]


def _tokens(idp: OidcProvider) -> dict[str, str]:
    return {"reader": idp.token("reader"), "writer": idp.token("writer")}


def test_kill_idle_and_in_flight(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """KILL from the server, on idle connections and on ones running a statement.

    A killed idle connection is never handed out (the next requests all
    succeed); a statement whose connection is killed mid-flight gets a
    well-formed 503 database_unavailable at once, one whose query is killed
    a 504 statement_timeout at once; the pool heals.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    tokens = _tokens(idp)
    pick = mixed(tokens, writes=5, denied=0)
    long_read = Job("long", tokens["reader"], {"target": "shop", "sql": LONG_READ})
    try:
        warm = asyncio.run(drive(gw.url, pick, clients=4, prefix="kill-warm", per_client=4))
        killed = 0
        for thread_id, _ in _gateway_threads(private_db):
            private_db.server.query(f"KILL CONNECTION {thread_id}")
            killed += 1
        after_idle = asyncio.run(drive(gw.url, pick, clients=1, prefix="kill-idle", per_client=8))

        async def kill_in_flight(what: str) -> list[Reply]:
            load = asyncio.create_task(
                drive(gw.url, lambda _n, _rid: long_read, clients=1, prefix=f"kill-{what.lower()}", per_client=1)
            )
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # until the statement shows in the processlist
                if _gateway_threads(private_db, command="COUNT(*)"):
                    break
                await asyncio.sleep(0.05)
            for thread_id, _ in _gateway_threads(private_db, command="COUNT(*)"):
                private_db.server.query(f"KILL {what} {thread_id}")
            return await load

        in_flight = asyncio.run(kill_in_flight("CONNECTION"))
        query_killed = asyncio.run(kill_in_flight("QUERY"))
        healed = asyncio.run(drive(gw.url, pick, clients=2, prefix="kill-healed", per_client=5))
    finally:
        stop_gateway(gw)
    everything = warm + after_idle + in_flight + query_killed + healed
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", everything)
    fault_report.notes["killed_idle"] = killed
    fault_report.notes["connection_killed_in_flight"] = tally(in_flight)
    fault_report.notes["query_killed_in_flight"] = tally(query_killed)
    assert killed >= 2
    assert malformed(everything) == []
    assert tally(after_idle) == {"200 ok": 8}
    assert tally(in_flight) == {"503 database_unavailable": 1}
    # MariaDB answers KILL QUERY with 1317 "interrupted", which the gateway reports as a statement timeout.
    assert tally(query_killed) == {"504 statement_timeout": 1}
    assert "interrupted" in (query_killed[0].detail or "")  # killed, not timed out (max_statement_time)
    assert max(r.seconds for r in in_flight + query_killed) < NO_HANG
    assert tally(healed) == {"200 ok": 10}
    assert fault_report.records_lost == 0


def _grew(replies: list[Reply], to: int) -> bool:
    return len(replies) >= to


@pytest.mark.slow  # one of the longest fault tests: `make test-long`, `make test-faults`
def test_kill_under_load(tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure) -> None:
    """Connections killed server-side again and again under load.

    Only well-formed database_unavailable errors, no hang; once the killing
    stops every request succeeds.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    tokens = _tokens(idp)
    kills = 0

    async def scenario() -> tuple[list[Reply], list[Reply]]:
        nonlocal kills
        stop, live = asyncio.Event(), list[Reply]()
        load = asyncio.create_task(
            drive(gw.url, mixed(tokens), clients=8, prefix="killload", stop=stop, pause=0.01, replies=live)
        )
        for _ in range(10):  # each round once the load has made progress since the last one (new replies)
            await until(
                functools.partial(_grew, live, len(live) + 4), PROGRESS_BOUND, "the load answered between kills"
            )
            for thread_id, _info in await asyncio.to_thread(_gateway_threads, private_db):
                try:
                    await asyncio.to_thread(private_db.server.query, f"KILL CONNECTION {thread_id}")
                    kills += 1
                except Exception:  # noqa: BLE001, S112 - the connection may have ended already
                    continue
        stop.set()
        during = await load
        after = await drive(gw.url, mixed(tokens), clients=4, prefix="killload-after", per_client=10)
        return during, after

    try:
        during, after = asyncio.run(scenario())
    finally:
        stop_gateway(gw)
    fault_report.requests = len(during) + len(after)
    fault_report.replies = tally(during + after)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", during + after)
    fault_report.notes["kills"] = kills
    assert kills >= 5
    assert malformed(during + after) == []
    assert {r.label for r in during} <= {"200 ok", "403 forbidden", "503 database_unavailable"}
    assert max(r.seconds for r in during) < NO_HANG
    assert {r.label for r in after} <= {"200 ok", "403 forbidden"}
    assert fault_report.records_lost == 0


@pytest.mark.slow  # one of the longest fault tests: `make test-long`, `make test-faults`
def test_stall_then_resume(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """A link that stops answering (proxy stall, sockets kept open): timeouts fire, the pool heals.

    Statements in flight end with 504 statement_timeout, new connections with
    503 database_unavailable (connect timeout), waiters with 503
    pool_exhausted: all bounded in time, never a hang or a 500. Once the link
    resumes the pool heals by itself and every request succeeds.
    """
    with FaultProxy("127.0.0.1", private_db.server.port) as proxy:
        settings = fault_settings(tmp_path, idp, private_db, port=proxy.port)
        gw = start_gateway(settings, idp, private_db.db)
        tokens = _tokens(idp)
        pick = mixed(tokens, writes=0, denied=0)
        try:
            warm = asyncio.run(drive(gw.url, pick, clients=4, prefix="stall-warm", per_client=3))
            proxy.stall()
            stalled = asyncio.run(drive(gw.url, pick, clients=8, prefix="stall", duration=5))
            proxy.resume()
            started = time.monotonic()
            healed = asyncio.run(drive(gw.url, pick, clients=4, prefix="stall-healed", per_client=5))
            heal_seconds = time.monotonic() - started
            sizes = [p.size for p in _pools(gw)]
        finally:
            stop_gateway(gw)
    everything = warm + stalled + healed
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", everything)
    fault_report.notes["stalled"] = tally(stalled)
    fault_report.notes["max_stalled_s"] = round(max(r.seconds for r in stalled), 2)
    fault_report.notes["heal_s"] = round(heal_seconds, 2)
    assert malformed(everything) == []
    assert tally(warm) == {"200 ok": 12}
    assert {r.label for r in stalled} <= {
        "504 statement_timeout",
        "503 database_unavailable",
        "503 pool_exhausted",
    }
    assert "504 statement_timeout" in tally(stalled)
    assert max(r.seconds for r in stalled) < NO_HANG
    assert tally(healed) == {"200 ok": 20}
    assert all(size <= settings.targets["shop"].pool.max_size for size in sizes)
    assert fault_report.records_lost == 0


def test_cut_and_down_then_resume(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """Links cut (RST) while idle, then the link down under load, then back.

    After the cut no dead connection is handed out. While down (new
    connections reset at once) only well-formed 503 database_unavailable,
    fast; once it is back the pool heals by itself.
    """
    with FaultProxy("127.0.0.1", private_db.server.port) as proxy:
        gw = start_gateway(fault_settings(tmp_path, idp, private_db, port=proxy.port), idp, private_db.db)
        tokens = _tokens(idp)
        pick = mixed(tokens)
        try:
            warm = asyncio.run(drive(gw.url, pick, clients=4, prefix="cut-warm", per_client=4))
            cut = proxy.cut()
            after_cut = asyncio.run(drive(gw.url, pick, clients=1, prefix="cut-idle", per_client=10))

            async def down_under_load() -> list[Reply]:
                stop, live = asyncio.Event(), list[Reply]()
                load = asyncio.create_task(
                    drive(gw.url, pick, clients=8, prefix="down", stop=stop, pause=0.01, replies=live)
                )
                try:
                    await until(lambda: count(live, "ok") >= 8, PROGRESS_BOUND, "8 requests succeeded before the fault")
                    await asyncio.to_thread(proxy.down)
                    down_at = time.monotonic()
                    reached = "8 requests sent while the link was down got 503 database_unavailable"
                    await until(
                        lambda: count(live, "database_unavailable", since=down_at) >= 8, PROGRESS_BOUND, reached
                    )
                finally:
                    stop.set()
                return await load

            down = asyncio.run(down_under_load())
            proxy.resume()
            healed = asyncio.run(drive(gw.url, pick, clients=4, prefix="cut-healed", per_client=5))
        finally:
            stop_gateway(gw)
    everything = warm + after_cut + down + healed
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", everything)
    fault_report.notes["links_cut"] = cut
    fault_report.notes["down"] = tally(down)
    assert cut >= 2
    assert malformed(everything) == []
    assert {r.label for r in after_cut} == {"200 ok", "403 forbidden"}
    assert {r.label for r in down} <= {"200 ok", "403 forbidden", "503 database_unavailable"}
    assert "503 database_unavailable" in tally(down)
    assert max(r.seconds for r in down) < NO_HANG
    assert {r.label for r in healed} == {"200 ok", "403 forbidden"}
    assert fault_report.records_lost == 0


def test_slow_link(tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure) -> None:
    """A slow link (every chunk 50 ms late each way) only makes requests slower: all succeed."""
    with FaultProxy("127.0.0.1", private_db.server.port) as proxy:
        gw = start_gateway(fault_settings(tmp_path, idp, private_db, port=proxy.port), idp, private_db.db)
        try:
            proxy.slow(0.05)
            replies = asyncio.run(drive(gw.url, mixed(_tokens(idp)), clients=4, prefix="slow", per_client=8))
        finally:
            stop_gateway(gw)
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.notes["median_s"] = round(sorted(r.seconds for r in replies)[len(replies) // 2], 3)
    assert malformed(replies) == []
    assert {r.label for r in replies} == {"200 ok", "403 forbidden"}
