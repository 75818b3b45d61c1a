"""What every console page shares: its state, its route class (headers, HTML errors), forms and rendering.

Every console response carries the headers of SECURITY rule 33: a strict
Content-Security-Policy (nothing but the console's own stylesheet and
images; no script at all, inline or not; ``frame-ancestors 'none'``,
``form-action 'self'``, ``base-uri 'none'``), ``X-Frame-Options: DENY``,
``nosniff``, ``Referrer-Policy: same-origin`` and ``Cache-Control: no-store``
(pages hold data); ``Strict-Transport-Security`` when cookies are Secure.
Errors a console route raises are pages, not problem+json: a
``GatewayError`` renders ``error.html`` with its status and code, and
:class:`SignInRequired` sends the browser to sign in.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from gateway.console.sessions import Sessions
from gateway.console.signin import SignIn
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.http.deps import services_of
from gateway.http.problems import errors_text, request_id_of
from gateway.identity.devcodes import DevCodes
from gateway.settings import Settings

if TYPE_CHECKING:
    from jinja2 import Environment

    from gateway.console.jobs import VerifyJobs

CSP = (
    "default-src 'self'; script-src 'none'; object-src 'none'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send "Origin: null" on our own forms
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MAX_FORM_FIELDS = 64
log = structlog.get_logger("gateway.console")


@dataclass(slots=True)
class Console:
    """The console's own parts, built with the app (no I/O): sessions, sign-in, templates, jobs."""

    settings: Settings
    sessions: Sessions
    templates: Environment
    signin: SignIn
    jobs: VerifyJobs
    public_url: str
    secure: bool  # cookies Secure (and HSTS sent)
    cookie: str  # the session cookie's name (``__Host-`` prefixed when Secure)
    dev_codes: DevCodes | None = field(default=None)  # dev mode: made on first use (the dev issuer is built later)


def console_of(request: Request) -> Console:
    """The console's state (set on the app when it was installed)."""
    console: Console = request.app.state.console  # Starlette's state is untyped
    return console


class SignInRequired(Exception):
    """The page needs a signed-in person: redirect to the sign-in, then back to ``next``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(value: str | None) -> str:
    """A console path to come back to after sign-in; anything else (another site, ``//host``) is the home page."""
    if value and value.startswith("/console/") and not value.startswith("//") and "\\" not in value:
        parts = urllib.parse.urlsplit(value)
        if not parts.scheme and not parts.netloc:
            return value
    return "/console/"


def secure_headers(response: Response, *, secure: bool) -> Response:
    """Add the console's security headers to ``response``."""
    response.headers.update(HEADERS)
    if secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


class ConsoleRoute(APIRoute):
    """A console route: security headers on every response; errors become pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap FastAPI's handler."""
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                target = "/console/login?" + urllib.parse.urlencode({"next": safe_next(exc.next_path)})
                response = RedirectResponse(target, status_code=303)
            except RequestValidationError as exc:
                response = await error_page(request, InvalidRequest(errors_text(exc.errors())))
            except GatewayError as exc:
                response = await error_page(request, exc)
            viewer = getattr(request.state, "viewer", None)
            if viewer is not None and (viewer.session.dirty or viewer.session.notices):
                # Notices added by the handler (shown after its redirect) or shown by its page: the store keeps them.
                try:
                    await console_of(request).sessions.save(viewer.session)
                except GatewayError as exc:  # the action is done: only a notice is lost (a shared store is down)
                    log.warning("console_session_not_saved", code=exc.code)
            return secure_headers(response, secure=console_of(request).secure)

        return route


async def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:  # noqa: ANN401 - template values
    """Render template ``name`` with the page's common values (viewer, CSRF token, request id)."""
    console = console_of(request)
    template = console.templates.get_template(name)
    html = await template.render_async(**common(request), **context)
    return HTMLResponse(html, status_code=status)


def common(request: Request) -> dict[str, Any]:
    """What every template may use: the signed-in viewer (or None), the request id, the path, the time."""
    viewer = getattr(request.state, "viewer", None)
    notices: list[str] = []
    if viewer is not None and viewer.session.notices:
        notices, viewer.session.notices = viewer.session.notices, []
        viewer.session.dirty = True  # saved when the route returns (ConsoleRoute)
    return {
        "notices": notices,
        "viewer": viewer,
        "csrf": viewer.session.csrf if viewer is not None else "",
        "request_id": request_id_of(request),
        "path": request.url.path,
        "dev_mode": console_of(request).settings.dev_mode,
        "now": services_of(request).clock(),
    }


async def error_page(request: Request, exc: GatewayError) -> HTMLResponse:
    """The page for a refused or failed console request: status, code, detail and the request id to quote."""
    return await render(request, "error.html", status=exc.status, error=exc)


@dataclass(frozen=True, slots=True)
class Form:
    """An ``application/x-www-form-urlencoded`` body: each name to its values, in order."""

    values: Mapping[str, list[str]]

    def get(self, name: str, default: str = "") -> str:
        """The first value of ``name``, stripped of surrounding whitespace."""
        found = self.values.get(name)
        return found[0].strip() if found else default

    def raw(self, name: str) -> str:
        """The first value of ``name`` exactly as sent (statements keep their whitespace)."""
        found = self.values.get(name)
        return found[0] if found else ""


async def read_form(request: Request) -> Form:
    """The request's form body (cached on the request, so the CSRF check and the route share it)."""
    cached: Form | None = getattr(request.state, "form", None)
    if cached is not None:
        return cached
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidRequest("console forms are sent as application/x-www-form-urlencoded")
    body = await request.body()
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FORM_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form is not valid UTF-8 form data (or has too many fields)") from None
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    form = Form(values)
    request.state.form = form
    return form


def invalid_form(exc: ValidationError) -> InvalidRequest:
    """A form whose values the API's body model refused, as the API words it."""
    return InvalidRequest(errors_text(exc.errors()))


async def not_found(request: Request) -> Response:
    """Any other path under ``/console/``: a page saying so."""
    return await error_page(request, NotFound(f"no console page at {request.url.path}"))
