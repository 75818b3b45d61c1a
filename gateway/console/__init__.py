"""The web console: engineers query, admins approve and revoke, auditors read and verify.

Served by the gateway itself under ``/console/`` (same process, same
``Services``, same pipeline and audit log: every action is authorised and
recorded exactly like the API call it stands for, with ``via: "console"`` in
its records). Server-rendered with Jinja2 (autoescaping everywhere), no
script at all; a strict Content-Security-Policy on every page.

``install(app, settings)`` adds it to an app (``gateway/http/app.py`` calls
it); the modules:

* ``web.py`` the console's state, its route class (security headers, errors
  as pages), forms, rendering; ``deps.py`` the signed-in ``Viewer`` and the
  CSRF check; ``sessions.py`` server-side sessions and their timeouts;
  ``signin.py`` the OIDC authorization code flow with PKCE (Authlib);
* pages: ``auth.py`` sign-in and logout; ``engineer.py`` home and access
  requests; ``query.py`` the SQL editor, results, CSV, history;
  ``admin.py`` the policy and its edits; ``approvals.py`` access requests; ``reviews.py`` statement reviews;
  ``auditor.py`` the log, records, export, verify, charts (``charts.py``,
  ``jobs.py``); ``devlogin.py`` the dev issuer's login page (dev mode).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from importlib import resources

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from jinja2 import DictLoader, Environment, select_autoescape

from gateway.console import admin, approvals, auditor, auth, devlogin, engineer, query, reviews
from gateway.console.jobs import VerifyJobs
from gateway.console.sessions import MemorySessionStore, Sessions, SessionStore
from gateway.console.sharedsessions import StateSessionStore
from gateway.console.signin import SignIn, read_client_secret
from gateway.console.templating import filters
from gateway.console.web import Console, ConsoleRoute, not_found, secure_headers
from gateway.identity.devissuer import dev_issuer_url
from gateway.settings import Settings, is_loopback

log = structlog.get_logger("gateway.console")
STATIC = {"console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


def _templates() -> Environment:
    """Every template read once, now (no file reads on the event loop later); autoescaped, strict."""
    folder = resources.files("gateway.console") / "templates"
    sources = {item.name: item.read_text(encoding="utf-8") for item in folder.iterdir() if item.name.endswith(".html")}
    env = Environment(
        loader=DictLoader(sources),
        autoescape=select_autoescape(default=True, default_for_string=True),
        enable_async=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(filters())
    return env


def _static_router(*, secure: bool) -> APIRouter:
    """``/console/static/<name>``: the stylesheet and icon, read once, served with the console's headers."""
    folder = resources.files("gateway.console") / "static"
    files = {name: (folder / name).read_bytes() for name in STATIC}
    router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

    def serve(name: str) -> Callable[[], Response]:
        def endpoint() -> Response:
            response = Response(files[name], media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})
            return secure_headers(response, secure=secure)

        return endpoint

    for name in STATIC:
        router.add_api_route(f"/console/static/{name}", serve(name), methods=["GET"])
    return router


def public_url(settings: Settings) -> str | None:
    """The URL browsers use; ``None`` when it is not configured and the gateway is not on loopback."""
    if settings.console.public_url:
        return settings.console.public_url.rstrip("/")
    if is_loopback(settings.listen.host):
        return f"http://{settings.listen.host}:{settings.listen.port}"
    return None


def install(app: FastAPI, settings: Settings, *, store: SessionStore | None = None) -> Console | None:
    """Serve the console from ``app`` (and, in dev mode, the dev issuer's login page); ``None`` if off."""
    url = public_url(settings)
    if not settings.console.enabled or url is None:
        if settings.console.enabled:
            log.warning("console_disabled", reason="console.public_url is required off loopback")
        return None
    secure = (
        settings.console.cookie_secure if settings.console.cookie_secure is not None else url.startswith("https://")
    )
    issuer = settings.console.issuer or (
        dev_issuer_url(settings.listen.port, settings.listen.host) if settings.dev_mode else settings.issuers[0].issuer
    )
    store = store or _session_store(settings)
    if isinstance(store, StateSessionStore):
        _close_at_shutdown(app, store.close)
    console = Console(
        settings=settings,
        sessions=Sessions(
            store,
            idle=settings.console.idle_timeout,
            absolute=settings.console.absolute_timeout,
        ),
        templates=_templates(),
        signin=SignIn(issuer, url, settings.console, read_client_secret(settings.console)),
        jobs=VerifyJobs(),
        public_url=url,
        secure=secure,
        cookie="__Host-gateway-console" if secure else "gateway-console",
    )
    app.state.console = console
    pages = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
    for module in (auth, engineer, query, reviews, admin, approvals, auditor):
        pages.include_router(module.router)
    pages.add_api_route("/console", _home_redirect, methods=["GET"])
    app.include_router(pages)
    app.include_router(_static_router(secure=secure))
    if settings.dev_mode:
        devlogin.install(app)
    catch_all = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
    catch_all.add_api_route("/console/{rest:path}", not_found, methods=["GET", "POST"])
    app.include_router(catch_all)
    return console


def _session_store(settings: Settings) -> SessionStore:
    """The shared state store's sessions with ``state.store: mariadb`` (any replica serves a session), else memory."""
    if settings.state.store == "mariadb" and settings.state.mariadb is not None:
        return StateSessionStore(
            settings.state.mariadb, idle=settings.console.idle_timeout, absolute=settings.console.absolute_timeout
        )
    return MemorySessionStore(settings.console.max_sessions)


def _close_at_shutdown(app: FastAPI, close: Callable[[], None]) -> None:
    """Run ``close`` (blocking, in a thread) after the app's own lifespan has ended."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(running):  # the gateway's lifespan keeps its state on app.state, yields none
                yield
        finally:
            await asyncio.to_thread(close)

    app.router.lifespan_context = lifespan


async def _home_redirect() -> Response:
    return Response(status_code=308, headers={"Location": "/console/"})
