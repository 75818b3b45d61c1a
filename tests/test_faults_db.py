"""Fault suite: MariaDB restarted under load, and an idle pool across a restart (private server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import RunningGateway, start_gateway, stop_gateway
from faultfixture import Measure, PrivateDatabase, audit_by_request, fault_settings, records_lost
from faultload import Reply, count, drive, malformed, mixed, tally, until
from oidcfixture import OidcProvider

pytestmark = pytest.mark.faults

RECOVERY_BOUND = 10.0  # seconds after MariaDB is back by which requests must succeed again
LOAD_BOUND = 30.0  # seconds for the load to warm up, and for the outage to reach it
WARM = 20  # successful requests before the fault, and after recovery


def _written_notes(private_db: PrivateDatabase, prefix: str) -> set[str]:
    rows = private_db.server.query(
        f"SELECT note FROM {private_db.db.name}.orders WHERE note LIKE %s",
        (f"{prefix}-%",),
    )
    return {str(row[0]) for row in rows}


def test_mariadb_restart_under_load(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """MariaDB restarted under load: clear 503s while it is down, recovery by itself once it is back.

    The timeline waits on what the load sees, not on the clock: MariaDB is
    stopped once WARM requests succeeded, started again once requests sent
    while it was down got a 503 database_unavailable (so the outage really
    reached the callers), and the load ends once WARM requests sent after it
    is back succeeded, within RECOVERY_BOUND seconds, without a restart of the
    gateway. No hang, no 500; nothing runs unaudited, no record is lost.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    tokens = {"reader": idp.token("reader"), "writer": idp.token("writer")}
    marks: dict[str, float] = {}

    async def scenario() -> list[Reply]:
        stop, live = asyncio.Event(), list[Reply]()
        load = asyncio.create_task(
            drive(gw.url, mixed(tokens), clients=8, prefix="restart", stop=stop, pause=0.01, replies=live)
        )
        try:
            await until(lambda: count(live, "ok") >= WARM, LOAD_BOUND, f"{WARM} requests succeeded before the fault")
            marks["down"] = time.monotonic()
            await asyncio.to_thread(private_db.server.stop)
            marks["stopped"] = time.monotonic()
            outage = "a request sent while MariaDB was down got 503 database_unavailable"
            await until(lambda: count(live, "database_unavailable", since=marks["stopped"]) > 0, LOAD_BOUND, outage)
            await asyncio.to_thread(private_db.server.start)
            marks["back"] = time.monotonic()
            recovered = f"{WARM} requests sent after MariaDB was back succeeded"
            await until(lambda: count(live, "ok", since=marks["back"]) >= WARM, RECOVERY_BOUND, recovered)
        finally:
            stop.set()
        return await load

    try:
        replies = asyncio.run(scenario())
    finally:
        stop_gateway(gw)
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    before = [r for r in replies if r.ended < marks["down"]]
    after = [r for r in replies if r.started > marks["back"]]
    first_ok = min((r.ended for r in after if r.code == "ok"), default=None)
    fault_report.notes["recovered_after_s"] = None if first_ok is None else round(first_ok - marks["back"], 2)
    during = count(replies, "database_unavailable", since=marks["stopped"], until=marks["back"])
    fault_report.notes["unavailable_while_down"] = during
    late_errors = [r for r in after if r.code not in {"ok", "forbidden"}]
    fault_report.notes["errors_after_back"] = tally(late_errors)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", replies)
    assert malformed(replies) == []
    assert {r.label for r in replies} <= {"200 ok", "403 forbidden", "503 database_unavailable"}
    assert {r.label for r in before} <= {"200 ok", "403 forbidden"}
    assert during > 0  # the fault happened: requests made and answered while MariaDB was down got the 503
    assert late_errors == [], late_errors[:5]
    assert fault_report.records_lost == 0
    written = _written_notes(private_db, "restart")
    ok_writes = {r.request_id for r in replies if r.job == "write" and r.code == "ok"}
    assert ok_writes
    assert ok_writes <= written
    records = audit_by_request(tmp_path / "audit.db")
    unrecorded = [n for n in written if not any(e == "decision" and d == "allow" for e, d, _ in records[n])]
    assert unrecorded == []


def _idle(gw: RunningGateway) -> int:
    return sum(pool.idle for pool in gw.services.pools.pools().values())


def test_idle_pool_across_restart(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """Idle pooled connections broken by a MariaDB restart are never handed out.

    The pool holds idle connections, and the restart really broke them (the
    server has none of the gateway's sessions afterwards while the pool still
    holds them); the first requests after the server is back all succeed: the
    pool drops the dead connections instead of failing one request on each.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    tokens = {"reader": idp.token("reader"), "writer": idp.token("writer")}
    pick = mixed(tokens, writes=5, denied=0)
    try:
        warm = asyncio.run(drive(gw.url, pick, clients=4, prefix="idle-warm", per_client=5))
        idle_before, sessions_before = _idle(gw), private_db.gateway_threads()
        private_db.server.stop()
        private_db.server.start()
        idle_after, sessions_after = _idle(gw), private_db.gateway_threads()
        replies = asyncio.run(drive(gw.url, pick, clients=1, prefix="idle-after", per_client=12))
    finally:
        stop_gateway(gw)
    fault_report.requests = len(warm) + len(replies)
    fault_report.replies = tally(warm + replies)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", warm + replies)
    fault_report.notes.update(idle_before=idle_before, sessions_before=sessions_before, idle_after=idle_after)
    assert malformed(warm + replies) == []
    assert tally(warm) == {"200 ok": 20}
    assert idle_before > 0
    assert sessions_before >= idle_before
    assert (idle_after, sessions_after) == (idle_before, 0)  # the fault: every pooled connection is dead
    assert tally(replies) == {"200 ok": 12}, [r.detail for r in replies if r.code != "ok"]
    assert fault_report.records_lost == 0
