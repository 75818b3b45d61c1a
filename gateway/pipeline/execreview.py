"""Executing an approved review (issue 16): the author runs the bound statements once, if all still agrees.

A mixin of ``Pipeline`` (``gateway.pipeline.core``), kept apart so each module
stays one idea. The order: the review's state (expired, rejected, used, not yet
approved: each refused with its own code and an ``execute_refused`` record),
then the policy decides again on the stored statements (a ``decision`` record
naming the review; a revocation or a withdrawn grant refuses here), the grant
and digest must be the reviewed ones, the approval is claimed (single use),
and the statements run in one transaction that commits only when every write
changes as many rows as its dry run did, within ``admin.review_row_margin``.
DDL (never dry-run) runs as the single statement it is.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.audit.recorder import RequestContext
from gateway.db import execution
from gateway.db.catalog import ViewCatalog
from gateway.db.encoding import JSONValue
from gateway.db.pools import Pooled
from gateway.errors import GatewayError, ReviewPolicyChanged, ReviewRowsChanged, ReviewUsed, StatementRejected
from gateway.identity.tokens import Identity
from gateway.pipeline.authorize import Authorizer, StatementRequest
from gateway.pipeline.review import Holding, refusal_for, rows_of
from gateway.pipeline.sampling import AuthorizeRead
from gateway.pipeline.stream import ids_of
from gateway.policy.decide import Decision
from gateway.policy.review import needs_review, review_digest
from gateway.policy.reviews import Review
from gateway.settings import Settings
from gateway.sql.statements import Kind, Statement

_T = TypeVar("_T")
RESULT_FIELDS = ("columns", "rows", "row_count", "truncated", "rows_affected", "last_insert_id")


class ReviewExecution:
    """``Pipeline._hold`` and ``.execute_review``: what the pipeline provides is declared here, defined there."""

    _settings: Settings
    _authorizer: Authorizer
    _views: ViewCatalog | None
    _row_margin: int
    _holding: Holding | None

    if TYPE_CHECKING:

        async def _on_connection(
            self,
            ctx: RequestContext,
            identity: Identity,
            decision: Decision,
            started: float,
            work: Callable[[Pooled], Awaitable[_T]],
            *,
            transaction: bool,
        ) -> _T: ...

        async def _outcome(
            self,
            ctx: RequestContext,
            identity: Identity,
            target: str,
            started: float,
            **fields: Any,  # noqa: ANN401 - the outcome record's fields
        ) -> None: ...

    async def _hold(  # noqa: PLR0917 - the request's parts
        self,
        ctx: RequestContext,
        identity: Identity,
        decision: Decision,
        statements: Sequence[Statement],
        requests: Sequence[StatementRequest],
        started: float,
        limits: execution.Limits,
        reason: str | None,
        *,
        tx: bool,
    ) -> tuple[dict[str, Any] | None, list[execution.Result] | None]:
        """Hold the work for review (the 202 reply), or the results of a threshold run that committed, or neither."""
        if self._holding is None:
            if needs_review(decision.review, statements):  # fail closed: nothing runs that a review should hold
                raise StatementRejected("this statement needs review, and this gateway has no review store")
            return None, None

        def run(
            work: Callable[[Pooled], Awaitable[tuple[list[execution.Result], bool]]],
        ) -> Awaitable[tuple[list[execution.Result], bool]]:
            return self._on_connection(ctx, identity, decision, started, work, transaction=True)

        def reads(review: str) -> AuthorizeRead:
            async def authorize(sql: str, params: Sequence[JSONValue]) -> tuple[Decision, Statement]:
                # The sample read is decided and recorded like any read the caller sent (SECURITY: never widened).
                request = StatementRequest(sql, params)
                allowed, (read,) = await self._authorizer.authorize(
                    ctx, identity, decision.target, [request], transaction=False, review=review
                )
                return allowed, read

            return authorize

        params = [r.params for r in requests]
        held, ran = await self._holding.hold(
            ctx, identity, decision, statements, params, run, transaction=tx, reason=reason, limits=limits, reads=reads
        )
        if held is None:
            return None, None if ran is None else ran[0]
        dry = held["dry_run"]
        if dry["executed"]:  # the dry run ran and rolled back: its outcome, linked to the review
            rows = sum(s["rows_affected"] or 0 for s in dry["statements"])
            review = held["review"]["id"]
            await self._outcome(
                ctx, identity, decision.target, started, code="ok", committed=False, rows=rows, review=review
            )
        return {**ids_of(ctx), **held}, None

    async def execute_review(self, ctx: RequestContext, identity: Identity, review: Review) -> dict[str, Any]:
        """Run an approved review's bound statements once, by its author, if the policy and the counts still agree.

        The caller (``gateway.http.reviews``) has checked that ``identity`` is the
        author person and recorded any refusal of its own.
        """
        holding = self._holding
        if holding is None:
            raise ReviewPolicyChanged("statement review is not enabled on this gateway")
        refusal = refusal_for(review)
        if refusal is not None:
            if review.state == "expired" and await asyncio.to_thread(holding.store.expire, review.id):
                await holding.record(ctx, identity, review, "expired", "expired")
            await holding.record(ctx, identity, review, "execute_refused", review.state, error=refusal.code)
            raise refusal
        requests = [StatementRequest(s["sql"], s["params"]) for s in review.statements]
        decision, statements = await self._authorizer.authorize(
            ctx, identity, review.target, requests, transaction=review.transaction, review=review.id
        )
        params = [r.params for r in requests]
        digest = review_digest(review.target, statements, params, decision.grant or "", identity.person)
        if decision.grant != review.grant or digest != review.digest:
            changed = ReviewPolicyChanged(
                f"the policy now decides review {review.id} by grant {decision.grant}, not {review.grant}"
                if decision.grant != review.grant
                else f"review {review.id}'s statements no longer read as they did when reviewed"
            )
            await holding.record(ctx, identity, review, "execute_refused", review.state, error=changed.code)
            raise changed
        if not await asyncio.to_thread(holding.store.claim, review.id):
            now = await asyncio.to_thread(holding.store.get, review.id)
            raise refusal_for(now) or ReviewUsed(f"review {review.id} was used already")
        return await self._run_review(ctx, identity, review, decision, statements, params)

    async def _run_review(  # noqa: PLR0917 - the review's parts
        self,
        ctx: RequestContext,
        identity: Identity,
        review: Review,
        decision: Decision,
        statements: Sequence[Statement],
        params: Sequence[Sequence[Any]],
    ) -> dict[str, Any]:
        holding = self._holding
        assert holding is not None  # noqa: S101 - execute_review checked it
        limits = execution.limits_for(self._settings.limits, decision, None)
        comment = execution.comment_for(ctx.request_id, identity.user)
        expected = [s["rows_affected"] for s in review.dry_run.get("statements", [])]
        margin = self._row_margin

        def keep(results: list[execution.Result]) -> bool:
            rows = rows_of(results)
            return not review.dry_run.get("executed") or all(
                s.kind is not Kind.WRITE or abs((now or 0) - (then or 0)) <= margin
                for s, now, then in zip(statements, rows, expected, strict=True)
            )

        batch = list(zip(statements, params, strict=True))
        started = time.perf_counter()
        try:
            if any(s.kind is Kind.DDL for s in statements):
                (statement,) = statements
                result = await self._on_connection(
                    ctx,
                    identity,
                    decision,
                    started,
                    lambda conn: execution.run_statement(conn, statement, params[0], limits, comment),
                    transaction=False,
                )
                results, committed = [result], True
                if self._views is not None:
                    self._views.forget(review.target)
            else:
                results, committed = await self._on_connection(
                    ctx,
                    identity,
                    decision,
                    started,
                    lambda conn: execution.run_then_decide(conn, batch, limits, comment, keep=keep),
                    transaction=True,
                )
        except GatewayError as exc:
            await asyncio.to_thread(holding.store.finish, review.id, state="failed", result={"error": exc.code})
            await holding.record(ctx, identity, review, "execute_failed", "failed", error=exc.code)
            raise
        rows = rows_of(results)
        if not committed:
            changed = ReviewRowsChanged(
                f"review {review.id} would now change {rows} rows where its dry run changed {expected}: rolled back"
            )
            await asyncio.to_thread(
                holding.store.finish, review.id, state="failed", result={"error": changed.code, "rows_affected": rows}
            )
            await self._outcome(
                ctx, identity, review.target, started, code=changed.code, committed=False, review=review.id
            )
            await holding.record(ctx, identity, review, "execute_failed", "failed", rows=rows, error=changed.code)
            raise changed
        await asyncio.to_thread(holding.store.finish, review.id, state="executed", result={"rows_affected": rows})
        await self._outcome(
            ctx,
            identity,
            review.target,
            started,
            code="ok",
            committed=True,
            rows=sum(r or 0 for r in rows),
            review=review.id,
        )
        await holding.record(ctx, identity, review, "executed", "executed", rows=rows)
        replies = [
            {"kind": s.kind.value, **{k: getattr(r, k) for k in RESULT_FIELDS}}
            for s, r in zip(statements, results, strict=True)
        ]
        return {
            **ids_of(ctx),
            "review": review.id,
            "state": "executed",
            "target": review.target,
            "grant": decision.grant,
            "committed": True,
            "results": replies,
        }
