"""``Pipeline``: authenticate, authorize (analysis, decision, views, the durable decision record), run, record.

It orchestrates only: analysis is ``gateway.sql``, the decision
``gateway.policy``, views and execution ``gateway.db``, records
``gateway.audit.recorder``, statements in flight ``gateway.revocation``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import AuthRecord, OutcomeRecord
from gateway.db import execution, streaming
from gateway.db.catalog import ViewCatalog
from gateway.db.pools import Pooled, PoolRegistry
from gateway.errors import GatewayError, Unauthenticated
from gateway.identity.tokens import Identity, TokenValidator, token_hash
from gateway.pipeline.authorize import Authorizer, StatementRequest
from gateway.pipeline.execreview import RESULT_FIELDS, ReviewExecution
from gateway.pipeline.review import Holding
from gateway.pipeline.stream import Stream, elapsed_ms, ids_of
from gateway.policy.decide import Decision
from gateway.policy.review import needs_review
from gateway.policy.reviews import ReviewStore
from gateway.policy.store import PolicyStore
from gateway.revocation.inflight import InFlight, Running, as_revoked
from gateway.settings import Settings
from gateway.sql.statements import Kind, Statement
from gateway.tracing import Tracing

_T = TypeVar("_T")


class Pipeline(ReviewExecution):
    """Runs requests through the stages built in the app's lifespan."""

    def __init__(  # noqa: PLR0917 - the stages, each a separate part
        self,
        settings: Settings,
        validator: TokenValidator,
        policies: PolicyStore,
        pools: PoolRegistry,
        recorder: Recorder,
        inflight: InFlight,
        *,
        clock: Callable[[], datetime],
        spans: Tracing | None = None,
        views: ViewCatalog | None = None,
        reviews: ReviewStore | None = None,
        review_row_margin: int = 0,
    ) -> None:
        self._settings = settings
        self._validator = validator
        self._policies = policies
        self._pools = pools
        self._recorder = recorder
        self._inflight = inflight
        self._clock = clock
        self._spans = spans or Tracing()
        self._views = views
        self._authorizer = Authorizer(settings, policies, recorder, clock=clock, spans=self._spans, views=views)
        admin = settings.admin
        self._holding = (
            None
            if reviews is None
            else Holding(
                reviews, recorder, sample_rows=admin.review_sample_rows, sample_bytes=admin.review_sample_bytes
            )
        )
        self._row_margin = review_row_margin

    async def authenticate(self, token: str | None, ctx: RequestContext) -> Identity:
        """Validate the bearer token; record a refusal (with the token's unverified subject)."""
        try:
            if not token:
                raise Unauthenticated("no bearer token")
            with self._spans.span("authn"):
                return await self._validator.validate(token)
        except GatewayError as exc:  # Unauthenticated, or an oversized token
            unverified = exc.unverified_subject if isinstance(exc, Unauthenticated) else None
            reason = exc.reason if isinstance(exc, Unauthenticated) else exc.detail
            who = self._recorder.who(ctx, None)
            record = AuthRecord(
                who=dataclasses.replace(who, user=unverified) if unverified else who,
                code=exc.code,
                reason=reason,
                token_hash=token_hash(token),
            )
            await self._recorder.unverified(record)
            raise

    async def query(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        request: StatementRequest,
        max_rows: int | None,
        *,
        reason: str | None = None,
        decided: tuple[Decision, Statement] | None = None,
    ) -> dict[str, Any]:
        """Run one statement and reply per the SPEC's shape (or hold it for review: ``status: review_required``).

        ``decided``: the stream route's decision, already recorded, for work held for review.
        """
        if decided is None:
            decision, (statement,) = await self._authorizer.authorize(
                ctx, identity, target, [request], transaction=False
            )
        else:
            decision, statement = decided
        limits = execution.limits_for(self._settings.limits, decision, max_rows)
        comment = execution.comment_for(ctx.request_id, identity.user)
        started = time.perf_counter()
        held, ran = await self._hold(ctx, identity, decision, [statement], [request], started, limits, reason, tx=False)
        if held is not None:
            return held
        result = (
            ran[0]
            if ran
            else await self._on_connection(
                ctx,
                identity,
                decision,
                started,
                lambda conn: execution.run_statement(conn, statement, request.params, limits, comment),
                transaction=False,
            )
        )
        duration = elapsed_ms(started)
        if statement.kind is Kind.DDL and self._views is not None:
            self._views.forget(target)  # a view may have been made or redefined
        rows = result.row_count if result.rows_affected is None else result.rows_affected
        await self._outcome(ctx, identity, target, started, code="ok", rows=rows, truncated=result.truncated)
        return {
            **ids_of(ctx),
            "target": target,
            "kind": statement.kind.value,
            "grant": decision.grant,
            "columns": result.columns,
            "rows": result.rows,
            "row_count": result.row_count,
            "truncated": result.truncated,
            "rows_affected": result.rows_affected,
            "last_insert_id": result.last_insert_id,
            "duration_ms": duration,
        }

    async def transaction(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        requests: Sequence[StatementRequest],
        *,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Authorize every statement first, then run them all-or-nothing (or hold them for review as a whole)."""
        decision, statements = await self._authorizer.authorize(ctx, identity, target, requests, transaction=True)
        limits = execution.limits_for(self._settings.limits, decision, None)
        comment = execution.comment_for(ctx.request_id, identity.user)
        started = time.perf_counter()
        held, ran = await self._hold(ctx, identity, decision, statements, requests, started, limits, reason, tx=True)
        if held is not None:
            return held
        batch = [(s, r.params) for s, r in zip(statements, requests, strict=True)]
        if ran is None:
            ran = await self._on_connection(
                ctx,
                identity,
                decision,
                started,
                lambda conn: execution.run_transaction(conn, batch, limits, comment),
                transaction=True,
            )
        results = ran
        duration = elapsed_ms(started)
        rows = sum(r.rows_affected or r.row_count for r in results)
        await self._outcome(ctx, identity, target, started, code="ok", committed=True, rows=rows)
        replies = [
            {"kind": s.kind.value, **{k: getattr(r, k) for k in RESULT_FIELDS}}
            for s, r in zip(statements, results, strict=True)
        ]
        return {
            **ids_of(ctx),
            "target": target,
            "grant": decision.grant,
            "committed": True,
            "results": replies,
            "duration_ms": duration,
        }

    async def open_stream(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        request: StatementRequest,
        max_rows: int | None,
        *,
        reason: str | None = None,
    ) -> Stream | dict[str, Any]:
        """Authorize and start one statement whose rows stream; the stream records how it ends.

        Work the grant holds for review is not streamed: the reply is the review (a dict), as for ``query``.
        """
        decision, (statement,) = await self._authorizer.authorize(ctx, identity, target, [request], transaction=False)
        if needs_review(decision.review, [statement]):  # held (or refused without a store), never streamed
            return await self.query(
                ctx, identity, target, request, max_rows, reason=reason, decided=(decision, statement)
            )
        limits = execution.limits_for(self._settings.limits, decision, max_rows, stream=True)
        pool = self._pools.pool_for(decision)
        started = time.perf_counter()
        tracking = contextlib.ExitStack()
        running: Running | None = None
        try:
            with self._spans.span("pool.wait"):
                conn = await pool.acquire()
            # A stream is an in-flight statement too: a revocation cancels it like any other.
            running = _running(ctx, identity, decision, conn, transaction=False)
            try:
                tracking.enter_context(self._admitted(running))
            except BaseException:
                pool.release(conn)
                raise
            comment = execution.comment_for(ctx.request_id, identity.user)
            rows = await streaming.start(pool, conn, statement, request.params, limits, comment)
        except GatewayError as exc:
            tracking.close()
            error = as_revoked(exc, running)
            await self._outcome(ctx, identity, target, started, code=error.code, error=error.detail)
            raise error from None
        header = {**ids_of(ctx), "target": target, "kind": statement.kind.value, "grant": decision.grant}
        outcome = OutcomeRecord(who=self._recorder.who(ctx, identity), target=target, code="ok", duration_ms=0.0)
        return Stream(rows, header, running, tracking, self._recorder, outcome, started=started)

    async def _on_connection(
        self,
        ctx: RequestContext,
        identity: Identity,
        decision: Decision,
        started: float,
        work: Callable[[Pooled], Awaitable[_T]],
        *,
        transaction: bool,
    ) -> _T:
        """Run ``work`` on a pooled connection as an in-flight statement a revocation can cancel.

        A failure is recorded as the outcome (``revoked`` when a revocation
        cancelled it) and raised; success is the caller's to record.
        """
        running: Running | None = None
        try:
            async with self._pools.connection(decision, waiting=self._spans.span("pool.wait")) as conn:
                running = _running(ctx, identity, decision, conn, transaction=transaction)
                with self._admitted(running), self._spans.span("execute"):
                    return await work(conn)
        except GatewayError as exc:
            error = as_revoked(exc, running)
            failed: dict[str, Any] = {"committed": False} if transaction else {}
            await self._outcome(ctx, identity, decision.target, started, code=error.code, error=error.detail, **failed)
            raise error from None

    def _admitted(self, running: Running) -> contextlib.AbstractContextManager[Running]:
        return self._inflight.admitted(running, self._policies.current, self._clock())

    async def _outcome(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        started: float,
        **fields: Any,  # noqa: ANN401 - the outcome record's fields
    ) -> None:
        who = self._recorder.who(ctx, identity)
        await self._recorder.outcome(OutcomeRecord(who=who, target=target, duration_ms=elapsed_ms(started), **fields))


def _running(
    ctx: RequestContext, identity: Identity, decision: Decision, conn: Pooled, *, transaction: bool
) -> Running:
    return Running(
        identity,
        decision.target,
        decision.db_user or "",
        conn.thread_id,
        transaction=transaction,
        request_id=ctx.request_id,
    )
