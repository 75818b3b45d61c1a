"""Benchmark: stream a large result through the gateway; peak RSS and rows/s vs the mariadb client.

Usage: ``python bench/stream.py [--rows 1000000]`` (``make bench-stream``). Needs
the MariaDB of ``make test`` (root on 127.0.0.1:3306 without a password; the
``GATEWAY_TEST_DB_*`` variables override) and the ``mariadb`` client on PATH.

It creates a scratch database ``gwstream_<time>_<rand>`` with a table of
``--rows`` rows (id, name, DECIMAL price, DATETIME), starts the gateway as a
separate process (``gateway serve``, dev mode, loopback, a free port), then:

1. streams ``--rows // 10`` rows and then ``--rows`` rows through
   ``POST /v1/query`` with ``Accept: application/x-ndjson``, sampling the
   gateway process's ``VmRSS`` and reading its ``VmHWM`` (peak RSS) from
   ``/proc/<pid>/status`` after each: a flat peak across a 10x larger result
   is the point;
2. ``--rounds`` times, interleaved: streams the ``--rows`` rows as NDJSON,
   CSV (``text/csv``) and TSV (``text/tab-separated-values``), and dumps the
   same SELECT with ``mariadb --quick --batch`` to /dev/null as the same
   reader account; reports the best rows/s of each and the ratios.

Figures are wall-clock on whatever else the machine is doing: on a shared
CPU they are noisy, so compare ratios within one run. Everything it creates
(database, accounts, gateway process, temp dir) is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncmy
import httpx

from gateway.db.provision import Account, drop, provision

DB_HOST = os.environ.get("GATEWAY_TEST_DB_HOST", "127.0.0.1")
DB_PORT = int(os.environ.get("GATEWAY_TEST_DB_PORT", "3306"))
START_TIMEOUT = 30.0
STREAM_TIMEOUT = 600.0
SAMPLE_EVERY = 0.05  # seconds between RSS samples
NDJSON, CSV, TSV = "application/x-ndjson", "text/csv", "text/tab-separated-values"
FORMATS = {"ndjson": NDJSON, "csv": CSV, "tsv": TSV}


async def _root() -> Any:  # noqa: ANN401 - an asyncmy connection (untyped)
    return await asyncmy.connect(
        host=DB_HOST,
        port=DB_PORT,
        user=os.environ.get("GATEWAY_TEST_DB_ROOT_USER", "root"),
        password=os.environ.get("GATEWAY_TEST_DB_ROOT_PASSWORD", ""),
        autocommit=True,
    )


async def make_database(name: str, prefix: str, rows: int) -> dict[str, Account]:
    """Create the scratch database, its accounts and the ``bench_rows`` table."""
    root = await _root()
    try:
        accounts = await provision(root, name, prefix, demo_data=False)
        async with root.cursor() as cur:
            await cur.execute(
                f"CREATE TABLE `{name}`.bench_rows (id INT PRIMARY KEY, name VARCHAR(40), "
                "price DECIMAL(10,2), created DATETIME)"
            )
            await cur.execute(
                f"INSERT INTO `{name}`.bench_rows SELECT seq, CONCAT('item-', seq), seq / 100, "  # noqa: S608 - the benchmark's own scratch database name
                f"'2024-01-01' + INTERVAL seq SECOND FROM `{name}`.seq_1_to_{int(rows)}"
            )
    finally:
        root.close()
    return accounts


async def drop_database(name: str, prefix: str) -> None:
    """Drop the scratch database and its accounts."""
    root = await _root()
    try:
        await drop(root, name, prefix)
    finally:
        root.close()


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(tmp: Path, name: str, reader: Account, port: int, rows: int) -> Path:
    """A dev-mode gateway config and a policy letting group ``bench`` read ``rows`` rows."""
    secret = tmp / "reader.secret"
    secret.write_text(reader.password, encoding="utf-8")
    secret.chmod(0o600)
    (tmp / "policies").mkdir()
    (tmp / "policies" / "bench.yaml").write_text(
        'version: 1\ngrants:\n  - name: bench-read\n    subjects: ["group:bench"]\n    target: shop\n'
        f"    access: read\n    db_user: {reader.user}\n    max_rows: {rows * 2}\n    statement_timeout: 600s\n",
        encoding="utf-8",
    )
    config = tmp / "gateway.yaml"
    config.write_text(
        "dev_mode: true\n"
        f"listen: {{host: 127.0.0.1, port: {port}}}\n"
        f"policies_dir: {tmp / 'policies'}\n"
        f"targets:\n  shop:\n    host: {DB_HOST}\n    port: {DB_PORT}\n    database: {name}\n"
        f"    pool: {{max_size: 4, min_size: 1}}\n    secrets:\n      {reader.user}: {{file: {secret}}}\n"
        f"audit: {{path: {tmp / 'audit.db'}}}\n"
        f"limits: {{max_stream_rows: {rows * 2}, max_statement_timeout: 600}}\n"
        f"dev: {{key_file: {tmp / 'dev-key.json'}}}\n"
        f"admin: {{state_dir: {tmp / 'state'}}}\n",
        encoding="utf-8",
    )
    return config


def proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` memory figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


@contextlib.contextmanager
def running_gateway(config: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``gateway serve`` as a child process until the block ends."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the gateway exited:\n{log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == httpx.codes.OK:
                    break
            time.sleep(0.1)
        else:
            raise SystemExit(f"the gateway did not become ready:\n{log.read_text()}")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def dev_token(config: Path) -> str:
    """A dev-issuer token for ``bench@example.com`` in group ``bench``."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "dev-token", "bench@example.com", "--group", "bench",
         "--config", str(config)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return out.stdout.strip()


def stream_through_gateway(port: int, token: str, sql: str, pid: int, media: str = NDJSON) -> dict[str, float]:
    """Stream ``sql`` as ``media``; count rows; sample the gateway's RSS meanwhile."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                samples.append(proc_status(pid, "VmRSS"))
            stop.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    newlines = 0
    last = b""
    started = time.perf_counter()
    try:
        with httpx.stream(
            "POST",
            f"http://127.0.0.1:{port}/v1/query",
            json={"target": "shop", "sql": sql},
            headers={"Authorization": f"Bearer {token}", "Accept": media},
            timeout=STREAM_TIMEOUT,
        ) as reply:
            reply.raise_for_status()
            for chunk in reply.iter_raw():
                newlines += chunk.count(b"\n")
                last = (last + chunk)[-4096:]
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join(timeout=5)
    if media == NDJSON:
        trailer = last.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
        if '"type":"trailer"' not in trailer:
            raise SystemExit(f"the stream did not end with a trailer: {trailer}")
        rows = newlines - 2  # header and trailer lines
    else:  # CSV / TSV: a header row; a cut body would have raised above (no embedded newlines in these rows)
        rows = newlines - 1
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "rss_max_sampled_kib": max(samples, default=0),
        "vm_hwm_kib": proc_status(pid, "VmHWM"),
    }


def mariadb_dump(name: str, reader: Account, sql: str, tmp: Path) -> dict[str, float]:
    """``mariadb --quick --batch`` dumping the same result to /dev/null, timed."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        raise SystemExit("the mariadb command-line client is not on PATH")
    defaults = tmp / "client.cnf"
    defaults.write_text(f"[client]\nuser={reader.user}\npassword={reader.password}\n", encoding="utf-8")
    defaults.chmod(0o600)
    started = time.perf_counter()
    with Path(os.devnull).open("wb") as sink:
        subprocess.run(
            [client, f"--defaults-extra-file={defaults}", "-h", DB_HOST, "-P", str(DB_PORT), "--quick", "--batch",
             "--skip-column-names", name, "-e", sql],
            stdout=sink, check=True, timeout=STREAM_TIMEOUT,
        )  # fmt: skip
    elapsed = time.perf_counter() - started
    return {"seconds": elapsed}


def main() -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every format and the client")
    args = parser.parse_args()
    rows = args.rows
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    name, prefix = f"gwstream_{stamp}_{rand}", f"gws{stamp[-4:]}{rand}"
    sql = "SELECT id, name, price, created FROM bench_rows"
    print(f"creating {name} with {rows:,} rows ...", file=sys.stderr)
    try:
        accounts = asyncio.run(make_database(name, prefix, rows))
        with tempfile.TemporaryDirectory(prefix="gwbench-") as tmpdir:
            tmp = Path(tmpdir)
            port = free_port()
            config = write_config(tmp, name, accounts["reader"], port, rows)
            with running_gateway(config, port, tmp / "gateway.log") as gateway:
                token = dev_token(config)
                small = stream_through_gateway(port, token, f"{sql} LIMIT 1000", gateway.pid)
                tenth = stream_through_gateway(port, token, f"{sql} LIMIT {rows // 10}", gateway.pid)
                full = stream_through_gateway(port, token, sql, gateway.pid)
                # The formats and the mariadb client interleaved, rounds times: the best of each (a busy machine
                # only ever slows a run down).
                best: dict[str, dict[str, float]] = {}
                for _ in range(args.rounds):
                    for fmt, media in FORMATS.items():
                        run = stream_through_gateway(port, token, sql, gateway.pid, media)
                        if fmt not in best or run["rows_per_s"] > best[fmt]["rows_per_s"]:
                            best[fmt] = run
                    dump_run = mariadb_dump(name, accounts["reader"], sql, tmp)
                    dump_run["rows_per_s"] = rows / dump_run["seconds"]
                    if "mariadb" not in best or dump_run["rows_per_s"] > best["mariadb"]["rows_per_s"]:
                        best["mariadb"] = dump_run
                hwm_after = proc_status(gateway.pid, "VmHWM")
    finally:
        asyncio.run(drop_database(name, prefix))
    dump = best["mariadb"]
    print(f"gateway peak RSS (VmHWM) after 1,000 rows:      {small['vm_hwm_kib'] / 1024:8.1f} MiB")
    print(f"gateway peak RSS (VmHWM) after {tenth['rows']:>9,} rows:  {tenth['vm_hwm_kib'] / 1024:8.1f} MiB")
    print(f"gateway peak RSS (VmHWM) after {full['rows']:>9,} rows:  {full['vm_hwm_kib'] / 1024:8.1f} MiB")
    growth = (full["vm_hwm_kib"] - small["vm_hwm_kib"]) / 1024
    print(f"peak RSS growth from 1,000 to {full['rows']:,} rows: {growth:+.1f} MiB")
    hwm_growth = (hwm_after - small["vm_hwm_kib"]) / 1024
    print(f"gateway peak RSS after every format, every round: {hwm_after / 1024:.1f} MiB ({hwm_growth:+.1f} MiB)")
    for fmt in FORMATS:
        run = best[fmt]
        print(f"gateway {fmt:6s}:  {run['rows']:,} rows in {run['seconds']:.2f} s = {run['rows_per_s']:,.0f} rows/s"
              f"  ratio to mariadb {run['rows_per_s'] / dump['rows_per_s']:.2f}")  # fmt: skip
    print(f"mariadb --quick --batch: {rows:,} rows in {dump['seconds']:.2f} s = {dump['rows_per_s']:,.0f} rows/s")
    print(f"best of {args.rounds} interleaved rounds each")
    print("(wall-clock on a shared machine: noisy; compare within one run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
