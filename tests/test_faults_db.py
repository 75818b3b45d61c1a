"""Fault suite: MariaDB restarted under load, and an idle pool across a restart (private server)."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import start_gateway, stop_gateway
from faultfixture import audit_by_request, fault_settings, records_lost
from faultload import Reply, drive, malformed, mixed, tally

pytestmark = pytest.mark.faults

RECOVERY_BOUND = 10.0  # seconds after MariaDB is back by which requests must succeed again


def _written_notes(private_db, prefix: str) -> set[str]:
    rows = private_db.server.query(
        f"SELECT note FROM {private_db.db.name}.orders WHERE note LIKE %s",
        (f"{prefix}-%",),
    )
    return {row[0] for row in rows}


def test_mariadb_restart_under_load(tmp_path, idp, private_db, fault_report):
    """MariaDB restarted under load: clear 503s while it is down, recovery by itself once it is back.

    Requests in flight get a well-formed 503 database_unavailable (no hang, no
    500); every request started once MariaDB is back succeeds, within seconds,
    without a restart of the gateway; nothing runs unaudited, no record is lost.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    tokens = {"reader": idp.token("reader"), "writer": idp.token("writer")}
    marks: dict[str, float] = {}

    async def scenario() -> list[Reply]:
        stop = asyncio.Event()
        load = asyncio.create_task(drive(gw.url, mixed(tokens), clients=8, prefix="restart", stop=stop, pause=0.01))
        await asyncio.sleep(1.5)
        marks["down"] = time.monotonic()
        await asyncio.to_thread(private_db.server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_db.server.start)
        marks["back"] = time.monotonic()
        await asyncio.sleep(4.0)
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
    late_errors = [r for r in after if r.code not in {"ok", "forbidden"}]
    fault_report.notes["errors_after_back"] = tally(late_errors)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", replies)
    assert malformed(replies) == []
    assert {r.label for r in replies} <= {"200 ok", "403 forbidden", "503 database_unavailable"}
    assert {r.label for r in before} <= {"200 ok", "403 forbidden"}
    assert first_ok is not None
    assert first_ok - marks["back"] < RECOVERY_BOUND
    assert late_errors == [], late_errors[:5]
    assert fault_report.records_lost == 0
    written = _written_notes(private_db, "restart")
    ok_writes = {r.request_id for r in replies if r.job == "write" and r.code == "ok"}
    assert ok_writes <= written
    records = audit_by_request(tmp_path / "audit.db")
    unrecorded = [n for n in written if not any(e == "decision" and d == "allow" for e, d, _ in records[n])]
    assert unrecorded == []


def test_idle_pool_across_restart(tmp_path, idp, private_db, fault_report):
    """Idle pooled connections broken by a MariaDB restart are never handed out.

    The first requests after the server is back all succeed: the pool drops
    the dead connections instead of failing one request on each.
    """
    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db)
    tokens = {"reader": idp.token("reader"), "writer": idp.token("writer")}
    pick = mixed(tokens, writes=5, denied=0)
    try:
        warm = asyncio.run(drive(gw.url, pick, clients=4, prefix="idle-warm", per_client=5))
        private_db.server.stop()
        private_db.server.start()
        replies = asyncio.run(drive(gw.url, pick, clients=1, prefix="idle-after", per_client=12))
    finally:
        stop_gateway(gw)
    fault_report.requests = len(warm) + len(replies)
    fault_report.replies = tally(warm + replies)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", warm + replies)
    assert malformed(warm + replies) == []
    assert tally(warm) == {"200 ok": 20}
    assert tally(replies) == {"200 ok": 12}, [r.detail for r in replies if r.code != "ok"]
    assert fault_report.records_lost == 0
