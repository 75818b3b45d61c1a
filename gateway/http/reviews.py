"""Statement review routes (issue 16): list, show, approve, reject, execute.

``POST /v1/query`` and ``/v1/transaction`` answer ``202`` with a review when
the deciding grant holds the work (``gateway.pipeline.review``); these routes
take it from there:

* ``GET /v1/reviews``: ``{"mine": [...], "to_review": [...]}``, the caller's
  own reviews (by person, whichever name) and the pending ones they may decide;
* ``GET /v1/reviews/{id}``: one review, for its author, its reviewers, admins
  and auditors (anyone else: 404, as for an unknown id);
* ``POST /v1/reviews/{id}/approve`` / ``reject`` (``{"comment": ...}``, needed
  to reject): a reviewer the rule names (``reviewers`` subjects), never the
  author person under any of their names (SECURITY rule 26), not revoked on the
  target; ``min_approvals`` distinct persons approve, one rejection rejects;
* ``POST /v1/reviews/{id}/execute``: the author person only; see
  ``gateway.pipeline.execreview`` for the checks and their problem codes.

Every step is a ``review`` audit record; every refusal of a person is a
``deny`` decision record naming the review.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import ReviewRecord, RouteDenied
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.http.access import refuse_own
from gateway.http.bodies import json_body
from gateway.http.deps import AliasesDep, Caller, ClockDep, Context, PipelineDep, PoliciesDep, RecorderDep, ReviewsDep
from gateway.http.problems import JSONResponse
from gateway.identity.aliases import AliasRegistry
from gateway.identity.tokens import Identity
from gateway.pipeline.review import refusal_for, review_record
from gateway.policy.decide import active_revocations, roles_of
from gateway.policy.reviews import STATES, Review, ReviewStore, Verdict
from gateway.policy.store import PolicyStore

router = APIRouter()


class VerdictBody(BaseModel):
    """Body of approve / reject."""

    model_config = ConfigDict(extra="forbid")
    comment: Annotated[str | None, Field(max_length=500)] = None


def is_reviewer(caller: Identity, review: Review) -> bool:
    """Whether one of the caller's subjects (their name used, their groups) is among the review's reviewers."""
    return bool(caller.subjects & set(review.reviewers))


def is_author(caller: Identity, review: Review) -> bool:
    """Whether the caller is the author person (issuer, sub), whatever name their token carries."""
    return caller.person == review.author_person


def may_see(caller: Identity, review: Review, policies: PolicyStore) -> bool:
    """The author, a reviewer, an admin or an auditor."""
    return is_author(caller, review) or is_reviewer(caller, review) or bool(roles_of(caller, policies.current))


async def _visible(store: ReviewStore, review_id: str, caller: Identity, policies: PolicyStore) -> Review:
    review = await asyncio.to_thread(store.get, review_id)
    if not may_see(caller, review, policies):
        raise NotFound(f"no review {review_id!r}")  # never tell others that it exists
    return review


async def _deny(
    recorder: Recorder, ctx: RequestContext, caller: Identity, review: Review, *, route: str, reason: str
) -> None:
    record = RouteDenied(who=recorder.who(ctx, caller), code="forbidden", reason=reason, route=route, review=review.id)
    await recorder.event(record)
    raise Forbidden(reason)


@router.get("/v1/reviews")
async def list_reviews(
    caller: Caller,
    reviews: ReviewsDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> JSONResponse:
    """The caller's own reviews and the pending ones they may decide, newest first."""
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)}")
    found = await asyncio.to_thread(reviews.list, state=state)
    mine = [r.view() for r in found if is_author(caller, r)]
    to_review = [
        r.view()
        for r in found
        if r.state == "pending"
        and is_reviewer(caller, r)
        and not is_author(caller, r)
        and r.author not in caller.names
        and all((v.issuer, v.sub) != caller.person for v in r.verdicts)
    ]
    return JSONResponse({"mine": mine, "to_review": to_review})


@router.get("/v1/reviews/{review_id}")
async def show_review(caller: Caller, reviews: ReviewsDep, policies: PoliciesDep, review_id: str) -> JSONResponse:
    """One review: statements, params, dry run, verdicts, state."""
    review = await _visible(reviews, review_id, caller, policies)
    return JSONResponse({"review": review.view()})


@dataclasses.dataclass(frozen=True, slots=True)
class Verdicts:
    """What a reviewer's verdict needs, declared once: the recorder, the reviews, the policy, the names, the clock."""

    recorder: Recorder
    reviews: ReviewStore
    policies: PolicyStore
    aliases: AliasRegistry
    clock: Callable[[], datetime]


async def _verdicts(
    recorder: RecorderDep, reviews: ReviewsDep, policies: PoliciesDep, aliases: AliasesDep, clock: ClockDep
) -> Verdicts:
    return Verdicts(recorder, reviews, policies, aliases, clock)


VerdictsDep = Annotated[Verdicts, Depends(_verdicts)]


async def _verdict(
    caller: Identity, ctx: RequestContext, deps: Verdicts, review_id: str, *, verdict: str, comment: str | None
) -> dict[str, Any]:
    recorder, reviews, policies, aliases, clock = deps.recorder, deps.reviews, deps.policies, deps.aliases, deps.clock
    review = await _visible(reviews, review_id, caller, policies)
    route = f"POST /v1/reviews/{review_id}/{verdict}"
    if not is_reviewer(caller, review):
        await _deny(recorder, ctx, caller, review, route=route, reason="you are not among this review's reviewers")
    reason = "nobody reviews their own statements (under any of their names)"
    await refuse_own(
        recorder,
        aliases,
        ctx,
        caller,
        review.author_person,
        review.author,
        route=route,
        reason=reason,
        review=review.id,
    )
    if any(r.target in {"*", review.target} for r in active_revocations(caller, policies.current, clock())):
        await _deny(recorder, ctx, caller, review, route=route, reason=f"your access to {review.target} is revoked")
    refusal = refusal_for(review)
    if review.state == "expired" and refusal is not None:
        if await asyncio.to_thread(reviews.expire, review.id):  # the first to find it expired records it
            await recorder.event(_review_record(recorder, ctx, caller, review, action="expired", comment=None))
        raise refusal
    decided = await asyncio.to_thread(
        reviews.decide,
        review.id,
        Verdict(caller.issuer, caller.subject, caller.user, verdict, comment, ""),
    )
    action = "approved" if verdict == "approve" else "rejected"
    record = _review_record(recorder, ctx, caller, decided, action=action, comment=comment)
    await recorder.event(record)
    return {"review": decided.view()}


def _review_record(
    recorder: Recorder, ctx: RequestContext, caller: Identity, review: Review, *, action: str, comment: str | None
) -> ReviewRecord:
    return review_record(recorder.who(ctx, caller), review, action, review.state, comment=comment)


@router.post("/v1/reviews/{review_id}/approve")
async def approve(
    caller: Caller,
    ctx: Context,
    deps: VerdictsDep,
    review_id: str,
    body: Annotated[VerdictBody, Depends(json_body(VerdictBody))],
) -> JSONResponse:
    """Approve as one of the review's reviewers; ``min_approvals`` distinct persons make it executable."""
    return JSONResponse(await _verdict(caller, ctx, deps, review_id, verdict="approve", comment=body.comment))


@router.post("/v1/reviews/{review_id}/reject")
async def reject(
    caller: Caller,
    ctx: Context,
    deps: VerdictsDep,
    review_id: str,
    body: Annotated[VerdictBody, Depends(json_body(VerdictBody))],
) -> JSONResponse:
    """Reject, with a comment: the review can no longer be executed."""
    if not body.comment:
        raise InvalidRequest("a rejection needs a comment")
    return JSONResponse(await _verdict(caller, ctx, deps, review_id, verdict="reject", comment=body.comment))


@router.post("/v1/reviews/{review_id}/execute")
async def execute(  # noqa: PLR0917 - FastAPI dependencies
    caller: Caller,
    ctx: Context,
    recorder: RecorderDep,
    reviews: ReviewsDep,
    policies: PoliciesDep,
    pipeline: PipelineDep,
    review_id: str,
) -> JSONResponse:
    """Run the approved review's bound statements, once, as its author."""
    review = await _visible(reviews, review_id, caller, policies)
    if not is_author(caller, review):
        route = f"POST /v1/reviews/{review_id}/execute"
        await _deny(recorder, ctx, caller, review, route=route, reason="only the author of a review executes it")
    return JSONResponse(await pipeline.execute_review(ctx, caller, review))
