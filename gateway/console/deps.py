"""What console routes take, declared once: the signed-in ``Viewer``, and the same for admins and auditors.

``Viewer`` resolves the session cookie to a live session, then validates the
session's access token through the pipeline, exactly as an API call's bearer
token (an expired or refused token is a recorded 401 and ends the session,
and the browser is sent to sign in again). Its :class:`RequestContext` says
``via="console"``, so every record the page's actions write is marked as
coming from the console.

A state-changing request (anything but GET and HEAD) must also pass the CSRF
check before the route runs: the form's ``csrf`` field equals the session's
token (compared in constant time), and, when the browser says where the
request came from (``Origin``, ``Sec-Fetch-Site``), it came from the console's
own origin. A refusal is recorded (a ``decision`` denied, route and reason)
and answered 403.
"""

from __future__ import annotations

import dataclasses
import hmac
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.audit.recorder import RequestContext
from gateway.audit.records import RouteDenied
from gateway.console.sessions import Session
from gateway.console.web import Console, SignInRequired, console_of, read_form
from gateway.errors import Forbidden, Unauthenticated
from gateway.http.deps import context_of, services_of
from gateway.identity.tokens import Identity
from gateway.policy.decide import roles_of

SAFE_METHODS = frozenset({"GET", "HEAD"})
VIA = "console"


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person signed in to the console, as the pipeline validated them for this request."""

    identity: Identity
    session: Session
    ctx: RequestContext  # via="console"
    roles: frozenset[str]

    @property
    def user(self) -> str:
        """The name the person is known by in policies."""
        return self.identity.user


def console_context(request: Request) -> RequestContext:
    """The audit context of a console request: the API's, marked ``via="console"``."""
    return dataclasses.replace(context_of(request), via=VIA)


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _refuse(request: Request, viewer: Viewer, reason: str) -> None:
    """Record a refused console request (before answering 403), then raise."""
    recorder = services_of(request).recorder
    route = f"{request.method} {request.url.path}"
    await recorder.decision(
        RouteDenied(who=recorder.who(viewer.ctx, viewer.identity), code="forbidden", reason=reason, route=route)
    )
    raise Forbidden(reason)


async def check_csrf(request: Request, viewer: Viewer, console: Console) -> None:
    """Refuse a state-changing request without the session's CSRF token, or sent from another site."""
    origin = request.headers.get("origin")
    if origin is not None and origin != _origin(console.public_url):
        await _refuse(request, viewer, "console: the request came from another origin (CSRF)")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in {"same-origin", "none"}:
        await _refuse(request, viewer, "console: the request came from another site (CSRF)")
    form = await read_form(request)
    if not hmac.compare_digest(form.get("csrf").encode(), viewer.session.csrf.encode()):
        await _refuse(request, viewer, "console: missing or wrong CSRF token")


async def _viewer(request: Request) -> Viewer:
    console = console_of(request)
    services = services_of(request)
    now = services.clock().timestamp()
    session = await console.sessions.current(request.cookies.get(console.cookie), now)
    back = request.url.path if request.method in SAFE_METHODS else "/console/"
    if session is None or session.access_token is None:
        raise SignInRequired(back)
    ctx = console_context(request)
    try:
        identity = await services.pipeline.authenticate(session.access_token, ctx)
    except Unauthenticated:
        await console.sessions.end(session)  # the token is no good any more: so is the session
        raise SignInRequired(back) from None
    viewer = Viewer(identity, session, ctx, roles_of(identity, services.policies.current))
    request.state.viewer = viewer
    if request.method not in SAFE_METHODS:
        await check_csrf(request, viewer, console)
    return viewer


def _role(role: str) -> Callable[[Request, Viewer], Awaitable[Viewer]]:
    async def check(request: Request, viewer: Annotated[Viewer, Depends(_viewer)]) -> Viewer:
        if role not in viewer.roles:
            await _refuse(request, viewer, f"the {role} role is required")
        return viewer

    return check


ViewerDep = Annotated[Viewer, Depends(_viewer)]
AdminViewer = Annotated[Viewer, Depends(_role("admin"))]
AuditorViewer = Annotated[Viewer, Depends(_role("auditor"))]


async def _console(request: Request) -> Console:
    return console_of(request)


ConsoleDep = Annotated[Console, Depends(_console)]
