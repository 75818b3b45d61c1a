"""The run's disk: the fsync latency the audit store pays, and the records it holds."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path


def fsync_latency_ms(directory: Path, writes: int = 200) -> float:
    """Median wall time of a 4 KiB append + ``fsync`` in ``directory`` (the audit store's disk), in ms."""
    path = directory / "fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        block = b"x" * 4096
        for _ in range(writes):
            started = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    times.sort()
    return round(times[len(times) // 2] * 1000, 3)


def count_audit(path: Path) -> int:
    """Records in the gateway's SQLite audit store (0 when there is none)."""
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
