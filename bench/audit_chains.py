"""Audit records/s into one MariaDB store: a chain per replica against the single-chain store (`make bench-chains`).

Each *replica* is a process of its own with its own store instance (as
gateway replicas are), writing batches of ``--batch`` records (one group
commit each) for ``--seconds``, all started together. Four set-ups, in the
same run, on the same server, each in a fresh scratch database:

* ``single-chain``: the store before issue 14, loaded from git
  (``git show <ref>:gateway/audit/mariadb.py`` and ``schema.py``, default ref
  the last commit of main before issue 14), where every writer locks the one
  head row;
* ``per-replica``: this tree's store, every replica with its own replica id;

each with 1 and with 3 replicas. The four run in turn, ``--rounds`` times
(interleaved, so a noisy neighbour on a shared machine hits them alike); the
report gives each set-up's median records/s and the ratios of the medians
(3 replicas against 1, per-replica against single-chain), and the server's
InnoDB row lock waits during each run (server-wide, so other clients count
too): the direct sign of writers queueing on one head row.

With ``--latency-ms N`` the writers reach MariaDB through a loopback proxy
that delays every chunk by N/2 ms each way (``tests/faultproxy.py``), as a
network between the replicas and a managed database would: the head row lock
is held across every round trip of a transaction, so this is where one
global lock costs most.

    python bench/audit_chains.py [--seconds 8] [--batch 8] [--rounds 3] [--latency-ms 0] [--ref REF] [--json out.json]

Environment: ``GATEWAY_BENCH_DB_HOST``/``_PORT``, root as
``GATEWAY_BENCH_DB_ROOT_USER``/``_PASSWORD`` (defaults 127.0.0.1:3306, root, empty).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing as mp
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymysql

from gateway.audit.mariadb import MariaDBAuditStore
from gateway.settings import AuditDatabaseSettings, SecretSource

HOST = os.environ.get("GATEWAY_BENCH_DB_HOST", "127.0.0.1")
PORT = int(os.environ.get("GATEWAY_BENCH_DB_PORT", "3306"))
ROOT = Path(__file__).resolve().parent.parent
# The last commit of main before issue 14: its store is the single-chain baseline (main itself moves on).
SINGLE_CHAIN_REF = "58633c62049249931d687d82ddaf594354136fc5"


def _root() -> Any:  # noqa: ANN401 - a PyMySQL connection
    return pymysql.connect(
        host=HOST,
        port=PORT,
        user=os.environ.get("GATEWAY_BENCH_DB_ROOT_USER", "root"),
        password=os.environ.get("GATEWAY_BENCH_DB_ROOT_PASSWORD", ""),
        autocommit=True,
    )


_OLD: dict[str, Any] = {}  # the single-chain store class, loaded once before the writers fork


def _old_store_class(ref: str, workdir: Path) -> Any:  # noqa: ANN401 - a store class loaded from git
    """The single-chain store of ``ref``: its mariadb.py and schema.py, the rest of the package from this tree."""
    if ref in _OLD:
        return _OLD[ref]
    for name in ("mariadb", "schema"):
        text = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:gateway/audit/{name}.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        text = text.replace("from gateway.audit.schema import", "from bench_old_schema import")
        (workdir / f"bench_old_{name}.py").write_text(text, encoding="utf-8")
    sys.path.insert(0, str(workdir))
    spec = importlib.util.spec_from_file_location("bench_old_mariadb", workdir / "bench_old_mariadb.py")
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the store of {ref}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _OLD[ref] = module.MariaDBAuditStore
    return _OLD[ref]


def _record(writer: int, i: int) -> dict[str, object]:
    return {
        "event": "decision",
        "request_id": f"bench-{writer}-{i}-{secrets.token_hex(6)}",
        "user": f"user{i % 200}@example.com",
        "issuer": "https://idp.example.com",
        "groups": ["analysts"],
        "target": "shop",
        "statement": f"SELECT id, name, price FROM items WHERE id = {i}",  # noqa: S608 - recorded text, never run
        "kind": "read",
        "tables": ["shop.items"],
        "decision": "allow",
        "code": "ok",
        "grant": "analysts-read-shop",
        "db_user": "gw_reader",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
    }


def _writer(kind: str, ref: str, workdir: str, settings: dict[str, Any], replica: str, args: tuple[Any, ...]) -> None:  # noqa: PLR0917 - a Process target takes positional arguments
    """One replica: open its store, wait for the others, write batches until the deadline; report the count."""
    barrier, results, seconds, batch, index = args
    cfg = AuditDatabaseSettings(**settings)
    store = (
        _old_store_class(ref, Path(workdir))(cfg) if kind == "single-chain" else MariaDBAuditStore(cfg, chain=replica)
    )
    barrier.wait()
    deadline = time.perf_counter() + seconds
    written = 0
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        store.append_batch([_record(index, written + k) for k in range(batch)])
        written += batch
    results.put((written, time.perf_counter() - started))
    store.close()


def _row_lock_waits(root: Any) -> int:  # noqa: ANN401 - a PyMySQL connection
    """The server's count of InnoDB row lock waits so far (server-wide: other clients' waits count too)."""
    with root.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'")
        return int(cur.fetchone()[1])


def _run(kind: str, replicas: int, opts: argparse.Namespace, workdir: Path, via: tuple[str, int]) -> tuple[float, int]:
    """Records/s of ``replicas`` writers of ``kind`` into a fresh scratch database (via ``via``), and row lock waits."""
    rand = secrets.token_hex(3)
    database, account, password = f"gwbench_chains_{rand}", f"gwbc{rand}", secrets.token_urlsafe(18)
    env_name = f"GWBENCH_AUDIT_PASSWORD_{rand.upper()}"
    os.environ[env_name] = password
    root = _root()
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE USER '{account}'@'%%' IDENTIFIED BY %s", (password,))
            cur.execute(f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{account}'@'%'")
        settings = AuditDatabaseSettings(
            host=via[0], port=via[1], database=database, user=account, secret=SecretSource(env=env_name)
        ).model_dump()
        ctx = mp.get_context("fork")
        barrier, results = ctx.Barrier(replicas), ctx.Queue()
        # The schema first (one process), so the writers measure writing only.
        (_old_store_class(opts.ref, workdir)(AuditDatabaseSettings(**settings)) if kind == "single-chain" else None)
        procs = [
            ctx.Process(
                target=_writer,
                args=(
                    kind,
                    opts.ref,
                    str(workdir),
                    settings,
                    f"replica-{n}",
                    (barrier, results, opts.seconds, opts.batch, n),
                ),
            )
            for n in range(replicas)
        ]
        waits_before = _row_lock_waits(root)
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=opts.seconds + 60) for _ in procs]
        for proc in procs:
            proc.join(30)
        waits = _row_lock_waits(root) - waits_before
        total = sum(count for count, _ in outcomes)
        elapsed = max(seconds for _, seconds in outcomes)
        return total / elapsed, waits
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute(f"DROP USER IF EXISTS '{account}'@'%'")
        root.close()
        os.environ.pop(env_name, None)


def main() -> int:
    """Run the four set-ups, print records/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each set-up writes")
    parser.add_argument("--batch", type=int, default=8, help="records per transaction (group commit)")
    parser.add_argument("--ref", default=SINGLE_CHAIN_REF, help="the git ref whose single-chain store is the baseline")
    parser.add_argument("--rounds", type=int, default=3, help="times each set-up runs (interleaved); medians reported")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="round-trip latency added by a proxy")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    opts = parser.parse_args()
    runs: dict[str, list[float]] = {}
    lock_waits: dict[str, list[int]] = {}
    via = (HOST, PORT)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        if opts.latency_ms > 0:
            sys.path.insert(0, str(ROOT / "tests"))
            from faultproxy import FaultProxy  # noqa: PLC0415 - the tests' loopback proxy, only when asked for

            proxy = stack.enter_context(FaultProxy(HOST, PORT))
            proxy.slow(opts.latency_ms / 2000)
            via = (proxy.host, proxy.port)
        _old_store_class(opts.ref, Path(tmp))  # once, in this process: the forked writers inherit it
        for round_no in range(1, opts.rounds + 1):
            for kind in ("single-chain", "per-replica"):
                for replicas in (1, 3):
                    label = f"{kind}, {replicas} replica{'s' if replicas > 1 else ''}"
                    rate, waits = _run(kind, replicas, opts, Path(tmp), via)
                    runs.setdefault(label, []).append(rate)
                    lock_waits.setdefault(label, []).append(waits)
                    print(
                        f"round {round_no}: {label:<28} {rate:>9,.0f} records/s, {waits:>6} row lock waits", flush=True
                    )
    rates = {label: statistics.median(values) for label, values in runs.items()}
    for label, rate in rates.items():
        print(f"median: {label:<28} {rate:>9,.0f} records/s")
    ratios = {
        "single-chain: 3 replicas / 1": rates["single-chain, 3 replicas"] / rates["single-chain, 1 replica"],
        "per-replica: 3 replicas / 1": rates["per-replica, 3 replicas"] / rates["per-replica, 1 replica"],
        "1 replica: per-replica / single-chain": rates["per-replica, 1 replica"] / rates["single-chain, 1 replica"],
        "3 replicas: per-replica / single-chain": rates["per-replica, 3 replicas"] / rates["single-chain, 3 replicas"],
    }
    for name, ratio in ratios.items():
        print(f"{name:<40} {ratio:5.2f}x")
    if opts.json:
        figures = {
            "batch": opts.batch,
            "seconds": opts.seconds,
            "latency_ms": opts.latency_ms,
            "runs": runs,
            "row_lock_waits": lock_waits,
            "median_records_per_s": rates,
        }
        opts.json.write_text(json.dumps({**figures, "ratios": ratios}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
