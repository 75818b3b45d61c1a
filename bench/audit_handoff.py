"""What the audit writer's hand-off costs one client: an awaited append against the store's own commit.

One coroutine appends a decision record (awaited, as a request does) and
queues its outcome record, ``--requests`` times, on a SQLite store with
``synchronous=FULL``; the same pairs are also committed straight to a store
in this thread (the floor: the commit and its fsync). Printed: the median and
90th percentile per request for the store alone, the thread writer and the
process writer (``audit.writer``). The JSON log set-up writes the
``audit_record`` events to /dev/null, as a gateway's would go to its stderr.
Used in docs/benchmarks.md (issue 13).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway import log as gateway_log
from gateway.audit.format import format_time
from gateway.audit.log import AuditLog
from gateway.audit.process import ProcessStore
from gateway.audit.records import DecisionRecord, OutcomeRecord, Who
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.settings import AuditSettings


def _who(i: int) -> Who:
    return Who(request_id=f"req-{i}", user="alice@example.com", user_verified=True, groups=("eng",))


def _decision(i: int) -> DecisionRecord:
    return DecisionRecord(
        who=_who(i),
        target="shop",
        db_user="reader",
        statement="SELECT id FROM items WHERE id = 1",
        transaction=False,
        decision="allow",
        code="allowed",
        grant="eng-read",
    )


def _outcome(i: int) -> OutcomeRecord:
    return OutcomeRecord(who=_who(i), target="shop", duration_ms=0.4, code="ok")


def _stored(record: DecisionRecord | OutcomeRecord) -> dict[str, object]:
    fields = record.fields()
    fields["time"] = format_time(datetime.now(UTC))
    return fields


def store_alone(path: Path, requests: int) -> list[float]:
    """Each request's two records committed straight to the store (one transaction, one fsync)."""
    store = SQLiteAuditStore(path)
    times = []
    try:
        for i in range(requests):
            started = time.perf_counter()
            store.append_batch([_stored(_outcome(i - 1)), _stored(_decision(i))])
            times.append(time.perf_counter() - started)
    finally:
        store.close()
    return times


async def through_log(log: AuditLog, requests: int) -> list[float]:
    """Each request: await its decision record, then queue its outcome record (as the pipeline does)."""
    times = []
    try:
        for i in range(requests):
            started = time.perf_counter()
            await log.append(_decision(i))
            times.append(time.perf_counter() - started)
            log.submit(_outcome(i), retry=True)
    finally:
        await log.close()
    return times


async def _process(path: Path, requests: int) -> list[float]:
    store = await asyncio.to_thread(ProcessStore, AuditSettings(path=path))
    return await through_log(AuditLog(store), requests)


def _line(name: str, times: list[float]) -> str:
    p90 = sorted(times)[int(len(times) * 0.9)]
    return f"{name:28} p50 {statistics.median(times) * 1e6:5.0f} us   p90 {p90 * 1e6:5.0f} us"


def main() -> int:
    """Run the three set-ups once each and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    sys.stderr = open("/dev/null", "w", encoding="utf-8")  # noqa: SIM115, PTH123 - the log's sink for the run
    gateway_log.configure(json=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        print(_line("store alone (2 per commit)", store_alone(directory / "alone.db", args.requests)))
        thread = asyncio.run(through_log(AuditLog(SQLiteAuditStore(directory / "thread.db")), args.requests))
        print(_line("thread writer", thread))
        print(_line("process writer", asyncio.run(_process(directory / "process.db", args.requests))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
