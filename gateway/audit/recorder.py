"""What every stage records, and how: ``Recorder`` is the audit log as the request path uses it.

* ``decision`` records (an allowed or refused statement, a role denial) are
  durable before the caller is answered (SECURITY rule 21), counted for the
  metrics, and annotate the request's trace span;
* records of requests refused before a valid token (401, 413, 431) pass the
  flood control first: one by one within its limits, else counted into an
  ``auth_flood`` aggregate (``gateway/audit/flood.py``, SECURITY rule 29);
* ``outcome`` records are queued, retried through a store outage, and
  awaited only when ``audit.await_outcome`` says so: the statement has run, so
  failing the reply would only invite a blind retry of a write;
* any other event (policy edits, access requests, audit reads, revocation
  cancels) is durable before the caller is answered.

``who`` builds the fields every record of a request starts with.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from gateway import tracing
from gateway.audit.flood import FloodControl
from gateway.audit.log import AuditLog
from gateway.audit.records import AuditRecord, AuthRecord, DecisionRecord, OutcomeRecord, RouteDenied, Who
from gateway.errors import AuditUnavailable
from gateway.identity.tokens import Identity
from gateway.settings import AuditSettings
from gateway.tracing import Tracing

log = structlog.get_logger("gateway.audit.recorder")
Counted = DecisionRecord | RouteDenied | AuthRecord


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about the HTTP request that the audit log records."""

    request_id: str  # the gateway's own id (gateway/requestids.py)
    client: str | None
    user_agent: str | None
    client_request_id: str | None = None  # the caller's sane X-Request-ID, kept beside the gateway's
    via: str | None = None  # "console" for the web console's calls (recorded as ``via``); None for the API


class Recorder:
    """Writes the request path's records with the right durability; counts decisions for the metrics."""

    def __init__(
        self,
        audit: AuditLog,
        settings: AuditSettings,
        *,
        revision: Callable[[], str],
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        spans: Tracing | None = None,
    ) -> None:
        self._audit = audit
        self._await_outcome = settings.await_outcome
        self._revision = revision
        self._spans = spans or Tracing()
        self._floods = FloodControl(settings.unauthenticated, clock, new_id)
        self.decisions: collections.Counter[tuple[str, str]] = collections.Counter()  # (decision, code)

    def who(self, ctx: RequestContext, identity: Identity | None) -> Who:
        """The fields every audit record of this request starts with (``identity`` None: no valid token)."""
        return Who.of(
            ctx.request_id,
            identity,
            self._revision(),
            client=ctx.client,
            user_agent=ctx.user_agent,
            client_request_id=ctx.client_request_id,
            via=ctx.via,
        )

    async def decision(self, record: Counted) -> None:
        """Durably record a decision before it is acted on; a failed write raises ``AuditUnavailable``."""
        self.decisions[(record.decision, record.code)] += 1
        if self._spans.enabled:
            fields: dict[str, Any] = record.fields()
            tracing.annotate(
                **{f"gateway.{k}": fields.get(k) for k in ("request_id", "target", "decision", "code", "grant")}
            )
        try:
            with self._spans.span("audit.decision"):
                await self._audit.append(record)
        except AuditUnavailable:
            log.error("audit_write_failed", request_id=record.who.request_id, event_kind=record.EVENT)
            raise

    async def unverified(self, record: AuthRecord | RouteDenied) -> None:
        """Record a request refused before a valid token: one by one within the flood limits, else aggregated."""
        self.write_floods()  # first, so a window that has passed is closed before this record counts
        if self._floods.admit(record):
            await self.decision(record)
        else:
            self.decisions[(record.decision, record.code)] += 1

    def write_floods(self, *, everything: bool = False) -> None:
        """Queue the ``auth_flood`` aggregates that are due (all of them at shutdown)."""
        for aggregate in self._floods.due(everything=everything):
            try:
                self._audit.submit(aggregate, retry=True)  # retried through an outage, like an outcome
            except AuditUnavailable:
                log.error(
                    "audit_record_unsaved", logger="audit", reason="the audit log refused it", record=aggregate.fields()
                )

    async def event(self, record: AuditRecord) -> None:
        """Durably record an event outside the statement path (edits, access requests, reads, cancels)."""
        await self._audit.append(record)

    async def outcome(self, record: OutcomeRecord) -> None:
        """Queue how a statement ended; a record the store cannot take is logged as lost, never raised."""
        try:
            with self._spans.span("audit.outcome"):
                written = self._audit.submit(record, retry=True)
        except AuditUnavailable:
            log.error("audit_outcome_lost", request_id=record.who.request_id)
            return
        if self._await_outcome:
            with contextlib.suppress(AuditUnavailable):
                await self._audit.settled(written)
        written.add_done_callback(functools.partial(_outcome_written, record.who.request_id))


def _outcome_written(request_id: str, written: asyncio.Future[Any]) -> None:
    if not written.cancelled() and written.exception() is not None:
        log.error("audit_outcome_lost", request_id=request_id)
