"""``make bench``: the gateway against what users would run instead, side by side in one run.

One private mariadbd (TLS on, see ``privatedb.py``) seeded with the demo
schema by ``gateway.db.provision``; then, for each case (point SELECT, 100-row
SELECT, one-row INSERT) and each client count, wrk (closed loop, one thread,
loopback, bounded in time) drives in turn:

- ``gateway``: ``gateway serve`` with everything on (dev-issuer ES256 tokens
  through the real validator, policy, analysis, SQLite audit with
  ``synchronous=FULL`` and group commit, JSON audit events);
- ``baseline``: bare FastAPI + asyncmy pool, no checks (``baseline_app.py``);
- ``naive`` / ``naive-tls``: a connection per request, plain and over TLS;
- ``direct``: an asyncmy loop with one connection per client, no HTTP.

The table goes to stdout and between the markers of ``docs/benchmarks.md``;
the raw figures to ``bench/results/last.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncmy
import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.disk import count_audit, fsync_latency_ms
from bench.privatedb import PrivateServer, free_port, private_mariadb
from bench.report import render, write_doc
from gateway.db.provision import provision
from gateway.identity.devissuer import DevIssuer, dev_issuer_url
from gateway.settings import load_settings
from tests.processes import children

ROOT = Path(__file__).resolve().parent.parent
CASES = ("point", "range", "insert")
APPS = ("gateway", "baseline", "naive", "naive-tls", "direct")
POOL_SIZE = 10
_BENCH_LINE = re.compile(r"^BENCH (\{.*\})$", re.MULTILINE)


def _policies(directory: Path, database: str, accounts: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.yaml").write_text(
        f"""version: 1
grants:
  - name: bench-read
    subjects: ["group:analysts"]
    target: shop
    access: read
    db_user: {accounts["reader"].user}
    tables: {{allow: ["{database}.*"], deny: ["{database}.payment_*"]}}
    max_rows: 10000
    statement_timeout: 30s
  - name: bench-write
    subjects: ["group:engineers"]
    target: shop
    access: write
    db_user: {accounts["writer"].user}
    tables: {{deny: ["{database}.payment_*"]}}
    max_rows: 1000
    statement_timeout: 10s
revocations:
  - subject: "user:mallory@example.com"
    target: "*"
    reason: "left the team"
""",
        encoding="utf-8",
    )


def _audit_config(state: Path, server: PrivateServer, store: str, rand: str, writer: str) -> str:
    """The gateway's audit section: the SQLite file, or the shared MariaDB store on the private server."""
    if store == "sqlite":
        return f"audit: {{writer: {writer}, path: {state / 'audit.db'}}}"
    database, user, password = f"gwbench_audit_{rand}", f"gwba{rand}", secrets.token_urlsafe(18)
    _root_sql(server, f"CREATE DATABASE `{database}`", f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
              f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'")  # fmt: skip
    secret = state / "secrets" / "audit-store"
    secret.write_text(password, encoding="utf-8")
    secret.chmod(0o600)
    return (
        f"audit: {{writer: {writer}, store: mariadb, mariadb: {{host: 127.0.0.1, port: {server.port}, "
        f"database: {database}, user: {user}, secret: {{file: {secret}}}}}}}"
    )


def _root_sql(server: PrivateServer, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements as root over the private server's socket; the last one's rows."""

    async def run() -> list[tuple[Any, ...]]:
        root = await asyncmy.connect(unix_socket=str(server.socket), user="root", password="", autocommit=True)
        rows: list[tuple[Any, ...]] = []
        try:
            async with root.cursor() as cur:
                for statement in statements:
                    await cur.execute(statement)
                    rows = list(await cur.fetchall())
        finally:
            await root.ensure_closed()
        return rows

    return asyncio.run(run())


def _count_audit(state: Path, server: PrivateServer, store: str, rand: str) -> int:
    if store == "sqlite":
        return count_audit(state / "audit.db")
    rows = _root_sql(server, f"SELECT COUNT(*) FROM `gwbench_audit_{rand}`.audit_log")
    return int(rows[0][0]) if rows else 0


def _gateway_config(  # noqa: PLR0917 - the run's parts
    state: Path, server: PrivateServer, database: str, accounts: dict[str, Any], audit: str, writer: str
) -> Path:
    secrets_dir = state / "secrets"
    secrets_dir.mkdir(mode=0o700)
    lines = []
    for account in accounts.values():
        path = secrets_dir / account.user
        path.write_text(account.password, encoding="utf-8")
        path.chmod(0o600)
        lines.append(f"      {account.user}: {{file: {path}}}")
    _policies(state / "policies", database, accounts)
    audit = _audit_config(state, server, audit, database.removeprefix("gwbench_"), writer)
    config = state / "gateway.yaml"
    config.write_text(
        "\n".join(
            [
                "dev_mode: true",
                f"listen: {{host: 127.0.0.1, port: {free_port()}}}",
                f"policies_dir: {state / 'policies'}",
                "targets:",
                "  shop:",
                "    host: 127.0.0.1",
                f"    port: {server.port}",
                f"    database: {database}",
                f"    pool: {{max_size: {POOL_SIZE}, min_size: {POOL_SIZE}, acquire_timeout: 5, max_waiting: 1000}}",
                "    secrets:",
                *lines,
                audit,
                f"dev: {{key_file: {state / 'dev-key.pem'}}}",
                f"admin: {{state_dir: {state / 'state'}}}",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return config


async def _provision(server: PrivateServer, database: str, prefix: str) -> dict[str, Any]:
    root = await asyncmy.connect(unix_socket=str(server.socket), user="root", password="", autocommit=True)
    try:
        return await provision(root, database, prefix)
    finally:
        await root.ensure_closed()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads) so far; 0 if it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Apps:
    """The HTTP apps under test, each a process of its own on a free loopback port."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], url: str) -> None:
        """Start one app; its output goes to ``STATE/NAME.log``."""
        log = (self.state / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, stdout=log, stderr=log
        )
        self.urls[name] = url

    def wait_ready(self, token: str) -> None:
        """Wait (bounded) until every app answers a point SELECT with 200."""
        body = {"target": "shop", "sql": "SELECT id FROM items WHERE id = ?", "params": [1]}
        headers = {"Authorization": f"Bearer {token}"}
        for name, url in self.urls.items():
            deadline = time.monotonic() + 60
            while True:
                if self.processes[name].poll() is not None:
                    raise SystemExit(f"{name} exited; see {self.state / (name + '.log')}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.post(f"{url}/v1/query", json=body, headers=headers, timeout=5).status_code == 200:  # noqa: PLR2004 - HTTP 200
                        break
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not become ready; see {self.state / (name + '.log')}")
                time.sleep(0.2)

    def rss_kb(self, name: str) -> int:
        """Resident memory of an app's process, in KiB."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.processes[name].pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time of an app's process (all threads) and its child processes so far."""
        pid = self.processes[name].pid
        return process_cpu(pid) + sum(process_cpu(child) for child in children(pid))

    def thread_cpu(self, name: str) -> dict[str, float]:
        """CPU seconds (user + system) per thread name of an app's process."""
        cpu: dict[str, float] = {}
        for task in Path(f"/proc/{self.processes[name].pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                pid = self.processes[name].pid
                comm = "main" if task.name == str(pid) else f"{(task / 'comm').read_text().strip()} {task.name}"
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                cpu[comm] = cpu.get(comm, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for child in children(self.processes[name].pid):  # the audit store's process (audit.writer: process)
            cpu[f"child {child}"] = process_cpu(child)
        return cpu

    def stop(self) -> None:
        """SIGTERM each app (graceful: the gateway flushes its audit log), then wait."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _uvicorn(module: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", module, "--factory", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]  # fmt: skip


def _parse(output: str, what: str) -> dict[str, Any]:
    match = _BENCH_LINE.search(output)
    if match is None:
        raise SystemExit(f"{what}: no result line in output:\n{output[-2000:]}")
    result: dict[str, Any] = orjson.loads(match.group(1))
    seconds = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds if seconds else 0.0
    return result


def run_wrk(url: str, case: str, clients: int, seconds: float, token: str) -> dict[str, Any]:
    """One closed-loop wrk run; its summary."""
    argv = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s",
            "-s", str(ROOT / "bench" / "wrk" / "query.lua"), url, "--", case, token]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    return _parse(done.stdout + done.stderr, f"wrk {case} c={clients} {url}")


def run_direct(env: dict[str, str], case: str, clients: int, seconds: float) -> dict[str, Any]:
    """The direct asyncmy loop in a process of its own."""
    argv = [sys.executable, "-m", "bench.direct", case, str(clients), f"{seconds:g}"]
    done = subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=seconds + 120, check=False,
    )  # fmt: skip
    return _parse(done.stdout + done.stderr, f"direct {case} c={clients}")


def _audit_commits(url: str) -> dict[str, float]:
    """The audit writer's counters from the gateway's /metrics: group commits, their time, records."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    wanted = {"gateway_audit_write_seconds_count": "commits", "gateway_audit_write_seconds_sum": "seconds",
              "gateway_audit_records_total": "records"}  # fmt: skip
    return {
        wanted[sample.name]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def _print_commits(before: dict[str, float], after: dict[str, float], requests: int) -> None:
    commits = after.get("commits", 0.0) - before.get("commits", 0.0)
    if commits <= 0:
        return
    records = after.get("records", 0.0) - before.get("records", 0.0)
    seconds = after.get("seconds", 0.0) - before.get("seconds", 0.0)
    line = (f"audit: {commits:.0f} group commits, {records / commits:.1f} records each, "
            f"{seconds / commits * 1e6:.0f} us each, {requests / commits:.2f} requests per commit")  # fmt: skip
    print(line, file=sys.stderr)


@contextlib.contextmanager
def _profiler(pid: int, out: Path, seconds: float) -> Iterator[None]:
    """py-spy record of the gateway while the block runs (skipped if py-spy is missing)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed: no profile", file=sys.stderr)
        yield
        return
    argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250",
            "--format", "raw", "--output", str(out), "--threads", "--gil"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.wait(timeout=seconds + 60)


def main() -> int:
    """Run the whole benchmark and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "5")))
    parser.add_argument("--clients", default=os.environ.get("BENCH_CLIENTS", "1,16,64,256"))
    parser.add_argument("--cases", default=os.environ.get("BENCH_CASES", ",".join(CASES)))
    parser.add_argument("--apps", default=os.environ.get("BENCH_APPS", ",".join(APPS)))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "last.json")
    parser.add_argument("--profile", metavar="CASE:CLIENTS", help="only profile the gateway (py-spy) in one case")
    parser.add_argument(
        "--audit",
        choices=("sqlite", "mariadb"),
        default=os.environ.get("BENCH_AUDIT", "sqlite"),
        help="the gateway's audit store: its SQLite file, or the shared MariaDB store replicas use",
    )
    parser.add_argument(
        "--audit-writer",
        choices=("thread", "process"),
        default=os.environ.get("BENCH_AUDIT_WRITER", "thread"),
        help="audit.writer: the store's work in a thread beside the event loop, or in a process of its own",
    )
    parser.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""), help="a line for the report")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    apps = [a for a in args.apps.split(",") if a]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk; make bench does it)")
    started = time.time()
    load_before = os.getloadavg()
    with private_mariadb() as server:
        state = server.directory / "state"
        state.mkdir()
        rand = secrets.token_hex(3)
        database, prefix = f"gwbench_{rand}", f"gwb{rand}"
        accounts = asyncio.run(_provision(server, database, prefix))
        config = _gateway_config(state, server, database, accounts, args.audit, args.audit_writer)
        settings = load_settings(config)
        issuer = DevIssuer.from_key_file(
            dev_issuer_url(settings.listen.port, settings.listen.host), settings.dev.key_file
        )
        token = issuer.mint("bench@example.com", ["analysts", "engineers"], audience=settings.dev.audience)
        db_env = {"BENCH_DB_PORT": str(server.port), "BENCH_DB_NAME": database,
                  "BENCH_DB_PASSWORD": accounts["writer"].password, "BENCH_DB_USER": accounts["writer"].user,
                  "BENCH_POOL_SIZE": str(POOL_SIZE)}  # fmt: skip
        runner = Apps(state)
        try:
            gw_url = f"http://127.0.0.1:{settings.listen.port}"
            if "gateway" in apps:
                command = [sys.executable, "-m", "gateway.cli.main", "serve", "--config", str(config)]
                runner.start("gateway", command, {}, gw_url)
            for name, module, extra in (
                ("baseline", "bench.baseline_app:create_app", {}),
                ("naive", "bench.naive_app:create_app", {}),
                ("naive-tls", "bench.naive_app:create_app", {"BENCH_DB_CA": str(server.ca_file)}),
            ):
                if name in apps:
                    port = free_port()
                    runner.start(name, _uvicorn(module, port), {**db_env, **extra}, f"http://127.0.0.1:{port}")
            runner.wait_ready(token)
            for name, url in runner.urls.items():  # warm-up: imports, pools, caches, JIT-free but cold paths
                run_wrk(url, "point", 16, 2, token)
                print(f"warmed up {name}", file=sys.stderr)
            if args.profile:
                case, count = args.profile.split(":")
                out = ROOT / "bench" / "results" / f"profile-{case}-{count}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                cpu = runner.cpu_seconds("gateway")
                threads = runner.thread_cpu("gateway")
                commits = _audit_commits(gw_url)
                with _profiler(runner.processes["gateway"].pid, out, args.duration):
                    result = run_wrk(gw_url, case, int(count), args.duration, token)
                _print_commits(commits, _audit_commits(gw_url), result["requests"])
                cpu_us = (runner.cpu_seconds("gateway") - cpu) / max(result["requests"], 1) * 1e6
                print(f"{result['rps']:.0f} req/s, {cpu_us:.0f} us CPU/request; profile in {out}", file=sys.stderr)
                for thread, seconds in sorted(runner.thread_cpu("gateway").items()):
                    per_request = (seconds - threads.get(thread, 0.0)) / max(result["requests"], 1) * 1e6
                    print(f"  thread {thread}: {per_request:.0f} us CPU/request", file=sys.stderr)
                return 0
            results: list[dict[str, Any]] = []
            rss_start = {name: runner.rss_kb(name) for name in runner.urls}
            for case in cases:
                for count in clients:
                    for app in apps:
                        if app == "direct":
                            result = run_direct(db_env, case, count, args.duration)
                        else:
                            cpu = runner.cpu_seconds(app)
                            threads = runner.thread_cpu(app)
                            db_cpu = process_cpu(server.process.pid if server.process else 0)
                            commits = _audit_commits(runner.urls[app]) if app == "gateway" else {}
                            result = run_wrk(runner.urls[app], case, count, args.duration, token)
                            if app == "gateway":
                                _print_commits(commits, _audit_commits(runner.urls[app]), result["requests"])
                            db_used = process_cpu(server.process.pid if server.process else 0) - db_cpu
                            result["db_cpu_us"] = db_used / max(result["requests"], 1) * 1e6
                            result["rss_kb"] = runner.rss_kb(app)
                            result["cpu_us"] = (runner.cpu_seconds(app) - cpu) / max(result["requests"], 1) * 1e6
                            result["thread_cpu_us"] = {
                                thread: round((seconds - threads.get(thread, 0.0)) / max(result["requests"], 1) * 1e6)
                                for thread, seconds in runner.thread_cpu(app).items()
                                if seconds - threads.get(thread, 0.0) > 0
                            }
                        result.update(case=case, clients=count, app=app)
                        results.append(result)
                        print(
                            f"{case:6} c={count:<3} {app:9} {result['rps']:8.0f} req/s"
                            f"  p50 {result['p50_us'] / 1000:7.2f} ms  p99 {result['p99_us'] / 1000:7.2f} ms"
                            f"  cpu/req {result.get('cpu_us', 0):5.0f} us  db {result.get('db_cpu_us', 0):4.0f} us"
                            f"  non-200 {result['non_200'] or '-'}"
                            f"  threads {result.get('thread_cpu_us', {})}",
                            file=sys.stderr,
                        )
            rss_end = {name: runner.rss_kb(name) for name in runner.urls}
        finally:
            runner.stop()
        audit_records = _count_audit(state, server, args.audit, rand)
        fsync_ms = fsync_latency_ms(state)
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "minutes": round((time.time() - started) / 60, 1),
        "duration_s": args.duration,
        "machine": _machine(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "rss_start_kb": rss_start,
        "rss_end_kb": rss_end,
        "audit_records": audit_records,
        "audit_store": args.audit,
        "audit_writer": args.audit_writer,
        "fsync_ms": fsync_ms,
        "note": args.note,
        "pool_size": POOL_SIZE,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps({"meta": meta, "results": results}, option=orjson.OPT_INDENT_2))
    table = render(meta, results)
    print(table)
    write_doc(args.doc, table)
    return 0


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, IndexError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    version = subprocess.run([mariadbd, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mariadb": version.split(" Ver ", 1)[-1],
        "wrk": wrk.splitlines()[0] if wrk else "?",
    }


if __name__ == "__main__":
    raise SystemExit(main())
