"""Every stage of the gateway, built in the lifespan and closed in reverse order: ``Services``.

``open_services`` is the app's whole start-up and shutdown: the shared state
store when ``state.store`` is ``mariadb`` (migrated at open; it then holds the
managed policy documents, access requests, aliases and reviews), policies (an
invalid file stops start-up), the audit writer and its reader, the pools,
the token validator with its alias registry, the pipeline, the policy editor,
the access-request and review stores, and the background tasks (policy watcher,
``auth_flood`` writer, privilege checker). Routes receive what they need from
the ``Services`` through the dependencies in :mod:`gateway.http.deps`; nothing
is reached through attributes of the pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from gateway.audit.anchor import open_anchor
from gateway.audit.caps import RecordCaps
from gateway.audit.checkpointer import Checkpointer, CheckpointWriter
from gateway.audit.checkpoints import Signer, load_public_keys, load_signer
from gateway.audit.factory import open_audit_store
from gateway.audit.log import AuditLog
from gateway.audit.pending import PreparingStore
from gateway.audit.process import ProcessStore
from gateway.audit.recorder import Recorder
from gateway.audit.store import AuditStore, BatchStore
from gateway.db.catalog import ViewCatalog
from gateway.db.drift import PrivilegeMonitor, drift_state
from gateway.db.pools import PoolRegistry
from gateway.errors import ConfigError
from gateway.http.metrics import Metrics
from gateway.identity.aliases import ALIASES_FILE, AliasRegistry, SqliteAliasRegistry
from gateway.identity.devissuer import DevIssuer, dev_issuer_url
from gateway.identity.oidc import IssuerConfig, JwksCache, KeySource
from gateway.identity.tokens import TokenValidator
from gateway.pipeline import Pipeline
from gateway.policy.edit import PolicyEditor
from gateway.policy.requests import AccessRequests, AccessRequestStore
from gateway.policy.reviews import REVIEWS_FILE, ReviewStore, SqliteReviewStore
from gateway.policy.store import PolicyStore
from gateway.requestids import RequestIds
from gateway.revocation.inflight import InFlight
from gateway.revocation.revoker import Revoker
from gateway.settings import Settings
from gateway.state.aliases import StateAliasRegistry
from gateway.state.editor import StoreEditor
from gateway.state.requests import StateAccessRequests
from gateway.state.reviews import StateReviewStore
from gateway.state.source import StoreSource
from gateway.state.store import StateStore
from gateway.tracing import Tracing

log = structlog.get_logger("gateway.http.services")
ACCESS_REQUESTS_FILE = "access-requests.db"


@dataclass(frozen=True, slots=True)
class Services:
    """What the routes use, built once per process in the lifespan."""

    settings: Settings
    clock: Callable[[], datetime]
    pipeline: Pipeline
    recorder: Recorder
    policies: PolicyStore
    pools: PoolRegistry
    audit: AuditLog
    audit_reader: AuditStore  # auditors' own connection (read-only for MariaDB): scans never hold up the writer
    key_sources: tuple[KeySource, ...]
    aliases: AliasRegistry
    editor: PolicyEditor
    access_requests: AccessRequests
    reviews: ReviewStore
    dev_issuer: DevIssuer | None
    state: StateStore | None = None  # the shared state store (state.store: mariadb)


def build_key_sources(settings: Settings) -> tuple[list[IssuerConfig], dict[str, KeySource], DevIssuer | None]:
    """Issuer configs and their key sources; the dev issuer only in dev mode."""
    configs = [IssuerConfig.from_settings(i, jwks_cooldown=settings.jwks_cooldown) for i in settings.issuers]
    sources: dict[str, KeySource] = {c.issuer: JwksCache(c) for c in configs}
    dev: DevIssuer | None = None
    if settings.dev_mode:
        url = dev_issuer_url(settings.listen.port, settings.listen.host)  # served by the gateway itself
        dev = DevIssuer.from_key_file(url, settings.dev.key_file)
        dev_config = dev.issuer_config(settings.dev.audience)
        configs.append(dev_config)
        sources[dev_config.issuer] = dev
    return configs, sources, dev


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    clock: Callable[[], datetime],
    metrics: Metrics,
    request_ids: RequestIds,
    spans: Tracing,
    audit_store: Callable[[], AuditStore] | None = None,
) -> AsyncIterator[Services]:
    """Build every stage, start the background tasks; on exit stop and close all, the audit writer last."""
    async with contextlib.AsyncExitStack() as stack:
        configs, sources, dev = build_key_sources(settings)
        state: StateStore | None = None
        if settings.state.mariadb is not None and settings.state.store == "mariadb":
            state = await asyncio.to_thread(StateStore.open, settings.state.mariadb)  # migrates, under GET_LOCK
            stack.callback(state.close)
        policy_source = StoreSource(settings.policies_dir, state) if state else None
        policies = PolicyStore(settings.policies_dir, settings.targets.keys(), source=policy_source)
        await asyncio.to_thread(policies.load)  # an invalid policy at start-up stops the gateway
        state_dir = settings.admin.state_dir.resolve()
        if state_dir.is_relative_to(settings.policies_dir.resolve()):
            raise ConfigError("admin.state_dir must not be inside the policies directory")
        audit = await _open_audit(stack, settings, metrics, audit_store)
        signer = load_signer(settings.audit.checkpoints)  # an unreadable key stops the start (fail closed)
        load_public_keys(settings.audit.checkpoints)  # so does a malformed public key
        reader = (
            audit_store() if audit_store else await asyncio.to_thread(open_audit_store, settings.audit, readonly=True)
        )
        stack.callback(reader.close)  # closed before the writer (callbacks run in reverse): SQLite checkpoints last
        aliases, access_requests = await _open_shared(settings, state, clock)
        stack.callback(aliases.close)
        stack.callback(access_requests.close)
        reviews: ReviewStore = (
            StateReviewStore(state, clock=clock)
            if state
            else await asyncio.to_thread(SqliteReviewStore, state_dir / REVIEWS_FILE, clock=clock)
        )
        stack.callback(reviews.close)
        pools = PoolRegistry(settings.targets, drift=drift_state(settings))
        await pools.open()
        stack.push_async_callback(pools.close)
        for source in sources.values():
            if isinstance(source, JwksCache):
                stack.push_async_callback(source.aclose)
        recorder = Recorder(
            audit,
            settings.audit,
            revision=lambda: policies.current.revision,
            clock=clock,
            new_id=request_ids.new,
            spans=spans,
        )
        stack.callback(recorder.write_floods, everything=True)  # every suppressed record is accounted for
        inflight = InFlight()
        policies.listeners.append(Revoker(inflight, pools, recorder, clock).policy_changed)
        pipeline = Pipeline(
            settings,
            TokenValidator(configs, sources, aliases=aliases),
            policies,
            pools,
            recorder,
            inflight,
            clock=clock,
            spans=spans,
            views=ViewCatalog(pools, ttl=settings.limits.view_cache_seconds),
            reviews=reviews,
            review_row_margin=settings.admin.review_row_margin,
        )
        editor = (
            StoreEditor(
                settings.policies_dir,
                state,
                managed_file=settings.admin.managed_file,
                known_targets=settings.targets.keys(),
            )
            if state
            else PolicyEditor(
                settings.policies_dir, managed_file=settings.admin.managed_file, known_targets=settings.targets.keys()
            )
        )
        metrics.watch_pools(pools.pools)
        metrics.watch_policies(policies)
        metrics.watch_audit(audit, recorder.decisions)
        metrics.watch_privileges(pools.drift)
        checkpoints = audit.store
        if isinstance(checkpoints, ProcessStore) and signer is not None:  # its child only appends: a store to sign
            checkpoints = await asyncio.to_thread(open_audit_store, settings.audit)
            stack.callback(checkpoints.close)
        monitor = PrivilegeMonitor(settings.targets, policies, pools, clock=clock, settings=settings.privileges)
        for name, work in (
            ("policy-watch", policies.watch(settings.state.poll_interval if state else 1.0)),
            ("auth-flood-writer", _write_floods(recorder, settings.audit.unauthenticated.window)),
            ("privilege-check", monitor.run()),
            *_checkpoint_task(checkpoints, signer, settings, clock),
        ):
            stack.push_async_callback(_stop, _start(name, work))
        yield Services(
            settings=settings,
            clock=clock,
            pipeline=pipeline,
            recorder=recorder,
            policies=policies,
            pools=pools,
            audit=audit,
            audit_reader=reader,
            key_sources=tuple(sources.values()),
            aliases=aliases,
            editor=editor,
            access_requests=access_requests,
            reviews=reviews,
            dev_issuer=dev,
            state=state,
        )


async def _open_shared(
    settings: Settings, state: StateStore | None, clock: Callable[[], datetime]
) -> tuple[AliasRegistry, AccessRequests]:
    """The alias registry and the access requests: the state store's, or SQLite files in ``admin.state_dir``."""
    ttl = settings.admin.request_ttl
    if state is not None:
        return StateAliasRegistry(state, clock=clock), StateAccessRequests(state, ttl=ttl, clock=clock)
    state_dir = settings.admin.state_dir.resolve()
    aliases = await asyncio.to_thread(SqliteAliasRegistry, state_dir / ALIASES_FILE)
    try:
        requests = await asyncio.to_thread(AccessRequestStore, state_dir / ACCESS_REQUESTS_FILE, ttl=ttl, clock=clock)
    except BaseException:
        aliases.close()
        raise
    return aliases, requests


async def _open_audit(
    stack: contextlib.AsyncExitStack, settings: Settings, metrics: Metrics, audit_store: Callable[[], AuditStore] | None
) -> AuditLog:
    # An allowed statement is within the SQL size cap, so it is always recorded whole.
    caps = RecordCaps(statement=settings.limits.max_sql_bytes)
    writer: BatchStore | PreparingStore
    if audit_store is not None:
        writer = audit_store()
    elif settings.audit.writer == "process":
        # The child caps and redacts records as the log would (AuditLog hands it records, not mappings).
        writer = await asyncio.to_thread(ProcessStore, settings.audit, caps=caps)
    else:
        writer = await asyncio.to_thread(open_audit_store, settings.audit)
    audit = AuditLog(
        writer,
        redact_literals=settings.audit.redact_literals,
        caps=caps,
        max_pending=settings.audit.queue_limit,
        observe_commit=metrics.audit_write.observe,
    )
    stack.push_async_callback(audit.close)
    return audit


def _checkpoint_task(
    store: object, signer: Signer | None, settings: Settings, clock: Callable[[], datetime]
) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    """The checkpoint writer, when this replica signs checkpoints and its store keeps several chains."""
    if signer is None or not isinstance(store, CheckpointWriter):
        return []
    config = settings.audit.checkpoints
    checkpointer = Checkpointer(store, signer, open_anchor(config.anchor))
    return [("audit-checkpoint", checkpointer.run(config.interval, clock))]


def _start(name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.create_task(work, name=name)


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _write_floods(recorder: Recorder, window: float) -> None:
    """Write due ``auth_flood`` aggregates even when no further unauthenticated request comes to do it."""
    period = min(window / 4, 15.0)
    while True:
        await asyncio.sleep(period)
        recorder.write_floods()
