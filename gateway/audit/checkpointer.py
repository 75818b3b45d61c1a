"""The background task that signs a checkpoint over every chain head every few seconds.

Started in the lifespan when the shared store is in use and
``audit.checkpoints.signing_key`` is set. Each round reads every chain's head
and, when any moved since this replica's last checkpoint, signs and stores a
new one (an idle gateway writes none), then copies every checkpoint not yet
anchored to S3 (``audit.checkpoints.anchor``), oldest first. A failed round
is logged and the next one tries again (a checkpoint that could not be
anchored stays queued, up to :data:`MAX_UNANCHORED`): checkpoints are
evidence added to the log, never a reason to refuse a statement (the records
themselves are what fails closed).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from gateway.audit.format import format_time

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from gateway.audit.anchor import S3Anchor
    from gateway.audit.checkpoints import Checkpoint, Signer

MAX_UNANCHORED = 10_000


@runtime_checkable
class CheckpointWriter(Protocol):
    """A store that can sign and keep a checkpoint over its chain heads (the shared MariaDB store)."""

    def write_checkpoint(self, signer: Signer, time: str) -> Checkpoint | None:
        """Sign and store a checkpoint unless no head moved since the last one."""
        ...


class Checkpointer:
    """One replica's checkpoints: written to the store, then anchored; :meth:`round` is one step (blocking)."""

    def __init__(self, store: CheckpointWriter, signer: Signer, anchor: S3Anchor | None = None) -> None:
        self.store = store
        self.signer = signer
        self.anchor = anchor
        self.unanchored: list[Checkpoint] = []
        self._logger = structlog.get_logger("audit")

    def round(self, now: datetime) -> Checkpoint | None:
        """Write a checkpoint if a head moved, anchor what is pending; return the checkpoint written."""
        written = self.store.write_checkpoint(self.signer, format_time(now))
        if written is not None:
            self._logger.info("audit_checkpoint", logger="audit", checkpoint=written.id, key_id=written.key_id)
            if self.anchor is not None:
                self.unanchored = [*self.unanchored, written][-MAX_UNANCHORED:]
        while self.anchor is not None and self.unanchored:
            self.anchor.put(self.unanchored[0], now)  # raises: the rest waits for the next round
            self.unanchored.pop(0)
        return written

    async def run(self, interval: float, clock: Callable[[], datetime]) -> None:
        """A round every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.round, clock())
            except Exception as exc:  # noqa: BLE001 - any store or S3 failure: logged, retried next round
                self._logger.warning(
                    "audit_checkpoint_failed", logger="audit", error=f"{type(exc).__name__}: {exc}"[:300]
                )
