"""Fault suite: pool exhaustion at ten times the pool size in clients."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from conftest import start_gateway, stop_gateway
from faultfixture import Measure, PrivateDatabase, fault_settings, records_lost
from faultload import Reply, drive, malformed, mixed, tally
from faultproxy import FaultProxy
from oidcfixture import OidcProvider

pytestmark = pytest.mark.faults

POOL_SIZE = 4
CLIENTS = 10 * POOL_SIZE
ACQUIRE_TIMEOUT = 1.0
MAX_WAITING = 20
DELAY = 0.1  # seconds each chunk is held back each way: a statement holds its connection >= 0.2 s


def test_pool_exhaustion_at_ten_times_pool_size(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """Forty clients on a pool of four, over a slow link: bounded waits, pool_exhausted, nothing else.

    Every request ends within the acquire timeout plus one statement (with
    margin); the only error is 503 pool_exhausted with Retry-After (from the
    acquire timeout and from the cap on waiters); the pool never opens more
    than its size nor queues more than its cap; once the crowd is gone every
    request succeeds.
    """
    with FaultProxy("127.0.0.1", private_db.server.port) as proxy:
        pool = {"max_size": POOL_SIZE, "acquire_timeout": ACQUIRE_TIMEOUT, "max_waiting": MAX_WAITING}
        settings = fault_settings(tmp_path, idp, private_db, port=proxy.port, pool=pool)
        gw = start_gateway(settings, idp, private_db.db)
        pools = gw.services.pools.pools()
        reads = mixed({"reader": idp.token("reader"), "writer": idp.token("writer")}, writes=0, denied=0)
        samples: list[tuple[int, int]] = []

        async def crowd() -> list[Reply]:
            stop = asyncio.Event()
            load = asyncio.create_task(drive(gw.url, reads, clients=CLIENTS, prefix="crowd", duration=4, stop=stop))
            while not load.done():
                samples.extend((p.size, p.waiting) for p in pools.values())
                await asyncio.sleep(0.05)
            return await load

        try:
            proxy.slow(DELAY)
            crowded = asyncio.run(crowd())
            proxy.resume()
            after = asyncio.run(drive(gw.url, reads, clients=4, prefix="crowd-after", per_client=5))
        finally:
            stop_gateway(gw)
    everything = crowded + after
    details = Counter(
        "cap on waiters" if "too many" in (r.detail or "") else "acquire timeout"
        for r in crowded
        if r.code == "pool_exhausted"
    )
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", everything)
    fault_report.notes["pool_exhausted_by"] = dict(details)
    fault_report.notes["max_s"] = round(max(r.seconds for r in crowded), 2)
    fault_report.notes["max_size_seen"] = max(s for s, _ in samples)
    fault_report.notes["max_waiting_seen"] = max(w for _, w in samples)
    assert malformed(everything) == []
    assert set(tally(crowded)) == {"200 ok", "503 pool_exhausted"}
    # Bounded waits: nothing hung (a hang is a transport timeout, which set(tally) above rules out),
    # and the slowest reply is the acquire wait plus one slow statement, with a margin for a loaded CI
    # machine that is still well under the clients' own timeout.
    assert max(r.seconds for r in crowded) < ACQUIRE_TIMEOUT + 8.0
    assert max(s for s, _ in samples) <= POOL_SIZE
    assert max(w for _, w in samples) <= MAX_WAITING
    assert tally(after) == {"200 ok": 20}
    assert fault_report.records_lost == 0
