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
from gateway.audit.caps import RecordCaps
from gateway.audit.factory import open_audit_store
from gateway.audit.log import AuditLog
from gateway.audit.store import AuditStore
from gateway.clock import utcnow
from gateway.db.catalog import ViewCatalog
from gateway.db.drift import PrivilegeMonitor, drift_state
from gateway.db.pools import PoolRegistry
from gateway.http import access as accessapi
from gateway.http import admin as adminapi
from gateway.http import api, openapi
from gateway.http import audit as auditapi
from gateway.http.front import GatewayApp, StatementEndpoints
from gateway.http.metrics import Metrics
from gateway.http.middleware import GatewayMiddleware
from gateway.identity.aliases import ALIASES_FILE, AliasRegistry, SqliteAliasRegistry
from gateway.identity.devissuer import DevIssuer
from gateway.identity.oidc import IssuerConfig, JwksCache, KeySource
from gateway.identity.tokens import TokenValidator
from gateway.pipeline import Pipeline
from gateway.policy.store import PolicyStore
from gateway.requestids import RequestIds
from gateway.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = structlog.get_logger("gateway.http.app")
DEV_ISSUER_PATH = "/dev-issuer"


async def _write_floods(pipeline: Pipeline) -> None:
    """Write due ``auth_flood`` aggregates even when no further unauthenticated request comes to do it."""
    period = min(pipeline.settings.audit.unauthenticated.window / 4, 15.0)
    while True:
        await asyncio.sleep(period)
        pipeline.write_floods()


def dev_issuer_url(settings: Settings) -> str:
    """The dev issuer's URL: served by the gateway itself, on loopback."""
    return f"http://{settings.listen.host}:{settings.listen.port}{DEV_ISSUER_PATH}"


def build_key_sources(
    settings: Settings,
) -> tuple[list[IssuerConfig], dict[str, KeySource], DevIssuer | None]:
    """Issuer configs and their key sources; the dev issuer only in dev mode."""
    configs = [
        IssuerConfig(
            issuer=i.issuer,
            audience=i.audience,
            algorithms=i.algorithms,
            user_claim=i.user_claim,
            groups_claim=i.groups_claim,
            allow_id_tokens=i.allow_id_tokens,
            leeway=i.leeway,
            max_token_lifetime=i.max_token_lifetime,
            jwks_cooldown=settings.jwks_cooldown,
            assume_email_verified=i.assume_email_verified,
            fallback_claim=i.fallback_claim,
        )
        for i in settings.issuers
    ]
    sources: dict[str, KeySource] = {c.issuer: JwksCache(c) for c in configs}
    dev: DevIssuer | None = None
    if settings.dev_mode:
        dev = DevIssuer.from_key_file(dev_issuer_url(settings), settings.dev.key_file)
        dev_config = dev.issuer_config(settings.dev.audience)
        configs.append(dev_config)
        sources[dev_config.issuer] = dev
    return configs, sources, dev


async def open_validator(
    settings: Settings, configs: list[IssuerConfig], sources: dict[str, KeySource]
) -> TokenValidator:
    """The token validator, with the alias registry (SECURITY rule 26) in ``admin.state_dir``."""
    aliases = await asyncio.to_thread(SqliteAliasRegistry, settings.admin.state_dir / ALIASES_FILE)
    return TokenValidator(configs, sources, aliases=aliases)


def _close_all(*stores: AliasRegistry | AuditStore) -> None:
    for store in stores:
        store.close()


async def _stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel background tasks and wait until each has ended."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _check_privileges(
    settings: Settings, policies: PolicyStore, pools: PoolRegistry, metrics: Metrics, clock: Callable[[], datetime]
) -> asyncio.Task[None]:
    """The database's own privileges, checked off the request path (start-up, policy changes, an interval)."""
    metrics.watch_privileges(pools.drift)
    monitor = PrivilegeMonitor(settings.targets, policies, pools, clock=clock, settings=settings.privileges)
    return asyncio.create_task(monitor.run(), name="privilege-check")


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    audit_store: Callable[[], AuditStore] | None = None,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """Build the app; nothing connects until the lifespan starts.

    ``audit_store`` swaps the audit store factory (the settings pick the default);
    ``span_exporter`` where spans go when tracing is on (default: OTLP/HTTP to
    ``tracing.endpoint``).
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
        configs, sources, dev = build_key_sources(settings)
        policies = PolicyStore(settings.policies_dir, settings.targets.keys())
        policies.load()  # an invalid policy at start-up stops the gateway
        writer = audit_store() if audit_store else await asyncio.to_thread(open_audit_store, settings.audit)
        # Auditors read through their own connection (read-only for MariaDB): scans never hold up the writer.
        reader = (
            audit_store() if audit_store else await asyncio.to_thread(open_audit_store, settings.audit, readonly=True)
        )
        app.state.audit_reader = reader
        audit = AuditLog(
            writer,
            redact_literals=settings.audit.redact_literals,
            # An allowed statement is within the SQL size cap, so it is always recorded whole.
            caps=RecordCaps(statement=settings.limits.max_sql_bytes),
            max_pending=settings.audit.queue_limit,
            observe_commit=metrics.audit_write.observe,
        )
        pools = PoolRegistry(settings.targets, drift=drift_state(settings))
        await pools.open()
        metrics.watch_pools(pools.pools)
        metrics.watch_policies(policies)
        validator = await open_validator(settings, configs, sources)
        app.state.pipeline = Pipeline(
            settings,
            validator,
            policies,
            pools,
            audit,
            key_sources=list(sources.values()),
            clock=clock,
            tracing=spans,
            views=ViewCatalog(pools, ttl=settings.limits.view_cache_seconds),
            request_ids=request_ids,
        )
        app.state.dev_issuer = dev
        metrics.watch_audit(audit, app.state.pipeline.decisions)
        tasks = (
            asyncio.create_task(policies.watch(), name="policy-watch"),
            asyncio.create_task(_write_floods(app.state.pipeline), name="auth-flood-writer"),
            _check_privileges(settings, policies, pools, metrics, clock),
        )
        # What start-up built (modules, sqlglot's tables, policies, pools) lives as long as the
        # process: freezing it keeps the collector's full passes, which stop the event loop,
        # to the objects requests create (a full pass over everything took up to 52 ms).
        gc.freeze()
        log.info("gateway_started", targets=sorted(settings.targets), dev_mode=settings.dev_mode)
        try:
            yield
        finally:
            await _stop(*tasks)
            await pools.close()
            for source in sources.values():
                if isinstance(source, JwksCache):
                    await source.aclose()
            app.state.pipeline.write_floods(everything=True)  # every suppressed record is accounted for
            # Before the writer, so the writer's close is the last (SQLite checkpoints).
            await asyncio.to_thread(_close_all, validator.aliases, reader)
            await audit.close()
            await asyncio.to_thread(spans.shutdown)
            log.info("gateway_stopped")

    app = GatewayApp(
        title="db-gateway",
        lifespan=lifespan,
        docs_url="/docs" if settings.dev_mode else None,
        redoc_url=None,
    )
    api.install(app)
    app.include_router(adminapi.router)
    app.include_router(accessapi.router)
    app.include_router(auditapi.router)
    openapi.install(app)

    if settings.metrics_public:

        @app.get("/metrics", include_in_schema=False)
        async def metrics_endpoint() -> Response:
            return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.dev_mode:

        @app.get(f"{DEV_ISSUER_PATH}/.well-known/openid-configuration", include_in_schema=False)
        async def dev_discovery(request: Request) -> api.JSONResponse:
            return api.JSONResponse(request.app.state.dev_issuer.discovery_document())

        @app.get(f"{DEV_ISSUER_PATH}/jwks", include_in_schema=False)
        async def dev_jwks(request: Request) -> api.JSONResponse:
            return api.JSONResponse(request.app.state.dev_issuer.jwks())

    # Outermost, for every request: the request id, the body cap and metrics, then the
    # statement routes served directly (gateway.http.front) or FastAPI's own stack.
    app.front = GatewayMiddleware(
        StatementEndpoints(app, api.DIRECT_ROUTES, fallback=app.stack()),
        max_body=settings.limits.max_body_bytes,
        max_headers=settings.limits.max_header_bytes,
        metrics=metrics,
        tracing=spans,
        ids=request_ids,
        on_refused=functools.partial(api.record_refusal, app),
    )
    return app
