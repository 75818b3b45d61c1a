"""Child processes seen through /proc: which a process has, and whether one has ended (tests and bench)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s child processes (any of its threads')."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def ended(pid: int, within: float = 20.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``within`` seconds (polled, a bounded wait)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.02)
    return False
