"""Sign-in, the IdP's answer, and logout: ``/console/login``, ``/console/callback``, ``/console/logout``.

``/console/login`` starts an authorization code flow with PKCE at the
configured issuer (:mod:`gateway.console.signin`) and remembers its ``state``
and verifier in the browser's (signed-out) session. ``/console/callback``
accepts the IdP's answer only for a state this browser started, trades the
code for tokens, validates the access token through the pipeline (a refused
token is a recorded 401, like any API call), and replaces the session by a
new, signed-in one. ``/console/logout`` (a POST with the CSRF token) ends the
session on the server and clears the cookie.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from gateway.audit.records import AuthRecord
from gateway.console.deps import console_context
from gateway.console.sessions import PendingLogin, Session
from gateway.console.web import Console, ConsoleRoute, console_of, read_form, render, safe_next
from gateway.errors import InvalidRequest, Unauthenticated
from gateway.http.deps import services_of

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


def set_session_cookie(response: Response, console: Console, value: str) -> None:
    """The session cookie: HttpOnly, SameSite=Lax, Secure off loopback, for the whole site, no lifetime."""
    response.set_cookie(console.cookie, value, httponly=True, samesite="lax", secure=console.secure, path="/")


async def _live(request: Request) -> tuple[Console, Session | None, float]:
    console = console_of(request)
    now = services_of(request).clock().timestamp()
    return console, await console.sessions.current(request.cookies.get(console.cookie), now), now


@router.get("/console/login")
async def login(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the parameter's name in the URL
    """Send the browser to the IdP (or straight back, if already signed in)."""
    console, session, now = await _live(request)
    back = safe_next(next)
    if session is not None and session.signed_in:
        return RedirectResponse(back, status_code=303)
    cookie = None
    if session is None:
        cookie, session = await console.sessions.new(now)
    url, state, verifier = await console.signin.begin()
    await console.sessions.start_login(session, PendingLogin(state=state, verifier=verifier, next=back, started=now))
    response = RedirectResponse(url, status_code=303)
    if cookie is not None:
        set_session_cookie(response, console, cookie)
    return response


async def _refused(request: Request, reason: str) -> None:
    """Record a sign-in the console refused, as the pipeline records a refused token (flood-limited)."""
    recorder = services_of(request).recorder
    await recorder.unverified(
        AuthRecord(who=recorder.who(console_context(request), None), code="unauthenticated", reason=reason)
    )


@router.get("/console/callback")
async def callback(request: Request, state: str = "", code: str = "", error: str | None = None) -> Response:
    """The IdP's answer: check it belongs to this browser, trade the code, validate the token, sign in."""
    console, session, now = await _live(request)
    login = await console.sessions.take_login(session, state, now) if session is not None and state else None
    if session is None or login is None:
        await _refused(request, "console sign-in: an answer for no sign-in this browser started (state)")
        raise Unauthenticated("console sign-in: unknown state")
    if error is not None or not code:
        await _refused(request, f"console sign-in: the IdP answered {error or 'without a code'}")
        raise Unauthenticated("console sign-in: the IdP refused")
    services = services_of(request)
    try:
        tokens = await console.signin.finish(code, login.verifier, now)
    except Unauthenticated as exc:
        await _refused(request, exc.reason)
        raise
    identity = await services.pipeline.authenticate(tokens.access_token, console_context(request))
    expires = min(tokens.expires_at, identity.expires_at)
    cookie, _ = await console.sessions.signed_in(session, identity.user, tokens.access_token, expires, now)
    response = RedirectResponse(login.next, status_code=303)
    set_session_cookie(response, console, cookie)
    return response


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    """End the session (with its CSRF token); the cookie is cleared either way."""
    console, session, _ = await _live(request)
    if session is not None:
        form = await read_form(request)
        if not hmac.compare_digest(form.get("csrf").encode(), session.csrf.encode()):
            raise InvalidRequest("the sign-out form is stale: reload the page and sign out again")
        await console.sessions.end(session)
    response = RedirectResponse("/console/signed-out", status_code=303)
    response.delete_cookie(console.cookie, path="/", secure=console.secure, httponly=True, samesite="lax")
    return response


@router.get("/console/signed-out")
async def signed_out(request: Request) -> Response:
    """Say the session has ended."""
    return await render(request, "signed_out.html")
