"""Typed audit records store exactly the JSON the gateway wrote before them, so old logs still verify.

Each ``old_*`` function below is the dict building the pipeline and routes
did before ``gateway/audit/records.py`` (copied from the code it replaced);
each test builds the same record the new way and proves the canonical bytes,
and so the chained hashes, are the same.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pytest

from gateway.audit.caps import RecordCaps
from gateway.audit.export import CSV_COLUMNS
from gateway.audit.fake import MemoryAuditStore
from gateway.audit.fields import COLUMNS, FIELD_CAPS
from gateway.audit.format import format_time
from gateway.audit.log import AuditLog
from gateway.audit.pending import Pending
from gateway.audit.pending import prepared as prepare
from gateway.audit.query import EQUALITY_FILTERS, AuditFilter
from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import (
    KINDS,
    UNSET,
    AccessRequestRecord,
    AuditReadRecord,
    AuditRecord,
    AuthFloodRecord,
    AuthRecord,
    DecisionRecord,
    OutcomeRecord,
    PolicyEditRecord,
    ReviewRecord,
    RevocationCancelRecord,
    RouteDenied,
    Who,
)
from gateway.audit.schema import WIDTHS
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import canonical
from gateway.audit.verify import verify
from gateway.clock import utcnow
from gateway.identity.tokens import Identity
from gateway.settings import AuditSettings

NOW = datetime(2026, 5, 1, 9, 30, 15, 123456, tzinfo=UTC)
REVISION = "rev-0123456789ab"
ALICE = Identity(
    user="alice@example.com",
    groups=frozenset({"eng", "analysts"}),
    subject="sub-alice",
    issuer="https://idp.example.com",
    token_id=None,
    token_hash="0" * 16,
    expires_at=0.0,
)
CTX = RequestContext("gw-1", "203.0.113.9", "curl/8", client_request_id="mine-1")
BARE = RequestContext("gw-2", None, None)  # no client request id: the field is absent


# (decision, code, grant, db_user, reason) as the policy decided
Decided = tuple[str, str, str | None, str | None, str]


def old_base(ctx: RequestContext, event: str, identity: Identity | None) -> dict[str, object]:
    """``Pipeline._base`` as it was."""
    record: dict[str, object] = {
        "event": event,
        "request_id": ctx.request_id,
        "client": ctx.client,
        "user_agent": ctx.user_agent,
        "user": identity.user if identity else None,
        "issuer": identity.issuer if identity else None,
        "sub": identity.subject if identity else None,
        "user_verified": identity is not None,
        "groups": sorted(identity.groups) if identity else [],
        "policy_revision": REVISION,
    }
    if ctx.client_request_id is not None:
        record["client_request_id"] = ctx.client_request_id
    return record


def who(ctx: RequestContext, identity: Identity | None) -> Who:
    """The recorder's own ``who`` under a policy at :data:`REVISION` (the fake store: nothing is written)."""
    recorder = Recorder(
        AuditLog(MemoryAuditStore()), AuditSettings(), revision=lambda: REVISION, clock=utcnow, new_id=lambda: "x"
    )
    return recorder.who(ctx, identity)


def old_decision(
    ctx: RequestContext,
    identity: Identity | None,
    *,
    sql: str | list[str],
    analysed: bool,
    decided: Decided | None,
    error: tuple[str, str] | None = None,
) -> dict[str, object]:
    """``Pipeline._authorize`` / ``_decide`` as they were: the record at each point a decision is written."""
    record = old_base(ctx, "decision", identity)
    record.update(target="shop", statement=sql, transaction=isinstance(sql, list))
    if analysed:
        record.update(kind="read", tables=["shop.items", "shop.orders"])
    if error is not None:
        record.update(decision="deny", code=error[0], reason=error[1])
    else:
        assert decided is not None, "a case without an error has a decision"
        record.update(decision=decided[0], code=decided[1], grant=decided[2], db_user=decided[3], reason=decided[4])
    return record


def new_decision(
    ctx: RequestContext,
    identity: Identity | None,
    *,
    sql: str | list[str],
    analysed: bool,
    decided: Decided | None,
    error: tuple[str, str] | None = None,
) -> DecisionRecord:
    """The same decision, as the pipeline builds it now."""
    facts = {"kind": "read", "tables": ("shop.items", "shop.orders")} if analysed else {}
    common: dict[str, Any] = {
        "who": who(ctx, identity),
        "target": "shop",
        "transaction": isinstance(sql, list),
        **facts,
    }
    statement = tuple(sql) if isinstance(sql, list) else sql
    if error is not None:
        return DecisionRecord(**common, statement=statement, decision="deny", code=error[0], reason=error[1])
    assert decided is not None, "a case without an error has a decision"
    allowed, code, grant, db_user, reason = decided
    return DecisionRecord(
        **common, statement=statement, decision=allowed, code=code, grant=grant, db_user=db_user, reason=reason
    )


class DecisionCase(TypedDict):
    """The keyword arguments of ``old_decision`` / ``new_decision`` for one case."""

    sql: str | list[str]
    analysed: bool
    decided: Decided | None
    error: NotRequired[tuple[str, str]]


DECISIONS: dict[str, DecisionCase] = {
    "allowed": {"sql": "SELECT 1", "analysed": True, "decided": ("allow", "ok", "eng-read", "reader", "granted")},
    "denied by the policy": {
        "sql": "SELECT 1",
        "analysed": True,
        "decided": ("deny", "forbidden", None, None, "no grant covers shop.orders"),
    },
    "refused before analysis": {"sql": "SELEC", "analysed": False, "decided": None, "error": ("bad_sql", "cannot")},
    "refused after analysis": {"sql": "SELECT 1", "analysed": True, "decided": None, "error": ("forbidden", "views")},
    "a transaction": {
        "sql": ["UPDATE t SET a = 1", "DELETE FROM t"],
        "analysed": True,
        "decided": ("allow", "ok", "eng-write", "writer", "granted"),
    },
}


def old_outcome(ctx: RequestContext, identity: Identity | None, **fields: object) -> dict[str, object]:
    """``Pipeline._outcome`` as it was."""
    record = old_base(ctx, "outcome", identity)
    record.update(target="shop", duration_ms=12.5, **fields)
    return record


class OutcomeCase(TypedDict, total=False):
    """The fields of one outcome beyond who, target and duration."""

    code: str
    error: str
    rows: int
    truncated: bool
    committed: bool
    streamed: bool


OUTCOMES: dict[str, OutcomeCase] = {
    "a query": {"code": "ok", "rows": 3, "truncated": False},
    "a failed query": {"code": "database_error", "error": "(1146) Table 'shop.nope' doesn't exist"},
    "a failed transaction": {"committed": False, "code": "revoked", "error": "access was revoked"},
    "a transaction": {"code": "ok", "committed": True, "rows": 7},
    "a stream": {"code": "ok", "rows": 100, "truncated": True, "streamed": True},
    "a broken stream": {"code": "client_disconnected", "error": "the client disconnected mid-stream", "rows": 5},
}


def old_others() -> dict[str, dict[str, object]]:
    """The records outside the query path, as the routes, the revoker and the flood control built them."""
    role = old_base(CTX, "decision", ALICE)
    role.update(decision="deny", code="forbidden", reason="the admin role is required", route="GET /v1/policy")
    oversized = old_base(BARE, "decision", None)
    oversized.update(decision="deny", code="payload_too_large", reason="too big", route="POST /v1/query")
    unverified = old_base(CTX, "auth", None)
    unverified.update(user="mallory", decision="deny", code="unauthenticated", reason="expired", token_hash="ab" * 8)
    no_token = old_base(BARE, "auth", None)
    no_token.update(decision="deny", code="unauthenticated", reason="no bearer token", token_hash=None)
    cancel = old_base(RequestContext("gw-3", None, None), "revocation_cancel", ALICE)
    cancel.update(
        target="shop",
        db_user="writer",
        thread_id=42,
        action="KILL CONNECTION",
        killed=True,
        decision="deny",
        code="revoked",
    )
    edit = {
        **old_base(CTX, "policy_edit", ALICE),
        "action": "add_grant",
        "detail": {"grant": "g1", "subjects": ["user:bob@example.com"]},
        "file": "managed.yaml",
        "diff": "--- a\n+++ b\n+  - name: g1\n",
        "policy_revision": "rev-before",
        "new_revision": "rev-after",
    }
    approval = {**edit, "access_request": "ar-1"}
    request = {
        **old_base(CTX, "access_request", ALICE),
        "action": "approve",
        "access_request": "ar-1",
        "requester": "bob@example.com",
        "requester_issuer": "https://idp.example.com",
        "requester_sub": "sub-bob",
        "target": "shop",
        "access": "read",
        "reason": "incident 7",
    }
    read = {
        **old_base(CTX, "audit_read", ALICE),
        "decision": "allow",
        "code": "ok",
        "reason": "audit query",
        "filters": {"user": "bob@example.com", "cursor": None},
    }
    flood: dict[str, object] = {
        "event": "auth_flood",
        "request_id": "gw-9",
        "time": format_time(NOW),
        "client": "203.0.113.9",
        "user": None,
        "user_verified": False,
        "decision": "deny",
        "code": "auth_flood",
        "suppressed": 4711,
        "codes": {"unauthenticated": 4700, "payload_too_large": 11},
        "window_start": "2026-05-01T09:29:15.000000Z",
        "window_end": "2026-05-01T09:30:14.000000Z",
        "window_seconds": 60.0,
        "sample_reasons": ["expired", "no bearer token"],
        "sample_request_ids": ["gw-4", "gw-5"],
    }
    # A kind added after the typed records (issue 16): its "old" form is the JSON the docs promise.
    review: dict[str, object] = {
        **old_base(CTX, "review", ALICE),
        "action": "dry_run",
        "review": "rv-1",
        "digest": "ab" * 32,
        "state": "pending",
        "author": "alice@example.com",
        "author_issuer": "https://idp.example.com",
        "author_sub": "sub-alice",
        "target": "shop",
        "grant": "eng-write",
        "statement": "DELETE FROM orders WHERE id = ?",
        "rows_affected": [1],
    }
    return {
        "review dry run": review,
        "role denied": role,
        "oversized request": oversized,
        "auth, unverified subject": unverified,
        "auth, no token": no_token,
        "revocation cancel": cancel,
        "policy edit": edit,
        "policy edit of an approval": approval,
        "access request": request,
        "audit read": read,
        "auth flood": flood,
    }


def new_others() -> dict[str, AuditRecord]:
    """The same records, built with the record kinds as the pipeline and routes build them now."""
    edit = PolicyEditRecord(
        who=dataclasses.replace(who(CTX, ALICE), policy_revision="rev-before"),
        action="add_grant",
        detail={"grant": "g1", "subjects": ["user:bob@example.com"]},
        file="managed.yaml",
        diff="--- a\n+++ b\n+  - name: g1\n",
        new_revision="rev-after",
    )
    return {
        "role denied": RouteDenied(
            who=who(CTX, ALICE), code="forbidden", reason="the admin role is required", route="GET /v1/policy"
        ),
        "oversized request": RouteDenied(
            who=who(BARE, None), code="payload_too_large", reason="too big", route="POST /v1/query"
        ),
        "auth, unverified subject": AuthRecord(
            who=dataclasses.replace(who(CTX, None), user="mallory"),
            code="unauthenticated",
            reason="expired",
            token_hash="ab" * 8,
        ),
        "auth, no token": AuthRecord(who=who(BARE, None), code="unauthenticated", reason="no bearer token"),
        "revocation cancel": RevocationCancelRecord(
            who=who(RequestContext("gw-3", None, None), ALICE),
            target="shop",
            db_user="writer",
            thread_id=42,
            action="KILL CONNECTION",
            killed=True,
        ),
        "policy edit": edit,
        "policy edit of an approval": dataclasses.replace(edit, access_request="ar-1"),
        "access request": AccessRequestRecord(
            who=who(CTX, ALICE),
            action="approve",
            access_request="ar-1",
            requester="bob@example.com",
            requester_issuer="https://idp.example.com",
            requester_sub="sub-bob",
            target="shop",
            access="read",
            reason="incident 7",
        ),
        "review dry run": ReviewRecord(
            who=who(CTX, ALICE),
            action="dry_run",
            review="rv-1",
            digest="ab" * 32,
            state="pending",
            author="alice@example.com",
            author_issuer="https://idp.example.com",
            author_sub="sub-alice",
            target="shop",
            grant="eng-write",
            statement="DELETE FROM orders WHERE id = ?",
            rows_affected=(1,),
        ),
        "audit read": AuditReadRecord(
            who=who(CTX, ALICE), reason="audit query", filters={"user": "bob@example.com", "cursor": None}
        ),
        "auth flood": AuthFloodRecord(
            request_id="gw-9",
            time=NOW,
            client="203.0.113.9",
            user=None,
            suppressed=4711,
            codes={"unauthenticated": 4700, "payload_too_large": 11},
            window_start="2026-05-01T09:29:15.000000Z",
            window_end="2026-05-01T09:30:14.000000Z",
            window_seconds=60.0,
            sample_reasons=("expired", "no bearer token"),
            sample_request_ids=("gw-4", "gw-5"),
        ),
    }


def pairs() -> list[tuple[str, dict[str, object], AuditRecord]]:
    """(case, the old dict, the new record) for every kind and every shape it takes."""
    out: list[tuple[str, dict[str, object], AuditRecord]] = []
    for name, case in DECISIONS.items():
        for ctx in (CTX, BARE):
            decision = old_decision(ctx, ALICE, **case), new_decision(ctx, ALICE, **case)
            out.append((f"decision {name} {ctx.request_id}", *decision))
    for name, fields in OUTCOMES.items():
        outcome = OutcomeRecord(who=who(CTX, ALICE), target="shop", duration_ms=12.5, **fields)
        out.append((f"outcome of {name}", old_outcome(CTX, ALICE, **fields), outcome))
    old, new = old_others(), new_others()
    out += [(name, old[name], new[name]) for name in old]
    return out


PAIRS = pairs()


def prepared(record: AuditRecord) -> dict[str, object]:
    """What the audit log stores for ``record`` (stamped at :data:`NOW` when it has no time), default caps."""
    return prepare(Pending(record, record.time or NOW), RecordCaps(), redact=False)


@pytest.mark.parametrize(("case", "old", "new"), PAIRS, ids=[p[0] for p in PAIRS])
def test_a_record_built_the_new_way_is_byte_identical_to_the_old_dict(
    case: str, old: dict[str, object], new: AuditRecord
) -> None:
    """The stored bytes (canonical JSON, the hashed form) of every kind and shape are what the old code wrote."""
    stored_then = canonical({**old, "time": format_time(NOW)})
    assert canonical(prepared(new)) == stored_then, case
    assert sorted(new.fields()) == sorted(k for k in old if k != "time"), "the same fields, none absent or added"


def test_every_kind_is_covered() -> None:
    """The byte-identity cases build every record kind."""
    assert {type(new) for _, _, new in PAIRS} == set(KINDS)


def test_a_log_written_by_the_old_code_verifies_and_chains_on(tmp_path: Path) -> None:
    """Old dicts and new records chain into the same hashes; a log of old entries followed by new ones verifies."""
    old_store, new_store = SQLiteAuditStore(tmp_path / "old.db"), SQLiteAuditStore(tmp_path / "new.db")
    time = {"time": format_time(NOW)}
    old_entries = old_store.append_batch([{**old, **time} for _, old, _ in PAIRS])
    new_entries = new_store.append_batch([prepared(new) for _, _, new in PAIRS])
    assert [e["hash"] for e in new_entries] == [e["hash"] for e in old_entries]
    old_store.append_batch([prepared(new) for _, _, new in PAIRS])  # the new code writing on after the old
    assert verify(old_store).ok
    assert verify(old_store).count == 2 * len(PAIRS)
    old_store.close()
    new_store.close()


def test_unset_fields_are_absent_and_none_is_null() -> None:
    """UNSET leaves a field out of the record; None writes null (a denial's grant, a missing token's hash)."""
    denied = new_decision(CTX, ALICE, **DECISIONS["denied by the policy"]).fields()
    refused = new_decision(BARE, ALICE, **DECISIONS["refused before analysis"]).fields()
    assert denied["grant"] is None
    assert "grant" not in refused
    assert "kind" not in refused
    assert "client_request_id" not in refused
    assert repr(UNSET) == "UNSET"


def test_the_stores_columns_are_the_marked_fields(tmp_path: Path) -> None:
    """Both stores' plain columns, the API's filters and the caps come from the record definitions."""
    store = SQLiteAuditStore(tmp_path / "audit.db")
    store.close()
    with closing(sqlite3.connect(tmp_path / "audit.db")) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    assert set(COLUMNS) <= columns
    assert set(COLUMNS) - {"time"} == set(WIDTHS)
    assert set(EQUALITY_FILTERS) == set(COLUMNS) - {"time"}
    assert set(EQUALITY_FILTERS) <= {f.name for f in dataclasses.fields(AuditFilter)}
    assert set(FIELD_CAPS.values()) <= {f.name for f in dataclasses.fields(RecordCaps)}


def test_the_export_keeps_every_column_it_had() -> None:
    """The CSV columns derived from the record kinds include every column of the hand-written list they replace."""
    before = [
        "seq",
        "time",
        "event",
        "request_id",
        "user",
        "user_verified",
        "groups",
        "client",
        "user_agent",
        "target",
        "db_user",
        "kind",
        "tables",
        "transaction",
        "statement",
        "decision",
        "code",
        "grant",
        "reason",
        "policy_revision",
        "rows",
        "truncated",
        "committed",
        "duration_ms",
        "error",
        "token_hash",
        "prev_hash",
        "hash",
        "extra",
    ]
    assert set(before) <= set(CSV_COLUMNS)
    assert CSV_COLUMNS[:3] == ("seq", "time", "event")
    assert CSV_COLUMNS[-3:] == ("prev_hash", "hash", "extra")
    assert len(set(CSV_COLUMNS)) == len(CSV_COLUMNS)
