"""Authorization: analyse, decide (views seen through), and durably record the decision before anything runs.

``Authorizer.authorize`` is the first half of every statement's path: each
statement is analysed (long ones off the event loop), placeholder counts are
checked, the policy decides, views are resolved to their base tables and the
decision taken again on what they read (SECURITY rule 28); then the decision
record is written, allowed or denied, and a denial is raised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import UNSET, DecisionRecord, Unset
from gateway.db.catalog import ViewCatalog
from gateway.db.encoding import JSONValue
from gateway.errors import Forbidden, GatewayError, InvalidRequest, Revoked, StatementRejected, UnknownTarget
from gateway.identity.tokens import Identity
from gateway.policy.decide import Decision
from gateway.policy.memo import DecisionMemo
from gateway.policy.store import PolicyStore
from gateway.settings import Settings
from gateway.sql.statements import SAFE_FUNCTIONS, Kind, Statement, analyze_async
from gateway.tracing import Tracing

_VIEW_KINDS = frozenset({Kind.READ, Kind.WRITE})  # DDL names views as objects (DROP VIEW v), not to read them
_VIEW_ROUNDS = 3
_DENIALS: dict[str, type[GatewayError]] = {"revoked": Revoked, "statement_rejected": StatementRejected}


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


class Authorizer:
    """Analysis, decision and the decision record, for the pipeline."""

    def __init__(
        self,
        settings: Settings,
        policies: PolicyStore,
        recorder: Recorder,
        *,
        clock: Callable[[], datetime],
        spans: Tracing,
        views: ViewCatalog | None,
    ) -> None:
        self._settings = settings
        self._policies = policies
        self._recorder = recorder
        self._clock = clock
        self._spans = spans
        self._views = views
        self.memo = DecisionMemo()  # decide's answers for the policy in force (gateway/policy/memo.py)

    async def authorize(
        self,
        ctx: RequestContext,
        identity: Identity,
        target: str,
        requests: Sequence[StatementRequest],
        *,
        transaction: bool,
        review: str | None = None,
    ) -> tuple[Decision, list[Statement]]:
        """Analyse and decide; write the decision record (durable); raise on any denial.

        ``review``: the id of the review being executed, which the record names.
        """
        analysed = _Analysed()
        record = DecisionRecord(
            who=self._recorder.who(ctx, identity),
            target=target,
            statement=requests[0].sql if len(requests) == 1 else tuple(r.sql for r in requests),
            transaction=transaction,
            decision="deny",
            code="",
            review=UNSET if review is None else review,
        )
        try:
            with self._spans.span("policy"):
                statements, decision = await self._decide(identity, target, requests, analysed, transaction=transaction)
        except GatewayError as exc:
            await self._recorder.decision(
                dataclasses.replace(
                    record, kind=analysed.kind, tables=analysed.tables, code=exc.code, reason=exc.detail
                )
            )
            raise
        allowed = "allow" if decision.allowed else "deny"
        await self._recorder.decision(
            dataclasses.replace(
                record,
                kind=analysed.kind,
                tables=analysed.tables,
                decision=allowed,
                code=decision.code,
                grant=decision.grant,
                db_user=decision.db_user,
                reason=decision.reason,
            )
        )
        if not decision.allowed:
            raise _DENIALS.get(decision.code, Forbidden)(decision.reason)
        return decision, statements

    async def _decide(
        self,
        identity: Identity,
        target: str,
        requests: Sequence[StatementRequest],
        analysed: _Analysed,
        *,
        transaction: bool,
    ) -> tuple[list[Statement], Decision]:
        if target not in self._settings.targets:
            raise UnknownTarget(f"no target named {target!r}")
        limits = self._settings.limits
        database = self._settings.targets[target].database
        statements = [
            await analyze_async(
                r.sql, default_database=database, max_sql_bytes=limits.max_sql_bytes, max_depth=limits.max_sql_depth
            )
            for r in requests
        ]
        for statement, request in zip(statements, requests, strict=True):
            # Known before deciding: refused and recorded as a denial, never an allow that fails at bind.
            given, wanted = len(request.params), statement.placeholders
            if given != wanted:
                raise InvalidRequest(f"the statement has {wanted} placeholders but {given} params were given")
        if transaction and any(s.kind is Kind.DDL for s in statements):
            raise StatementRejected("DDL commits implicitly in MariaDB, so it cannot run inside a transaction")
        analysed.kind = ",".join(dict.fromkeys(s.kind.value for s in statements))
        analysed.tables = tuple(sorted({t for s in statements for t in s.tables}))
        decision = self._decision(identity, target, statements)
        if decision.allowed and self._views is not None and any(s.kind in _VIEW_KINDS for s in statements):
            statements, decision = await self._through_views(identity, target, statements, decision)
            analysed.tables = tuple(sorted({t for s in statements for t in s.tables}))
        return statements, decision

    def _decision(self, identity: Identity, target: str, statements: Sequence[Statement]) -> Decision:
        policy = self._policies.current
        return self.memo.decide(identity, statements, target, policy, self._clock(), safe_functions=SAFE_FUNCTIONS)

    async def _through_views(
        self, identity: Identity, target: str, statements: list[Statement], decision: Decision
    ) -> tuple[list[Statement], Decision]:
        """Decide again with every view's base tables and calls added (SECURITY rule 28), on the deciding account."""
        views = self._views
        if views is None:
            return statements, decision
        for round_ in range(_VIEW_ROUNDS):
            expanded = [await views.expand_statement(decision, s) if s.kind in _VIEW_KINDS else s for s in statements]
            if round_ == 0 and all(e is s for e, s in zip(expanded, statements, strict=True)):
                # No view added a table or a call: deciding again on the same statements gives this decision.
                return statements, decision
            again = self._decision(identity, target, expanded)
            if not again.allowed or again.db_user == decision.db_user:
                return expanded, again
            decision = again  # another grant (account) allows it: resolve the views as that account sees them
        raise Forbidden("the views in this statement resolve differently for the accounts of your grants")
