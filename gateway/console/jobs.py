"""Chain verifications started from the console, run in a worker thread, their progress readable meanwhile.

A verification reads the whole log (minutes over millions of records), so
the page that starts one does not wait for it: the job runs
:func:`gateway.audit.verify.verify` in a thread, counting entries as it goes,
and the verify page shows the count against the log's length until the
result is in. One verification runs at a time per process (starting another
while one runs shows the running one); the last few results are kept.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.audit.store import AuditStore
from gateway.audit.verify import VerifyResult, verify

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.audit.anchor import S3Anchor


def _verify(
    store: AuditStore,
    progress: Callable[[int], None],
    keys: Mapping[str, Ed25519PublicKey] | None,
    anchor: S3Anchor | None,
) -> VerifyResult:
    """Verify in a worker thread, reading the S3 anchor (if any) there too."""
    anchored = None if anchor is None else anchor.iter_anchored()
    return verify(store, progress, keys=keys, anchored=anchored, batch=VERIFY_BATCH)


VERIFY_BATCH = 5000
KEPT = 20


@dataclass(slots=True)
class VerifyJob:
    """One verification: who started it, how far it got, and its result once done."""

    id: str
    user: str
    started: str  # ISO time
    total: int  # the log's length when it started (the head's seq)
    count: int = 0
    result: VerifyResult | None = None
    failed: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """Finished, with a result or a failure."""
        return self.result is not None or self.failed is not None

    @property
    def percent(self) -> int:
        """How far along, 0-100."""
        if self.done:
            return 100
        return min(99, self.count * 100 // self.total) if self.total else 0


class VerifyJobs:
    """The console's verifications in this process."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, VerifyJob] = OrderedDict()

    def running(self) -> VerifyJob | None:
        """The verification running now, if any."""
        return next((job for job in self._jobs.values() if not job.done), None)

    def get(self, job_id: str) -> VerifyJob | None:
        """A job by id."""
        return self._jobs.get(job_id)

    def start(
        self,
        store: AuditStore,
        *,
        user: str,
        started: str,
        total: int,
        keys: Mapping[str, Ed25519PublicKey] | None = None,
        anchor: S3Anchor | None = None,
    ) -> VerifyJob:
        """Start verifying ``store`` (or return the verification already running)."""
        running = self.running()
        if running is not None:
            return running
        job = VerifyJob(id=secrets.token_urlsafe(12), user=user, started=started, total=total)

        def progress(count: int) -> None:
            job.count = count  # one int, written by the worker thread, read by pages

        async def work() -> None:
            try:
                job.result = await asyncio.to_thread(_verify, store, progress, keys, anchor)
                job.count = job.result.count
            except Exception as exc:  # noqa: BLE001 - any store failure is the job's result, shown on its page
                job.failed = f"the audit store could not be read ({type(exc).__name__})"

        job.task = asyncio.get_running_loop().create_task(work(), name=f"console-verify-{job.id}")
        self._jobs[job.id] = job
        while len(self._jobs) > KEPT:
            oldest = next(iter(self._jobs.values()))
            if not oldest.done:
                break
            self._jobs.popitem(last=False)
        return job

    async def close(self) -> None:
        """Wait for a running verification to end (at shutdown)."""
        for job in list(self._jobs.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel()
