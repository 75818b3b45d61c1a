"""``create_app(settings)``: the FastAPI app; every stage is built in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import tracing
from gateway.audit.store import AuditStore
from gateway.clock import utcnow
from gateway.http import access as accessapi
from gateway.http import admin as adminapi
from gateway.http import audit as auditapi
from gateway.http import openapi, problems, statements, status
from gateway.http import reviews as reviewsapi
from gateway.http.deps import services_of
from gateway.http.front import GatewayApp, StatementEndpoints
from gateway.http.metrics import Metrics
from gateway.http.middleware import GatewayMiddleware
from gateway.http.problems import JSONResponse
from gateway.http.services import open_services
from gateway.identity.devissuer import DEV_ISSUER_PATH, DevIssuer
from gateway.requestids import RequestIds
from gateway.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger("gateway.http.app")


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    audit_store: Callable[[], AuditStore] | None = None,
    span_exporter: SpanExporter | None = None,
    pages: Callable[[FastAPI, Settings], object] | None = None,
) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts.

    ``audit_store`` swaps the audit store factory (the settings pick the default);
    ``span_exporter`` where spans go when tracing is on (default: OTLP/HTTP to
    ``tracing.endpoint``); ``pages`` adds routes of a layer above this one to the
    app (``gateway serve`` passes the web console's ``gateway.console.install``).
    """
    metrics = Metrics()
    request_ids = RequestIds()  # one id source for the middleware and the pipeline (auth_flood records)
    spans = tracing.build(settings.tracing, span_exporter)
    # sqlglot logs unparsed statement text (with literals) at WARNING: keep it out of our logs.
    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    # botocore logs request signatures (an IAM token is one) and response bodies
    # (Secrets Manager values) at DEBUG: never let them through (SECURITY rule 23).
    logging.getLogger("botocore").setLevel(logging.WARNING)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(
            settings, clock=clock, metrics=metrics, request_ids=request_ids, spans=spans, audit_store=audit_store
        ) as services:
            app.state.services = services
            # What start-up built (modules, sqlglot's tables, policies, pools) lives as long as the
            # process: freezing it keeps the collector's full passes, which stop the event loop,
            # to the objects requests create (a full pass over everything took up to 52 ms).
            gc.freeze()
            log.info("gateway_started", targets=sorted(settings.targets), dev_mode=settings.dev_mode)
            yield
        await asyncio.to_thread(spans.shutdown)
        log.info("gateway_stopped")

    app = GatewayApp(
        title="db-gateway",
        lifespan=lifespan,
        docs_url="/docs" if settings.dev_mode else None,
        redoc_url=None,
    )
    problems.install(app)
    app.include_router(status.router)
    app.include_router(statements.router)
    app.include_router(adminapi.router)
    app.include_router(accessapi.router)
    app.include_router(reviewsapi.router)
    app.include_router(auditapi.router)
    openapi.install(app)

    if settings.metrics_public:

        @app.get("/metrics", include_in_schema=False)
        async def metrics_endpoint() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if pages is not None:
        pages(app, settings)  # the web console (gateway.console.install), passed in by the caller above this layer

    if settings.dev_mode:

        @app.get(f"{DEV_ISSUER_PATH}/.well-known/openid-configuration", include_in_schema=False)
        async def dev_discovery(request: Request) -> JSONResponse:
            return JSONResponse(_dev_issuer(request).discovery_document())

        @app.get(f"{DEV_ISSUER_PATH}/jwks", include_in_schema=False)
        async def dev_jwks(request: Request) -> JSONResponse:
            return JSONResponse(_dev_issuer(request).jwks())

    # Outermost, for every request: the request id, the body cap and metrics, then the
    # statement routes served directly (gateway.http.front) or FastAPI's own stack.
    app.front = GatewayMiddleware(
        StatementEndpoints(app, statements.DIRECT_ROUTES, fallback=app.stack()),
        max_body=settings.limits.max_body_bytes,
        max_headers=settings.limits.max_header_bytes,
        metrics=metrics,
        tracing=spans,
        ids=request_ids,
        on_refused=functools.partial(statements.record_refusal, app),
    )
    return app


def _dev_issuer(request: Request) -> DevIssuer:
    dev = services_of(request).dev_issuer
    if dev is None:  # the routes exist only in dev mode, where the lifespan always builds it
        raise RuntimeError("no dev issuer")
    return dev
