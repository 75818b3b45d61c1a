"""Statement review in the request path (issue 16): hold, dry-run and record; later, execute once.

``Holding.hold`` runs after the authorizer has written the decision record:
when the deciding grant's ``review:`` rule covers the work
(``gateway.policy.review.needs_review``), nothing commits. Writes are dry-run
on the grant's account inside a transaction that is rolled back (the grant's
timeout, in flight like any statement, an ``outcome`` record with
``committed: false`` and the review id); DDL is never executed (MariaDB commits
it implicitly), the analysis stands in for it. With a ``min_rows`` threshold
the work runs in a transaction that commits when it changes at most that many
rows, and otherwise rolls back and becomes the dry run. Inside the dry run,
``gateway.pipeline.sampling.Sampler`` reads a bounded sample of the rows each
single-table UPDATE / DELETE would change, before and after (each read decided
and recorded by the authorizer, ``reads``), kept with the review's dry run.

Records, linked by ``review``: ``requested`` (durable, before the dry run; for
a threshold rule after it, since until then it was an ordinary execution),
``dry_run`` (or ``dry_run_failed``: no review is made), later ``approved`` / ``rejected`` (``gateway.http.reviews``),
``executed`` / ``execute_failed`` / ``execute_refused`` and ``expired``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import UNSET, ReviewRecord, Who
from gateway.db import execution
from gateway.db.execution import Result
from gateway.db.pools import Pooled
from gateway.errors import (
    GatewayError,
    ReviewExpired,
    ReviewNotApproved,
    ReviewRefused,
    ReviewRejected,
    ReviewUsed,
)
from gateway.identity.tokens import Identity
from gateway.pipeline.sampling import AuthorizeRead, Sampler
from gateway.policy.decide import Decision
from gateway.policy.review import needs_review, over_threshold, review_digest
from gateway.policy.reviews import NewReview, Review, ReviewStore, new_review_id
from gateway.sql.statements import Kind, Statement

Run = Callable[[Callable[[Pooled], Awaitable[tuple[list[Result], bool]]]], Awaitable[tuple[list[Result], bool]]]
_REFUSALS: dict[str, type[ReviewRefused]] = {
    "pending": ReviewNotApproved,
    "rejected": ReviewRejected,
    "executing": ReviewUsed,
    "executed": ReviewUsed,
    "failed": ReviewUsed,
    "expired": ReviewExpired,
}


def rows_of(results: Sequence[Result]) -> list[int | None]:
    """Rows each statement changed (writes) or returned (reads)."""
    return [r.row_count if r.rows_affected is None else r.rows_affected for r in results]


def dry_run_view(
    statements: Sequence[Statement],
    rows: Sequence[int | None] | None,
    samples: Sequence[tuple[dict[str, Any] | None, str | None]] | None = None,
) -> dict[str, Any]:
    """What reviewers see of the dry run: per statement its kind, command, objects, counts (None: not run), sample.

    ``sample``: ``{columns, primary_key, before, after, more}`` (``gateway.pipeline.sampling``) or null, with
    ``sample_note`` saying why there is none or what was left out.
    """
    found = samples or [(None, None)] * len(statements)
    return {
        "executed": rows is not None,
        "rolled_back": rows is not None,
        "statements": [
            {
                "kind": s.kind.value,
                "command": s.command,
                "tables": sorted(s.tables),
                "rows_affected": None if rows is None else rows[i],
                "sample": found[i][0],
                "sample_note": found[i][1],
            }
            for i, s in enumerate(statements)
        ],
    }


def refusal_for(review: Review) -> ReviewRefused | None:
    """Why ``review`` cannot be executed in its current state (None: it is approved)."""
    kind = _REFUSALS.get(review.state)
    if kind is None:
        return None
    detail = {
        "pending": f"review {review.id} has {len(review.approvals)} of {review.min_approvals} approvals",
        "rejected": f"review {review.id} was rejected",
        "expired": f"review {review.id} expired at {review.expires_at}: ask for a new review",
    }.get(review.state, f"review {review.id} was used already ({review.state}): an approval runs once")
    return kind(detail)


class Holding:
    """Holds reviewable work (the pipeline's half of statement review)."""

    def __init__(self, store: ReviewStore, recorder: Recorder, *, sample_rows: int = 0, sample_bytes: int = 0) -> None:
        self.store = store
        self._recorder = recorder
        self._sample_rows = sample_rows
        self._sample_bytes = sample_bytes

    async def hold(  # noqa: PLR0917 - the request's parts, each needed by the review
        self,
        ctx: RequestContext,
        identity: Identity,
        decision: Decision,
        statements: Sequence[Statement],
        params: Sequence[Sequence[Any]],
        run: Run,
        *,
        transaction: bool,
        reason: str | None,
        limits: execution.Limits,
        reads: Callable[[str], AuthorizeRead] | None = None,
    ) -> tuple[dict[str, Any] | None, tuple[list[Result], bool] | None]:
        """(the 202 reply, None) when the work is held; (None, results) when a threshold let it commit; (None, None).

        ``reads(review_id)``: how the dry run's sample reads are authorized (None, or ``sample_rows`` 0: counts only).
        """
        rule = decision.review
        if rule is None or decision.grant is None or not needs_review(rule, statements):
            return None, None
        new = NewReview(
            id=new_review_id(),
            digest=review_digest(decision.target, statements, params, decision.grant, identity.person),
            author=identity.user,
            author_person=identity.person,
            target=decision.target,
            grant=decision.grant,
            transaction=transaction,
            statements=[
                {"sql": s.sql, "executed": s.executable_sql, "params": list(p)}
                for s, p in zip(statements, params, strict=True)
            ],
            reason=reason,
            dry_run={},
            reviewers=rule.reviewers,
            min_approvals=rule.min_approvals,
            valid_for=rule.valid_for,
        )
        threshold = rule.min_rows is not None
        if not threshold:
            await self._record(ctx, identity, new, "requested", "pending", statements=statements, comment=reason)
        rows: list[int | None] | None = None
        sampler: Sampler | None = None
        if not any(s.kind is Kind.DDL for s in statements):
            batch = list(zip(statements, params, strict=True))
            comment = execution.comment_for(ctx.request_id, identity.user)
            if reads is not None and self._sample_rows > 0:
                sampler = Sampler(
                    statements,
                    params,
                    limits,
                    comment,
                    reads(new.id),
                    account=decision.db_user,
                    rows=self._sample_rows,
                    max_bytes=self._sample_bytes,
                )
            probe = sampler

            def keep(results: list[Result]) -> bool:
                return threshold and not over_threshold(rule, statements, rows_of(results))

            try:
                ran = await run(
                    lambda conn: execution.run_then_decide(conn, batch, limits, comment, keep=keep, probe=probe)
                )
            except GatewayError as exc:  # the dry run failed (its outcome is recorded): no review is made
                if not threshold:
                    await self._record(ctx, identity, new, "dry_run_failed", "failed", error=exc.code)
                raise
            if ran[1]:
                return None, ran  # under the threshold: it ran and committed like any statement
            rows = rows_of(ran[0])
        if threshold:
            await self._record(ctx, identity, new, "requested", "pending", statements=statements, comment=reason)
        dry = dry_run_view(statements, rows, None if sampler is None or rows is None else sampler.samples())
        review = await asyncio.to_thread(self.store.create, dataclasses.replace(new, dry_run=dry))
        await self._record(ctx, identity, new, "dry_run", review.state, rows=rows)
        analysis = {
            "kind": ",".join(dict.fromkeys(s.kind.value for s in statements)),
            "tables": sorted({t for s in statements for t in s.tables}),
            "grant": decision.grant,
        }
        return {"status": "review_required", "review": review.view(), "analysis": analysis, "dry_run": dry}, None

    async def record(
        self,
        ctx: RequestContext,
        identity: Identity,
        review: Review,
        action: str,
        state: str,
        *,
        rows: Sequence[int | None] | None = None,
        comment: str | None = None,
        error: str | None = None,
    ) -> None:
        """Durably record one step of an existing review."""
        who = self._recorder.who(ctx, identity)
        await self._recorder.event(review_record(who, review, action, state, rows=rows, comment=comment, error=error))

    async def _record(
        self,
        ctx: RequestContext,
        identity: Identity,
        new: NewReview,
        action: str,
        state: str,
        *,
        statements: Sequence[Statement] | None = None,
        rows: Sequence[int | None] | None = None,
        comment: str | None = None,
        error: str | None = None,
    ) -> None:
        texts: str | tuple[str, ...] | None = None
        if statements is not None:
            texts = statements[0].sql if len(statements) == 1 else tuple(s.sql for s in statements)
        who = self._recorder.who(ctx, identity)
        record = review_record(who, new, action, state, statement=texts, rows=rows, comment=comment, error=error)
        await self._recorder.event(record)


def review_record(
    who: Who,
    review: Review | NewReview,
    action: str,
    state: str,
    *,
    statement: str | tuple[str, ...] | None = None,
    rows: Sequence[int | None] | None = None,
    comment: str | None = None,
    error: str | None = None,
) -> ReviewRecord:
    """The audit record of one step of a review (built here for the pipeline and the verdict routes alike)."""
    return ReviewRecord(
        who=who,
        action=action,
        review=review.id,
        digest=review.digest,
        state=state,
        author=review.author,
        author_issuer=review.author_person[0],
        author_sub=review.author_person[1],
        target=review.target,
        grant=review.grant,
        statement=UNSET if statement is None else statement,
        rows_affected=UNSET if rows is None else tuple(rows),
        comment=UNSET if comment is None else comment,
        error=UNSET if error is None else error,
    )
