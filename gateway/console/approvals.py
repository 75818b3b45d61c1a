"""The admin's access requests: pending ones to approve (optionally narrower) or deny with a reason.

Approve and deny go through the API's own route functions, so the rules are
the API's: nobody decides their own request under any of their names (the
refusal is recorded before the 403, the page says so), an approval writes a
time-boxed grant into the managed file (``db_user`` and a shorter duration
may be chosen), a request decided meanwhile is a conflict. The page marks the
viewer's own requests and offers no buttons for them; the server refuses
them anyway.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from gateway.console.deps import AdminViewer, Viewer
from gateway.console.engineer import body_of
from gateway.console.web import ConsoleRoute, invalid_form, read_form, render
from gateway.errors import GatewayError
from gateway.http import access as accessapi
from gateway.http.deps import services_of
from gateway.policy.requests import STATES

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def _own(viewer: Viewer, item: dict[str, Any]) -> bool:
    """Whether the viewer asked for ``item`` (their person, or one of their names): shown without buttons."""
    person = (item.get("requester_issuer"), item.get("requester_sub"))
    return person == viewer.identity.person or item.get("requester") in viewer.identity.names


async def _page(request: Request, viewer: Viewer, state: str, status: int = 200, error: str | None = None) -> Response:
    services = services_of(request)
    reply = await accessapi.list_requests(viewer.identity, services.policies, services.access_requests, state or None)
    items = body_of(reply)["requests"]
    accounts: dict[str, set[str]] = {}
    for grant in services.policies.current.grants:
        accounts.setdefault(grant.target, set()).add(grant.db_user)
    return await render(
        request,
        "approvals.html",
        status=status,
        items=items,
        state=state,
        states=STATES,
        own=lambda i: _own(viewer, i),
        accounts={t: sorted(a) for t, a in accounts.items()},
        error=error,
    )


@router.get("/console/admin/requests")
async def approvals(
    request: Request, viewer: AdminViewer, state: Annotated[str, Query(max_length=16)] = "pending"
) -> Response:
    """Access requests in one state (pending by default; empty: all), newest first."""
    return await _page(request, viewer, state if state in STATES else "")


async def _decide(request: Request, viewer: Viewer, request_id: str, action: str) -> Response:
    services = services_of(request)
    form = await read_form(request)
    try:
        body = accessapi.DecisionBody(
            reason=form.get("reason") or None,
            db_user=form.get("db_user") or None,
            duration=form.get("duration") or None if action == "approve" else None,
        )
        if action == "approve":
            await accessapi.approve(
                viewer.identity,
                viewer.ctx,
                services.recorder,
                services.policies,
                services.editor,
                services.access_requests,
                services.aliases,
                services.clock,
                request_id,
                body,
            )
        else:
            await accessapi.deny(
                viewer.identity,
                viewer.ctx,
                services.recorder,
                services.access_requests,
                services.aliases,
                request_id,
                body,
            )
    except ValidationError as exc:
        return await _page(request, viewer, "pending", status=422, error=invalid_form(exc).detail)
    except GatewayError as exc:
        return await _page(request, viewer, "pending", status=exc.status, error=f"{exc.detail} ({exc.code})")
    viewer.session.notices.append(f"Request {request_id} {'approved' if action == 'approve' else 'denied'}.")
    return RedirectResponse("/console/admin/requests", status_code=303)


@router.post("/console/admin/requests/{request_id}/approve")
async def approve(request: Request, viewer: AdminViewer, request_id: str) -> Response:
    """Approve a request (optionally with another ``db_user`` or a shorter duration)."""
    return await _decide(request, viewer, request_id, "approve")


@router.post("/console/admin/requests/{request_id}/deny")
async def deny(request: Request, viewer: AdminViewer, request_id: str) -> Response:
    """Deny a request, with a reason."""
    return await _decide(request, viewer, request_id, "deny")
