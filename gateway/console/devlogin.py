"""The dev issuer's login page and token endpoint (dev mode only): ``/dev-issuer/authorize``, ``/dev-issuer/token``.

So that ``make run`` shows the console with no IdP, the dev issuer answers the
console's authorization code flow itself (:mod:`gateway.identity.devcodes`
holds the rules): a minimal page asks for the name and groups to sign in as
(dev mode is refused off loopback, and the dev issuer vouches for any name,
as ``gateway dev-token`` does), then sends the browser back to the console
with a one-time code, which the console trades here, with its PKCE verifier,
for a dev access token. The routes exist only in dev mode.
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from gateway.console.web import ConsoleRoute, console_of, read_form, render
from gateway.errors import InvalidRequest
from gateway.http.deps import services_of
from gateway.http.problems import JSONResponse
from gateway.identity.devcodes import AuthorizationError, DevCodes
from gateway.identity.devissuer import DEV_ISSUER_PATH

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
_REQUEST_FIELDS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
)
MAX_GROUPS = 20


def _codes(request: Request) -> DevCodes:
    console = console_of(request)
    if console.dev_codes is None:
        services = services_of(request)
        if services.dev_issuer is None:  # the routes are installed in dev mode only, where it is always built
            raise InvalidRequest("the dev issuer is not running")
        settings = services.settings.dev
        console.dev_codes = DevCodes(
            services.dev_issuer, audience=settings.audience, token_lifetime=settings.token_lifetime
        )
    return console.dev_codes


@router.get(f"{DEV_ISSUER_PATH}/authorize")
async def authorize_page(request: Request) -> Response:
    """Check the authorization request; show the login page (or why the request is refused)."""
    params = {name: request.query_params.get(name, "") for name in _REQUEST_FIELDS}
    try:
        checked = _codes(request).check(params)
    except AuthorizationError as exc:  # never redirect a request that failed its checks
        raise InvalidRequest(f"dev issuer: {exc.description} ({exc.error})") from None
    return await render(request, "dev_login.html", auth=checked, params=params, problem=None, user="", groups="")


@router.post(f"{DEV_ISSUER_PATH}/authorize")
async def authorize(request: Request) -> Response:
    """Issue a code for the name and groups given and send the browser back to the console."""
    form = await read_form(request)
    params = {name: form.get(name) for name in _REQUEST_FIELDS}
    codes = _codes(request)
    try:
        checked = codes.check(params)
    except AuthorizationError as exc:
        raise InvalidRequest(f"dev issuer: {exc.description} ({exc.error})") from None
    user = form.get("user")
    groups = tuple(dict.fromkeys(g.strip() for g in form.get("groups").replace(",", " ").split() if g.strip()))
    try:
        if len(groups) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups")
        code = codes.issue(checked, user, groups)
    except ValueError as exc:
        return await render(
            request,
            "dev_login.html",
            status=422,
            auth=checked,
            params=params,
            problem=str(exc),
            user=user,
            groups=form.get("groups"),
        )
    query = urllib.parse.urlencode({"code": code, "state": checked.state})
    return RedirectResponse(f"{checked.redirect_uri}?{query}", status_code=303)


@router.post(f"{DEV_ISSUER_PATH}/token")
async def token(request: Request) -> Response:
    """Trade a code (with its PKCE verifier) for a dev access token, once."""
    form = await read_form(request)
    params = {name: form.get(name) for name in ("grant_type", "code", "redirect_uri", "client_id", "code_verifier")}
    try:
        body = _codes(request).redeem(params)
    except AuthorizationError as exc:
        return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=400)
    return JSONResponse(body, headers={"Pragma": "no-cache"})


def install(app: FastAPI) -> None:
    """Serve the dev issuer's login page and token endpoint (call only in dev mode)."""
    app.include_router(router)
