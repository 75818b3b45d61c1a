"""Benchmark: the cost of minting an RDS IAM token, and the share of requests that pay it.

Run with ``make bench-credentials`` (root: it starts the tests' private,
token-checking MariaDB from ``tests/iamfixture.py``). Figures on a shared,
busy machine are noisy; read them as orders of magnitude.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from iamfixture import ACCESS_KEY, REGION, SECRET_KEY, IamMariaDB, running_iam_mariadb  # noqa: E402 - after the sys.path set-up above

from gateway.db.connector import Connector  # noqa: E402 - after the sys.path set-up above
from gateway.db.iamtokens import IamTokenProvider  # noqa: E402 - after the sys.path set-up above
from gateway.db.pools import INIT_COMMAND, ConnectionPool  # noqa: E402 - after the sys.path set-up above
from gateway.settings import TargetSettings  # noqa: E402 - after the sys.path set-up above

MINTS = 500
WORKERS = 8
SECONDS = 10.0


def mint_cost() -> None:
    """Time the first mint (builds the boto3 client) and then MINTS mints."""
    provider = IamTokenProvider("db.example.internal", 3306, "gw_reader", REGION, ttl=600)
    started = time.perf_counter()
    provider._mint()  # noqa: SLF001 - the benchmark times the mint itself
    first = time.perf_counter() - started
    samples = []
    for _ in range(MINTS):
        started = time.perf_counter()
        provider._mint()  # noqa: SLF001 - timing the provider's own mint
        samples.append(time.perf_counter() - started)
    samples.sort()
    print(f"first mint (creates the boto3 client): {first * 1000:.1f} ms")
    print(
        f"mint, {MINTS} samples: median {statistics.median(samples) * 1e3:.3f} ms, "
        f"p99 {samples[int(len(samples) * 0.99)] * 1e3:.3f} ms, max {samples[-1] * 1e3:.3f} ms"
    )


async def steady_load(db: IamMariaDB, token_ttl: float, max_lifetime: float) -> None:
    """WORKERS tasks run SELECTs through one pool for SECONDS; count mints and new connections."""
    target = TargetSettings(
        host=db.host,
        port=db.port,
        database=db.database,
        auth_mode="iam",
        iam={"region": REGION, "db_users": [db.reader], "token_ttl": token_ttl},
        tls={"enabled": True, "ca_file": db.ca_file, "verify_hostname": True},
        pool={"max_size": WORKERS, "max_lifetime": max_lifetime},
    )
    tokens = IamTokenProvider(db.host, db.port, db.reader, REGION, ttl=token_ttl)
    connect = Connector(target, db.reader, tokens, INIT_COMMAND)
    pool = ConnectionPool("bench", connect, target.pool)
    requests = 0
    deadline = time.monotonic() + SECONDS

    async def worker() -> None:
        nonlocal requests
        while time.monotonic() < deadline:
            async with pool.connection() as conn:
                async with conn.raw.cursor() as cur:
                    await cur.execute("SELECT id, name FROM items WHERE id = 1")
                    await cur.fetchall()
            requests += 1

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    await pool.close()
    opened = connect.stats.results.get("ok", 0)
    print(
        f"token_ttl {token_ttl:g}s, max_lifetime {max_lifetime:g}s, {WORKERS} workers, {SECONDS:g}s: "
        f"{requests} requests ({requests / SECONDS:.0f}/s), {opened} new connections, {tokens.mints} mints "
        f"({tokens.mint_seconds * 1000:.1f} ms minting in total); requests that paid a mint: "
        f"{tokens.mints / requests:.4%}; that opened a connection: {opened / requests:.4%}"
    )


def main() -> None:
    """Print the figures."""
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    mint_cost()
    with running_iam_mariadb() as db:
        asyncio.run(steady_load(db, token_ttl=600, max_lifetime=600))
        asyncio.run(steady_load(db, token_ttl=2, max_lifetime=3))


if __name__ == "__main__":
    main()
