"""Statement reviews in the console (issue 16): the reviewer's queue and the author's own reviews.

``/console/reviews`` shows the pending reviews the viewer may decide (the
statement as the gateway runs it, highlighted on the server
(``reviewview.highlight``), its params, the dry run's counts and its sample
as a before/after table with the changed cells marked, or, for DDL, the
objects it would change, and the author's reason) with approve / reject forms, and the viewer's
own reviews with an execute button once approved. Every action goes through
the API's own route functions, so the rules are the API's: never the author
person under any name (the refusal is recorded before the 403), distinct
reviewers, single use, and the same problem codes. Forms carry the CSRF token
(``ConsoleRoute`` checks it on every POST).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from gateway.console.deps import Viewer, ViewerDep
from gateway.console.engineer import body_of
from gateway.console.reviewview import diff_rows, highlight
from gateway.console.web import ConsoleRoute, invalid_form, read_form, render
from gateway.errors import GatewayError
from gateway.http import reviews as reviewsapi
from gateway.http.deps import services_of

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _shown(review: dict[str, Any]) -> dict[str, Any]:
    """A review's view with each statement highlighted and its dry run's sample as diff rows."""
    dry = review.get("dry_run") or {}
    steps = dry.get("statements") or []
    shown = []
    for index, statement in enumerate(review["statements"]):
        step = steps[index] if index < len(steps) else {}
        sample = step.get("sample")
        shown.append(
            {
                **statement,
                "html": highlight(statement["executed"]),
                "step": step,
                "diff": None if sample is None else diff_rows(sample, step.get("command", "")),
            }
        )
    return {**review, "shown": shown}


async def _page(request: Request, viewer: Viewer, status: int = 200, error: str | None = None) -> Response:
    services = services_of(request)
    reply = body_of(await reviewsapi.list_reviews(viewer.identity, services.reviews, None))
    mine = [_shown(r) for r in reply["mine"]]
    to_review = [_shown(r) for r in reply["to_review"]]
    return await render(request, "reviews.html", status=status, mine=mine, to_review=to_review, error=error)


@router.get("/console/reviews")
async def reviews(request: Request, viewer: ViewerDep) -> Response:
    """The queue of reviews waiting for the viewer, and the viewer's own reviews."""
    return await _page(request, viewer)


async def _act(request: Request, viewer: Viewer, review_id: str, action: str) -> Response:
    services = services_of(request)
    form = await read_form(request)
    try:
        if action == "execute":
            await reviewsapi.execute(
                viewer.identity,
                viewer.ctx,
                services.recorder,
                services.reviews,
                services.policies,
                services.pipeline,
                review_id,
            )
        else:
            body = reviewsapi.VerdictBody(comment=form.get("comment") or None)
            route = reviewsapi.approve if action == "approve" else reviewsapi.reject
            deps = reviewsapi.Verdicts(
                services.recorder, services.reviews, services.policies, services.aliases, services.clock
            )
            await route(viewer.identity, viewer.ctx, deps, review_id, body)
    except ValidationError as exc:
        return await _page(request, viewer, status=422, error=invalid_form(exc).detail)
    except GatewayError as exc:
        return await _page(request, viewer, status=exc.status, error=f"{exc.detail} ({exc.code})")
    done = {"approve": "approved", "reject": "rejected", "execute": "executed"}[action]
    viewer.session.notices.append(f"Review {review_id} {done}.")
    return RedirectResponse("/console/reviews", status_code=303)


@router.post("/console/reviews/{review_id}/approve")
async def approve(request: Request, viewer: ViewerDep, review_id: str) -> Response:
    """Approve a review (optional comment)."""
    return await _act(request, viewer, review_id, "approve")


@router.post("/console/reviews/{review_id}/reject")
async def reject(request: Request, viewer: ViewerDep, review_id: str) -> Response:
    """Reject a review, with a comment."""
    return await _act(request, viewer, review_id, "reject")


@router.post("/console/reviews/{review_id}/execute")
async def execute(request: Request, viewer: ViewerDep, review_id: str) -> Response:
    """Execute one's own approved review, once."""
    return await _act(request, viewer, review_id, "execute")
