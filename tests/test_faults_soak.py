"""Fault suite: the soak. ``GATEWAY_SOAK_SECONDS`` long (60 in ``make test``, 300 in ``make soak``), 64 clients."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

import pytest
from conftest import USERS
from faultfixture import Measure, PrivateDatabase, audit_by_request, fault_settings, records_lost
from faultload import Reply, drive, malformed, mixed, tally
from faultserve import ServedGateway, served_gateway
from oidcfixture import running_provider

pytestmark = pytest.mark.faults

CLIENTS = 64
SECONDS = float(os.environ.get("GATEWAY_SOAK_SECONDS", "60"))
WARM_UP = max(10.0, SECONDS * 0.2)  # imports, caches, pools and allocator arenas settle first
WINDOW = 5  # samples (one a second) averaged at each end of the measured stretch
MAX_RSS_GROWTH = 0.10
POOL_MAX = 8
WELL_FORMED = {"200 ok", "403 forbidden", "503 pool_exhausted"}


async def _soak(
    gw: ServedGateway, tokens: dict[str, str], private_db: PrivateDatabase
) -> tuple[list[Reply], list[dict[str, float]]]:
    """Run the load; sample RSS, open files and the gateway's MariaDB connections every second."""
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    load = asyncio.create_task(drive(gw.url, mixed(tokens), clients=CLIENTS, prefix="soak", duration=SECONDS))
    while not load.done():
        samples.append(
            {
                "t": time.monotonic() - started,
                "rss_kb": gw.rss_kb(),
                "fds": gw.open_files(),
                "db_connections": await asyncio.to_thread(private_db.gateway_threads),
            }
        )
        await asyncio.wait({load}, timeout=1.0)
    return await load, samples


def _ends(samples: list[dict[str, float]], key: str) -> tuple[float, float]:
    """Median of ``key`` just after warm-up and at the end."""
    measured = [s[key] for s in samples if s["t"] >= WARM_UP]
    return statistics.median(measured[:WINDOW]), statistics.median(measured[-WINDOW:])


@pytest.mark.slow  # one of the longest fault tests: `make test-long`, `make test-faults`
def test_soak(tmp_path: Path, private_db: PrivateDatabase, fault_report: Measure) -> None:
    """64 clients for GATEWAY_SOAK_SECONDS with reads, writes and denied statements: nothing leaks, all audited.

    After warm-up the gateway's RSS grows by less than 10 %, its open file
    descriptors and its MariaDB connections stay flat (and within the pools'
    sizes); every reply is well formed (200, 403 for the denied statements,
    at most a 503 pool_exhausted); after a graceful stop the audit store holds
    exactly the records the replies call for, and the table exactly the
    writes that succeeded.
    """
    assert SECONDS > WARM_UP + 2 * WINDOW, "GATEWAY_SOAK_SECONDS is too short to measure growth after warm-up"
    with running_provider(users=USERS, access_token_ttl=int(SECONDS) + 600) as idp:
        tokens = {"reader": idp.token("reader"), "writer": idp.token("writer")}
        settings = fault_settings(tmp_path, idp, private_db, pool={"max_size": POOL_MAX, "acquire_timeout": 5})
        with served_gateway(settings, tmp_path, private_db.env, tokens["reader"], quiet=True) as gw:
            replies, samples = asyncio.run(_soak(gw, tokens, private_db))
            gw.terminate()
            gw.wait()
    rss = _ends(samples, "rss_kb")
    fds = _ends(samples, "fds")
    connections = _ends(samples, "db_connections")
    growth = (rss[1] - rss[0]) / rss[0]
    records = audit_by_request(tmp_path / "audit.db")
    expected = 2 + sum(2 if r.code == "ok" else 1 for r in replies)  # the readiness probe's two, then the load's
    stored = sum(len(events) for events in records.values())
    table = f"{private_db.db.name}.orders"
    written = private_db.server.query(f"SELECT COUNT(*) FROM {table} WHERE note LIKE %s", ("soak-%",))[0][0]
    ok_writes = sum(1 for r in replies if r.job == "write" and r.code == "ok")
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", replies)
    fault_report.notes.update(
        seconds=SECONDS,
        clients=CLIENTS,
        rps=round(len(replies) / SECONDS),
        rss_mib=f"{rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} ({growth:+.1%})",
        fds=f"{fds[0]:g} -> {fds[1]:g} (max {max(s['fds'] for s in samples):g})",
        db_connections=f"{connections[0]:g} -> {connections[1]:g} (max {max(s['db_connections'] for s in samples):g})",
        records=f"{stored} stored / {expected} expected",
        writes=f"{written} rows / {ok_writes} ok",
    )
    assert malformed(replies) == []
    assert set(tally(replies)) <= WELL_FORMED
    assert growth < MAX_RSS_GROWTH
    assert abs(fds[1] - fds[0]) <= 4
    assert max(s["db_connections"] for s in samples) <= 2 * POOL_MAX  # reader and writer pools
    assert connections[1] <= connections[0] + 1
    assert fault_report.records_lost == 0
    assert stored == expected
    assert written == ok_writes
