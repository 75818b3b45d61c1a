"""The engineer's pages: who they are and what they may use (``/console/``), and their access requests.

The home page is ``GET /v1/me`` and ``GET /v1/targets`` as a page: the
person's groups and roles, the targets they can use with the access level,
and their effective grants with what each allows and when it expires.
``/console/requests`` lists their own access requests and asks for a new one
through the same route function as ``POST /v1/access-requests`` (the same
checks and the same ``access_request`` record, marked as from the console).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from gateway.console.deps import Viewer, ViewerDep
from gateway.console.web import ConsoleRoute, invalid_form, read_form, render
from gateway.errors import GatewayError
from gateway.http import access as accessapi
from gateway.http.deps import services_of
from gateway.policy import views

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def body_of(response: Response) -> Any:  # noqa: ANN401 - the JSON an API route answered
    """The JSON body of an API route's response (the console calls the API's own route functions)."""
    return orjson.loads(bytes(response.body))


@router.get("/console/")
async def home(request: Request, viewer: ViewerDep) -> Response:
    """The viewer, their roles, the targets they can use and their effective grants."""
    services = services_of(request)
    now = services.clock()
    me = views.me(viewer.identity, services.policies.current, now)
    targets = views.targets(viewer.identity, services.policies.current, now, services.settings.targets)
    return await render(request, "home.html", me=me, targets=targets)


async def _own_requests(request: Request, viewer: Viewer) -> list[dict[str, Any]]:
    store = services_of(request).access_requests
    found: list[dict[str, Any]] = await asyncio.to_thread(
        store.list, requester=viewer.user, person=viewer.identity.person
    )
    return found


@router.get("/console/requests")
async def requests_page(request: Request, viewer: ViewerDep) -> Response:
    """The viewer's access requests, newest first, and the form to ask for more."""
    services = services_of(request)
    return await render(
        request,
        "requests.html",
        requests=await _own_requests(request, viewer),
        targets=sorted(services.settings.targets),
        form={},
        error=None,
        created=request.query_params.get("created"),
    )


@router.post("/console/requests")
async def create_request(request: Request, viewer: ViewerDep) -> Response:
    """Ask for time-boxed access, through ``POST /v1/access-requests``'s own route function."""
    services = services_of(request)
    form = await read_form(request)
    values = {name: form.get(name) for name in ("target", "access", "duration", "reason")}
    try:
        body = accessapi.RequestBody(**values)
        reply = await accessapi.create_request(
            viewer.identity, viewer.ctx, services.recorder, services.settings, services.access_requests, body
        )
    except GatewayError as error:
        return await _requests_error(request, viewer, values, error)
    except ValidationError as error:  # the form's values are out of the API's bounds
        return await _requests_error(request, viewer, values, invalid_form(error))
    created = body_of(reply)["id"]
    return RedirectResponse(f"/console/requests?created={created}", status_code=303)


async def _requests_error(request: Request, viewer: Viewer, values: dict[str, str], error: GatewayError) -> Response:
    services = services_of(request)
    return await render(
        request,
        "requests.html",
        status=error.status,
        requests=await _own_requests(request, viewer),
        targets=sorted(services.settings.targets),
        form=values,
        error=error,
        created=None,
    )
