"""The request path, in one direction: the only place that calls the stages.

identity -> statement analysis -> policy decision -> audit (decision record,
durable) -> pool for the decision's ``(target, db_user)`` -> execution ->
audit (outcome record) -> reply. Every stage fails closed; every decision,
allowed or denied, is audited before anything runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog

from gateway import tracing
from gateway.audit.flood import FloodControl
from gateway.audit.log import AuditLog
from gateway.audit.records import (
    UNSET,
    AuditRecord,
    AuthRecord,
    DecisionRecord,
    OutcomeRecord,
    RevocationCancelRecord,
    RouteDenied,
    Unset,
    Who,
)
from gateway.clock import utcnow
from gateway.db import execution, streaming
from gateway.db.catalog import ViewCatalog
from gateway.db.encoding import JSONValue
from gateway.db.pools import Pooled, PoolRegistry
from gateway.errors import (
    AuditUnavailable,
    Forbidden,
    GatewayError,
    InvalidRequest,
    Revoked,
    StatementRejected,
    Unauthenticated,
    UnknownTarget,
)
from gateway.identity.oidc import KeySource
from gateway.identity.tokens import Identity, TokenValidator
from gateway.policy import views
from gateway.policy.decide import Decision, decide, roles_of
from gateway.policy.store import PolicyStore
from gateway.requestids import RequestIds
from gateway.revocation.inflight import InFlight, Running, still_allowed
from gateway.revocation.revoker import Revoker
from gateway.settings import Settings
from gateway.sql.statements import SAFE_FUNCTIONS, Kind, Statement, analyze
from gateway.tracing import Tracing

log = structlog.get_logger("gateway.pipeline")
_T = TypeVar("_T")
INLINE_ANALYSIS_CHARS = 4096  # longer statements are analysed off the event loop
_VIEW_KINDS = frozenset({Kind.READ, Kind.WRITE})  # DDL names views as objects (DROP VIEW v), not to read them
_VIEW_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts about the HTTP request that the audit log records."""

    request_id: str  # the gateway's own id (gateway/requestids.py)
    client: str | None
    user_agent: str | None
    client_request_id: str | None = None  # the caller's sane X-Request-ID, kept beside the gateway's


@dataclass(frozen=True, slots=True)
class StatementRequest:
    """One statement as the caller sent it."""

    sql: str
    params: Sequence[JSONValue]


@dataclass(slots=True)
class _Analysed:
    """What the decision record says of the statements once they are analysed (unset: refused before)."""

    kind: str | Unset = UNSET
    tables: tuple[str, ...] | Unset = UNSET


_DENIALS: dict[str, type[GatewayError]] = {
    "revoked": Revoked,
    "statement_rejected": StatementRejected,
}


class Pipeline:
    """Holds the stages (built in the app's lifespan) and runs requests through them."""

    def __init__(
        self,
        settings: Settings,
        validator: TokenValidator,
        policies: PolicyStore,
        pools: PoolRegistry,
        audit: AuditLog,
        *,
        key_sources: Sequence[KeySource] = (),
        clock: Callable[[], datetime] = utcnow,
        tracing: Tracing | None = None,
        views: ViewCatalog | None = None,
        request_ids: RequestIds | None = None,
    ) -> None:
        self.settings = settings
        self.views = views
        self.validator = validator
        self.policies = policies
        self.pools = pools
        self.audit = audit
        self.key_sources = tuple(key_sources)
        self._clock = clock
        self.tracing = tracing or Tracing()
        self.decisions: collections.Counter[tuple[str, str]] = collections.Counter()  # (decision, code), for metrics
        self.inflight = InFlight()
        self.request_ids = request_ids or RequestIds()
        self.floods = FloodControl(settings.audit.unauthenticated, clock, self.request_ids.new)
        policies.listeners.append(Revoker(self.inflight, pools, clock, on_cancel=self._record_cancel).policy_changed)

    def _check_still_allowed(self, running: Running) -> None:
        # Closes the gap between the decision and the registration: a reload in between is seen here.
        if not still_allowed(running.identity, running.target, self.policies.current, self._clock()):
            running.cancelled = True
            raise Revoked(f"access to {running.target} was revoked")

    async def _record(self, record: DecisionRecord | RouteDenied | AuthRecord) -> None:
        self.decisions[(record.decision, record.code)] += 1
        if self.tracing.enabled:
            fields: dict[str, Any] = record.fields()
            tracing.annotate(
                **{f"gateway.{k}": fields.get(k) for k in ("request_id", "target", "decision", "code", "grant")}
            )
        try:
            with self.tracing.span("audit.decision"):
                await self.audit.append(record)
        except AuditUnavailable:
            log.error(
                "audit_write_failed",
                request_id=record.who.request_id,
                event_kind=record.EVENT,
            )
            raise

    async def _record_unverified(self, record: AuthRecord | RouteDenied) -> None:
        """Record a request refused before a valid token: one by one within the flood limits, else aggregated.

        An admitted record is durable before the caller is answered, as every
        decision record; one over the limits is counted into an ``auth_flood``
        aggregate (``gateway/audit/flood.py``) and the caller is answered all the same.
        """
        self.write_floods()  # first, so a window that has passed is closed before this record counts
        admitted = self.floods.admit(record)
        if admitted:
            await self._record(record)
        else:
            self.decisions[(record.decision, record.code)] += 1

    def write_floods(self, *, everything: bool = False) -> None:
        """Queue the ``auth_flood`` aggregates that are due (all of them at shutdown)."""
        for aggregate in self.floods.due(everything=everything):
            try:
                self.audit.submit(aggregate, retry=True)  # retried through an outage, like an outcome
            except AuditUnavailable:
                log.error(
                    "audit_record_unsaved", logger="audit", reason="the audit log refused it", record=aggregate.fields()
                )

    async def record_refusal(self, ctx: RequestContext, refusal: GatewayError, route: str) -> None:
        """Durably record a request refused before its token was looked at (oversized headers or body)."""
        record = RouteDenied(who=self.who(ctx, None), code=refusal.code, reason=refusal.detail, route=route)
        await self._record_unverified(record)

    def who(self, ctx: RequestContext, identity: Identity | None) -> Who:
        """The fields every audit record of this request starts with (``identity`` None: no valid token)."""
        return Who.of(
            ctx.request_id,
            identity,
            self.policies.current.revision,
            client=ctx.client,
            user_agent=ctx.user_agent,
            client_request_id=ctx.client_request_id,
        )

    async def record_event(self, record: AuditRecord) -> None:
        """Durably record an event outside the query path (policy edits, access requests, audit reads)."""
        await self.audit.append(record)

    async def _record_cancel(self, running: Running, *, killed: bool) -> None:
        """Record that a revocation cancelled a running statement (the kill is a decision of its own)."""
        record = RevocationCancelRecord(
            who=self.who(RequestContext(running.request_id, None, None), running.identity),
            target=running.target,
            db_user=running.db_user,
            thread_id=running.thread_id,
            action="KILL CONNECTION" if running.transaction else "KILL QUERY",
            killed=killed,
        )
        try:
            await self.audit.append(record)
        except AuditUnavailable:
            log.error("audit_write_failed", request_id=running.request_id, event_kind="revocation_cancel")

    async def deny_role(self, ctx: RequestContext, identity: Identity, role: str, route: str) -> None:
        """Durably record a call refused for want of ``role`` (admin, auditor) before it is answered."""
        record = RouteDenied(
            who=self.who(ctx, identity), code="forbidden", reason=f"the {role} role is required", route=route
        )
        await self._record(record)

    async def authenticate(self, token: str | None, ctx: RequestContext) -> Identity:
        """Validate the bearer token; audit a refusal (with the unverified subject)."""
        try:
            if not token:
                raise Unauthenticated("no bearer token")
            with self.tracing.span("authn"):
                return await self.validator.validate(token)
        except Unauthenticated as exc:
            record = AuthRecord(
                who=dataclasses.replace(self.who(ctx, None), user=exc.unverified_subject),
                code=exc.code,
                reason=exc.reason,
                token_hash=_token_hash(token),
            )
            await self._record_unverified(record)
            raise
        except GatewayError as exc:  # e.g. an oversized token
            record = AuthRecord(
                who=self.who(ctx, None), code=exc.code, reason=exc.detail, token_hash=_token_hash(token)
            )
            await self._record_unverified(record)
            raise

    def roles(self, identity: Identity) -> frozenset[str]:
        """The caller's roles (admin, auditor) under the current policy."""
        return roles_of(identity, self.policies.current)

    def me(self, identity: Identity) -> dict[str, Any]:
        """Describe the caller: user, groups, roles and effective grants."""
        return views.me(identity, self.policies.current, self._clock())

    def targets(self, identity: Identity) -> list[dict[str, Any]]:
        """The targets the caller can use, with the highest access level and its expiry."""
        return views.targets(identity, self.policies.current, self._clock(), self.settings.targets)

    async def _analyze(self, target: str, sql: str) -> Statement:
        limits = self.settings.limits
        analysis = functools.partial(
            analyze,
            sql,
            default_database=self.settings.targets[target].database,
            max_sql_bytes=limits.max_sql_bytes,
            max_depth=limits.max_sql_depth,
        )
        if len(sql) <= INLINE_ANALYSIS_CHARS:
            return analysis()  # short statements: usually a cache hit, always quick
        # Parsing is pure Python and a long statement can take a large share of a second:
        # in a thread, the GIL's switch interval keeps the event loop serving meanwhile.
        return await asyncio.to_thread(analysis)

    async def _authorize(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        requests: Sequence[StatementRequest],
        *,
        transaction: bool,
    ) -> tuple[Decision, list[Statement], DecisionRecord]:
        """Analyse and decide; write the decision record; raise on any denial."""
        who = self.who(ctx, identity)
        statement = requests[0].sql if len(requests) == 1 else tuple(r.sql for r in requests)
        analysed = _Analysed()
        try:
            with self.tracing.span("policy"):
                statements, decision = await self._decide(identity, target, requests, analysed, transaction=transaction)
        except GatewayError as exc:
            refused = DecisionRecord(
                who=who,
                target=target,
                statement=statement,
                transaction=transaction,
                kind=analysed.kind,
                tables=analysed.tables,
                decision="deny",
                code=exc.code,
                reason=exc.detail,
            )
            await self._record(refused)
            raise
        record = DecisionRecord(
            who=who,
            target=target,
            statement=statement,
            transaction=transaction,
            kind=analysed.kind,
            tables=analysed.tables,
            decision="allow" if decision.allowed else "deny",
            code=decision.code,
            grant=decision.grant,
            db_user=decision.db_user,
            reason=decision.reason,
        )
        await self._record(record)
        if not decision.allowed:
            raise _DENIALS.get(decision.code, Forbidden)(decision.reason)
        return decision, statements, record

    async def _decide(
        self,
        identity: Identity,
        target: str,
        requests: Sequence[StatementRequest],
        analysed: _Analysed,
        *,
        transaction: bool,
    ) -> tuple[list[Statement], Decision]:
        if target not in self.settings.targets:
            raise UnknownTarget(f"no target named {target!r}")
        statements = [await self._analyze(target, r.sql) for r in requests]
        for statement, request in zip(statements, requests, strict=True):
            # Known before deciding: refused and recorded as a denial, never an allow that fails at bind.
            given, wanted = len(request.params), statement.placeholders
            if given != wanted:
                raise InvalidRequest(f"the statement has {wanted} placeholders but {given} params were given")
        if transaction and any(s.kind is Kind.DDL for s in statements):
            raise StatementRejected("DDL commits implicitly in MariaDB, so it cannot run inside a transaction")
        analysed.kind = _joined(s.kind.value for s in statements)
        analysed.tables = tuple(sorted({t for s in statements for t in s.tables}))
        decision = decide(
            identity,
            statements,
            target,
            self.policies.current,
            self._clock(),
            safe_functions=SAFE_FUNCTIONS,
        )
        if decision.allowed and self.views is not None and any(s.kind in _VIEW_KINDS for s in statements):
            statements, decision = await self._through_views(identity, target, statements, decision)
            analysed.tables = tuple(sorted({t for s in statements for t in s.tables}))
        return statements, decision

    async def _through_views(
        self, identity: Identity, target: str, statements: list[Statement], decision: Decision
    ) -> tuple[list[Statement], Decision]:
        """Decide again with the base tables of every view added (SECURITY rule 28), on the deciding account."""
        assert self.views is not None  # noqa: S101 - checked by the caller; narrows the type
        for _ in range(_VIEW_ROUNDS):
            expanded = [await self._expand(decision, s) for s in statements]
            again = decide(
                identity, expanded, target, self.policies.current, self._clock(), safe_functions=SAFE_FUNCTIONS
            )
            if not again.allowed or again.db_user == decision.db_user:
                return expanded, again
            decision = again  # another grant (account) allows it: resolve the views as that account sees them
        raise Forbidden("the views in this statement resolve differently for the accounts of your grants")

    async def _expand(self, decision: Decision, statement: Statement) -> Statement:
        """``statement`` with its views' base tables added, and the functions their definitions call."""
        if self.views is None or statement.kind not in _VIEW_KINDS:
            return statement
        tables, functions = await self.views.expand(decision, statement.tables)
        return dataclasses.replace(statement, tables=tables, functions=statement.functions | functions)

    def _limits(self, decision: Decision, requested_rows: int | None) -> execution.Limits:
        limits = self.settings.limits
        caps = [limits.max_rows]
        if decision.max_rows is not None:
            caps.append(decision.max_rows)
        if requested_rows is not None:
            caps.append(requested_rows)
        timeout = min(
            decision.statement_timeout or limits.default_statement_timeout,
            limits.max_statement_timeout,
        )
        return execution.Limits(
            timeout=timeout,
            max_rows=min(caps),
            max_bytes=limits.max_result_bytes,
            read_only=decision.access == "read",
        )

    async def query(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        request: StatementRequest,
        max_rows: int | None,
    ) -> dict[str, Any]:
        """Run one statement and reply per the SPEC's shape."""
        decision, (statement,), _ = await self._authorize(ctx, identity, target, [request], transaction=False)
        limits = self._limits(decision, max_rows)
        comment = execution.comment_for(ctx.request_id, identity.user)
        started = time.perf_counter()
        result = await self._on_connection(
            ctx,
            identity,
            decision,
            started,
            lambda conn: execution.run_statement(conn, statement, request.params, limits, comment),
            transaction=False,
        )
        duration = _ms(started)
        if statement.kind is Kind.DDL and self.views is not None:
            self.views.forget(target)  # a view may have been made or redefined
        rows = result.row_count if result.rows_affected is None else result.rows_affected
        await self._outcome(ctx, identity, target, started, code="ok", rows=rows, truncated=result.truncated)
        return {
            **_ids(ctx),
            "target": target,
            "kind": statement.kind.value,
            "grant": decision.grant,
            "columns": result.columns,
            "rows": result.rows,
            "row_count": result.row_count,
            "truncated": result.truncated,
            "rows_affected": result.rows_affected,
            "last_insert_id": result.last_insert_id,
            "duration_ms": duration,
        }

    async def _on_connection(
        self,
        ctx: RequestContext,
        identity: Identity,
        decision: Decision,
        started: float,
        work: Callable[[Pooled], Awaitable[_T]],
        *,
        transaction: bool,
    ) -> _T:
        """Run ``work`` on a pooled connection as an in-flight statement a revocation can cancel.

        A failure is audited as the outcome (``revoked`` when a revocation
        cancelled it) and raised; success is the caller's to audit.
        """
        running: Running | None = None
        try:
            async with self.pools.connection(decision, waiting=self.tracing.span("pool.wait")) as conn:
                running = _running(ctx, identity, decision, conn, transaction=transaction)
                with self.inflight.track(running), self.tracing.span("execute"):
                    self._check_still_allowed(running)
                    return await work(conn)
        except GatewayError as exc:
            err = _cancelled(exc, running)
            failed: dict[str, Any] = {"committed": False} if transaction else {}
            await self._outcome(ctx, identity, decision.target, started, code=err.code, error=err.detail, **failed)
            raise err from None

    async def query_stream(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        request: StatementRequest,
        max_rows: int | None,
    ) -> streaming.RowStream:
        """Authorize and start one statement whose rows stream (NDJSON); the outcome is audited when it ends."""
        decision, (statement,), _ = await self._authorize(ctx, identity, target, [request], transaction=False)
        buffered = self._limits(decision, max_rows)
        cap = streaming.stream_limits(self.settings.limits, decision.max_rows, max_rows)
        limits = execution.Limits(buffered.timeout, cap, buffered.max_bytes, read_only=buffered.read_only)
        started = time.perf_counter()
        tracking = contextlib.ExitStack()
        running: Running | None = None

        async def outcome(**fields: Any) -> None:  # noqa: ANN401
            tracking.close()
            if running is not None and running.cancelled:
                fields["code"] = "revoked"
            await self._outcome(ctx, identity, target, started, **fields)

        header = {**_ids(ctx), "target": target, "kind": statement.kind.value, "grant": decision.grant}

        def in_flight(conn: Pooled) -> None:
            # A stream is an in-flight statement too: a revocation cancels it like any other.
            nonlocal running
            running = _running(ctx, identity, decision, conn, transaction=False)
            tracking.enter_context(self.inflight.track(running))
            self._check_still_allowed(running)

        try:
            stream = await streaming.open_stream(
                self.pools.pool_for(decision),
                statement,
                request.params,
                limits,
                execution.comment_for(ctx.request_id, identity.user),
                header=header,
                started=started,
                outcome=outcome,
                on_connection=in_flight,
            )
        except GatewayError as exc:
            exc = _cancelled(exc, running)
            await outcome(code=exc.code, error=exc.detail)
            raise exc from None
        stream.on_error = lambda exc: _cancelled(exc, running)
        return stream

    async def transaction(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        requests: Sequence[StatementRequest],
    ) -> dict[str, Any]:
        """Authorize every statement first, then run them all-or-nothing."""
        decision, statements, _ = await self._authorize(ctx, identity, target, requests, transaction=True)
        limits = self._limits(decision, None)
        comment = execution.comment_for(ctx.request_id, identity.user)
        started = time.perf_counter()
        batch = [(s, r.params) for s, r in zip(statements, requests, strict=True)]
        results = await self._on_connection(
            ctx,
            identity,
            decision,
            started,
            lambda conn: execution.run_transaction(conn, batch, limits, comment),
            transaction=True,
        )
        duration = _ms(started)
        await self._outcome(
            ctx,
            identity,
            target,
            started,
            code="ok",
            committed=True,
            rows=sum(r.rows_affected or r.row_count for r in results),
        )
        return {
            **_ids(ctx),
            "target": target,
            "grant": decision.grant,
            "committed": True,
            "results": [
                {
                    "kind": s.kind.value,
                    "columns": r.columns,
                    "rows": r.rows,
                    "row_count": r.row_count,
                    "truncated": r.truncated,
                    "rows_affected": r.rows_affected,
                    "last_insert_id": r.last_insert_id,
                }
                for s, r in zip(statements, results, strict=True)
            ],
            "duration_ms": duration,
        }

    async def _outcome(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        started: float,
        **fields: Any,  # noqa: ANN401
    ) -> None:
        record = OutcomeRecord(who=self.who(ctx, identity), target=target, duration_ms=_ms(started), **fields)
        # The decision record is already durable; the statement has run, so
        # failing the reply now would only invite a blind retry of a write.
        try:
            with self.tracing.span("audit.outcome"):
                written = self.audit.submit(record, retry=True)
        except AuditUnavailable:
            log.error("audit_outcome_lost", request_id=ctx.request_id)
            return
        if self.settings.audit.await_outcome:
            with contextlib.suppress(AuditUnavailable):
                await self.audit.settled(written)
        written.add_done_callback(functools.partial(_outcome_written, ctx.request_id))


def _ids(ctx: RequestContext) -> dict[str, str]:
    """The reply's ids: the gateway's, and the caller's own when it sent a sane one."""
    if ctx.client_request_id is None:
        return {"request_id": ctx.request_id}
    return {"request_id": ctx.request_id, "client_request_id": ctx.client_request_id}


def _outcome_written(request_id: str, written: asyncio.Future[Any]) -> None:
    if not written.cancelled() and written.exception() is not None:
        log.error("audit_outcome_lost", request_id=request_id)


def _running(
    ctx: RequestContext, identity: Identity, decision: Decision, conn: Pooled, *, transaction: bool
) -> Running:
    return Running(
        identity,
        decision.target,
        decision.db_user or "",
        conn.thread_id,
        transaction=transaction,
        request_id=ctx.request_id,
    )


def _cancelled(exc: GatewayError, running: Running | None) -> GatewayError:
    """A statement cancelled because access was revoked fails as ``revoked``, whatever MariaDB said."""
    if running is not None and running.cancelled and not isinstance(exc, Revoked):
        return Revoked(f"access to {running.target} was revoked; the running statement was cancelled")
    return exc


def _token_hash(token: str | None) -> str | None:
    """A short hash that links log lines about one token without revealing it (SECURITY rule 7)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else None


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _joined(values: Any) -> str:  # noqa: ANN401
    return ",".join(dict.fromkeys(values))
