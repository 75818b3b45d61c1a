"""The background task that signs a checkpoint over every chain head every few seconds.

Started in the lifespan when the shared store is in use and
``audit.checkpoints.signing_key`` is set. Each round reads every chain's head
and, when any moved since this replica's last checkpoint, signs and stores a
new one (an idle gateway writes none). A failed round is logged and the next
one tries again: checkpoints are evidence added to the log, never a reason to
refuse a statement (the records themselves are what fails closed).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from gateway.audit.format import format_time

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from gateway.audit.checkpoints import Checkpoint, Signer


@runtime_checkable
class CheckpointWriter(Protocol):
    """A store that can sign and keep a checkpoint over its chain heads (the shared MariaDB store)."""

    def write_checkpoint(self, signer: Signer, time: str) -> Checkpoint | None:
        """Sign and store a checkpoint unless no head moved since the last one."""
        ...


async def run_checkpoints(
    store: CheckpointWriter, signer: Signer, interval: float, clock: Callable[[], datetime]
) -> None:
    """Write a checkpoint every ``interval`` seconds until cancelled."""
    logger = structlog.get_logger("audit")
    while True:
        await asyncio.sleep(interval)
        try:
            written = await asyncio.to_thread(store.write_checkpoint, signer, format_time(clock()))
        except Exception as exc:  # noqa: BLE001 - any store failure: logged, retried next round
            logger.warning("audit_checkpoint_failed", logger="audit", error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        if written is not None:
            logger.info("audit_checkpoint", logger="audit", checkpoint=written.id, key_id=written.key_id)
