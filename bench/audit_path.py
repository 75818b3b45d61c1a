"""Measure the audit path's parts per request (two records), to choose a design (issue 13).

Usage: ``python bench/audit_path.py [--groups 2000]``. One thread, no event
loop, a temp directory on the machine's disk; per group of two records (a
decision and its outcome, as one request writes them):

- ``sqlite``: ``SQLiteAuditStore.append_batch`` (WAL, ``synchronous=FULL``,
  the hash chain, 8 indexes): today's store of record;
- ``segment``: the hash chain, canonical JSON lines appended to one file and
  ``os.fdatasync``: the append-only segment log the issue proposes;
- ``log events``: ``log.info_batch`` of the two ``audit_record`` events under
  the JSON set-up (to /dev/null): the SIEM copy written today on top of the store;
- ``fsync only``: a 4 KiB append + ``fdatasync``: the disk's floor.

``--requests N`` puts N requests' records in each commit, as the group commit
does under load; figures are then per request.

CPU is the thread's (``time.thread_time``), wall is ``perf_counter``; medians
over the groups, in µs. A shared machine makes wall times noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway import log
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import GENESIS_HASH, canonical, chain_hash

REQUESTS = [1]  # requests per group commit (--requests)


def _records(first: int) -> list[dict[str, object]]:
    return [record for i in range(first * REQUESTS[0], (first + 1) * REQUESTS[0]) for record in _request(i)]


def _request(i: int) -> list[dict[str, object]]:
    who = {"user": "alice@example.com", "sub": "alice", "issuer": "https://idp.example.com", "groups": ["analysts"]}
    base = {"request_id": f"{i:032x}", "target": "shop", "client": "127.0.0.1", "user_agent": "wrk", **who}
    decision = {
        **base, "event": "decision", "time": "2026-12-02T10:00:00.000000Z", "decision": "allow", "code": "allowed",
        "statement": "SELECT id, name, price FROM items WHERE id = ?", "tables": ["shop.items"], "kind": "read",
        "grant": "analysts-read-shop", "db_user": "gw_reader", "reason": "allowed by grant analysts-read-shop",
        "policy_revision": "9814893f89a2d843c735ddb2f121d81d2ebde195433870e88f600db3fe1b2bcc", "transaction": False,
    }  # fmt: skip
    outcome = {**base, "event": "outcome", "time": "2026-12-02T10:00:00.001000Z", "code": "ok", "rows": 1,
               "duration_ms": 0.8, "truncated": False}  # fmt: skip
    return [decision, outcome]


def _timed(groups: int, step: Callable[[int], None]) -> tuple[float, float]:
    cpu: list[float] = []
    wall: list[float] = []
    for i in range(groups):
        c, w = time.thread_time(), time.perf_counter()
        step(i)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu) * 1e6, statistics.median(wall) * 1e6


def main() -> int:
    """Run each part ``--groups`` times; print medians per group (one request's two records)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=1, help="requests per commit (group commit under load)")
    args = parser.parse_args()
    REQUESTS[0] = args.requests
    sink = Path(os.devnull).open("w", encoding="utf-8")  # noqa: SIM115 - the JSON log's sink for the run
    sys.stderr, real_stderr = sink, sys.stderr
    try:
        log.configure(json=True)
    finally:
        sys.stderr = real_stderr  # the log keeps the sink it was configured with
    with tempfile.TemporaryDirectory(prefix="gwaudit-") as tmpdir:
        tmp = Path(tmpdir)
        store = SQLiteAuditStore(tmp / "audit.db")
        segment = os.open(tmp / "segment.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        probe = os.open(tmp / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        head: dict[str, object] = {"hash": GENESIS_HASH, "seq": 0}

        def segment_step(i: int) -> None:
            lines = []
            for record in _records(i):
                head["seq"] = int(str(head["seq"])) + 1
                body = canonical({**record, "seq": head["seq"]})
                head["hash"] = chain_hash(str(head["hash"]), body)
                lines.append(canonical({**record, "seq": head["seq"], "hash": head["hash"]}))
            os.write(segment, b"\n".join(lines) + b"\n")
            os.fdatasync(segment)

        def sqlite_step(i: int) -> None:
            store.append_batch(_records(i))

        def events_step(i: int) -> None:  # the fields as the writer logs them (``event`` renamed)
            events = [{("audit_event" if k == "event" else k): v for k, v in r.items()} for r in _records(i)]
            log.info_batch("audit", "audit_record", events)

        def fsync_step(_: int) -> None:
            os.write(probe, b"x" * 4096)
            os.fdatasync(probe)

        parts: dict[str, Callable[[int], None]] = {
            "sqlite store (today)": sqlite_step,
            "segment log": segment_step,
            "log events (SIEM copy)": events_step,
            "fsync only": fsync_step,
        }
        results = {name: _timed(args.groups, step) for name, step in parts.items()}
        store.close()
        os.close(segment)
        os.close(probe)
    print(f"per request (two records), {args.requests} request(s) per commit, medians of {args.groups} commits:")
    print(f"  {'':24s} {'CPU µs':>8s} {'wall µs':>9s}")
    for name, (cpu, wall) in results.items():
        print(f"  {name:24s} {cpu / args.requests:8.1f} {wall / args.requests:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
