"""Revocation is immediate: cancel the running statements of users a new policy cuts off.

Called on every policy reload. Single statements get ``KILL QUERY`` and open
transactions ``KILL CONNECTION`` (so they cannot go on between statements),
each sent over a fresh connection of the same database account (MariaDB lets
an account kill its own threads without PROCESS). Each kill is recorded
(``revocation_cancel``) by the revoker itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import RevocationCancelRecord
from gateway.db.pools import PoolRegistry
from gateway.errors import AuditUnavailable
from gateway.policy.types import PolicySet
from gateway.revocation.inflight import InFlight, Running

log = structlog.get_logger("gateway.revocation.revoker")


class Revoker:
    """Listens to policy reloads and kills what lost its access."""

    def __init__(
        self, inflight: InFlight, pools: PoolRegistry, recorder: Recorder, clock: Callable[[], datetime]
    ) -> None:
        self._inflight = inflight
        self._recorder = recorder
        self._pools = pools
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def policy_changed(self, policy: PolicySet) -> None:
        """A new policy is in force: cancel the statements of users it cut off."""
        victims = self._inflight.lost_access(policy, self._clock())
        if not victims:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing can be running either
            task = asyncio.get_running_loop().create_task(self._cancel(victims))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _cancel(self, victims: list[Running]) -> None:
        for running in victims:
            pool = self._pools.pools().get((running.target, running.db_user))
            killed = pool is not None and await pool.kill(running.thread_id, connection=running.transaction)
            log.warning(
                "revoked_statement_cancelled",
                user=running.identity.user,
                target=running.target,
                thread_id=running.thread_id,
                killed=killed,
            )
            await self._record(running, killed=killed)

    async def _record(self, running: Running, *, killed: bool) -> None:
        """Record the kill (a decision of its own): the request it cancelled, the thread, whether it took."""
        record = RevocationCancelRecord(
            who=self._recorder.who(RequestContext(running.request_id, None, None), running.identity),
            target=running.target,
            db_user=running.db_user,
            thread_id=running.thread_id,
            action="KILL CONNECTION" if running.transaction else "KILL QUERY",
            killed=killed,
        )
        try:
            await self._recorder.event(record)
        except AuditUnavailable:
            log.error("audit_write_failed", request_id=running.request_id, event_kind=record.EVENT)
