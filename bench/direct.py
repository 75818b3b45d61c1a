"""Reference: a direct asyncmy loop, one connection per client, no HTTP at all.

``python -m bench.direct CASE CLIENTS SECONDS`` prints one ``BENCH {...}`` JSON
line in the wrk script's format: the ceiling MariaDB and the driver allow.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import asyncmy
import orjson

from bench.common import db_args

CASES = {
    "point": ("SELECT id, name, price, sku, added FROM items WHERE id = %s", lambda: [random.randint(1, 1000)]),
    "range": (
        "SELECT id, name, price, sku, added FROM items WHERE id > %s ORDER BY id LIMIT 100",
        lambda: [random.randint(0, 900)],
    ),
    "insert": (
        "INSERT INTO orders (customer_id, item_id, quantity, ordered_at, note) VALUES (%s, %s, %s, %s, %s)",
        lambda: [random.randint(1, 3), random.randint(1, 1000), random.randint(1, 9), "2024-05-06 07:08:09", "bench"],
    ),
}


async def _client(sql: str, params: object, until: float, latencies: list[float]) -> None:
    conn = await asyncmy.connect(**db_args())
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            async with conn.cursor() as cur:
                await cur.execute(sql, params())  # type: ignore[operator]  # params is typed object here; each case passes a zero-argument callable
                await cur.fetchall()
            latencies.append(time.perf_counter() - started)
    finally:
        await conn.ensure_closed()


async def main(case: str, clients: int, seconds: float) -> None:
    """Run ``clients`` loops for ``seconds``; print the summary."""
    sql, params = CASES[case]
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_client(sql, params, until, latencies) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e6) if latencies else 0

    summary = {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "p50_us": pct(50),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "max_us": int(latencies[-1] * 1e6) if latencies else 0,
        "mean_us": sum(latencies) / len(latencies) * 1e6 if latencies else 0,
        "socket_errors": 0,
        "non_200": {},
    }
    sys.stdout.write("BENCH " + orjson.dumps(summary).decode() + "\n")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - the reference works without it
        pass
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
