"""Fault suite: SIGTERM to the real ``gateway serve`` under load."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from faultfixture import Measure, PrivateDatabase, audit_by_request, fault_settings, records_lost
from faultload import Reply, count, drive, malformed, mixed, tally, until
from faultproxy import FaultProxy
from faultserve import ServedGateway, audit_verify, served_gateway
from oidcfixture import OidcProvider
from processes import children, ended

pytestmark = pytest.mark.faults

CLIENTS = 32
DRAIN_BOUND = 35.0  # uvicorn's graceful shutdown (30 s) plus the lifespan's close, with margin
SENT_MARGIN = 0.5  # seconds
DELAY = 0.1  # each chunk to MariaDB held back: every statement is in flight >= 0.2 s
WARM_BOUND = 30.0  # seconds for the load to warm up before the signal


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_sigterm_under_load_drains_and_loses_no_record(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure, writer: str
) -> None:
    """SIGTERM mid-load: stop accepting, finish what is in flight, flush the audit log, exit in time.

    With either audit writer (``audit.writer``); with ``process``, the store's
    child process ends with the gateway, after the last batch.

    ``gateway serve`` runs as a subprocess against the private MariaDB over a
    slow link, so statements are in flight when SIGTERM lands. Afterwards:
    new connections are refused; every request sent before the signal got a
    complete reply (no transport error); the process exits within the drain
    bound, its lifespan shutdown done; every answered request has all its audit records
    (a decision, and an outcome for each allowed one), no request has a
    decision without its outcome, and ``gateway audit verify`` passes.
    """
    tokens = {"reader": idp.token("reader"), "writer": idp.token("writer")}
    with FaultProxy("127.0.0.1", private_db.server.port) as proxy:
        audit = {"path": tmp_path / "audit.db", "writer": writer}
        settings = fault_settings(tmp_path, idp, private_db, port=proxy.port, pool={"max_size": 8}, audit=audit)
        with served_gateway(settings, tmp_path, private_db.env, tokens["reader"]) as gw:
            kids = children(gw.pid)
            # The audit store's process (and, with it, multiprocessing's resource tracker).
            stores = [c for c in kids if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
            assert len(stores) == (1 if writer == "process" else 0), kids
            proxy.slow(DELAY)
            replies, marks, refused_after = asyncio.run(_load_then_terminate(gw, tokens))
            code = gw.wait()
    assert all(ended(child, 10.0) for child in kids), "a child process outlived the gateway"
    verify = audit_verify(gw.config)
    answered = [r for r in replies if r.status is not None]
    in_flight = [r for r in answered if r.started < marks["signal"] < r.ended]
    # Sent well before the signal (the margin covers a busy client loop): each must have been answered.
    dropped = [r for r in replies if r.status is None and r.started < marks["signal"] - SENT_MARGIN]
    records = audit_by_request(tmp_path / "audit.db")
    half_recorded = [
        rid
        for rid, events in records.items()
        if any(e == "decision" and d == "allow" for e, d, _ in events) and not any(e == "outcome" for e, _, _ in events)
    ]
    # Exactly the records the replies call for: two per allowed request, one per denial, two for the readiness probe.
    expected = 2 + sum(2 if r.code == "ok" else 1 for r in answered)
    stored = sum(len(events) for events in records.values())
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", replies) + len(half_recorded)
    fault_report.notes["records"] = f"{stored} stored / {expected} expected"
    fault_report.notes["in_flight_at_signal"] = len(in_flight)
    fault_report.notes["exit_s"] = round(marks["exited"] - marks["signal"], 2)
    fault_report.notes["refused_after_signal"] = refused_after
    fault_report.notes["verify"] = verify.stdout.strip()
    # uvicorn re-raises the signal once its shutdown is done: "terminated by SIGTERM" after a clean stop.
    assert code in {0, -signal.SIGTERM}, gw.log_tail()
    assert '"event":"gateway_stopped"' in gw.log_tail(500)
    assert marks["exited"] - marks["signal"] < DRAIN_BOUND
    assert malformed(replies) == []
    assert {r.label for r in answered} <= {"200 ok", "403 forbidden"}
    assert in_flight, "no request was in flight when SIGTERM landed"
    assert dropped == []
    assert refused_after > 0
    assert half_recorded == []
    assert stored == expected
    assert fault_report.records_lost == 0
    assert verify.returncode == 0, verify.stderr


async def _load_then_terminate(gw: ServedGateway, tokens: dict[str, str]) -> tuple[list[Reply], dict[str, float], int]:
    """Load the gateway, SIGTERM it once CLIENTS requests succeeded, probe for new connections until it exits."""
    marks: dict[str, float] = {}
    refused_after = 0
    stop = asyncio.Event()
    live: list[Reply] = []
    load = asyncio.create_task(
        drive(gw.url, mixed(tokens), clients=CLIENTS, prefix="term", stop=stop, pause=0.02, replies=live)
    )
    await until(lambda: count(live, "ok") >= CLIENTS, WARM_BOUND, f"{CLIENTS} requests succeeded before SIGTERM")
    marks["signal"] = time.monotonic()
    gw.terminate()
    while gw.process.poll() is None and time.monotonic() - marks["signal"] < DRAIN_BOUND:
        try:
            async with httpx.AsyncClient(timeout=2) as probe:
                await probe.get(f"{gw.url}/healthz")
        except httpx.ConnectError:
            refused_after += 1
        except (httpx.RemoteProtocolError, httpx.ReadError):
            pass  # accepted just before the listener closed, then dropped: not served, not counted as refused
        await asyncio.sleep(0.05)
    marks["exited"] = time.monotonic()
    stop.set()
    return await load, marks, refused_after
