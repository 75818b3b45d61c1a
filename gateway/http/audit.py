"""Auditor routes: ``GET /v1/audit`` (filter, newest first, cursor paging) and ``GET /v1/audit/verify``.

Both need the ``auditor`` role. They read through the app's own reader store
(``Services.audit_reader``: a second connection, read-only for MariaDB), so
a long scan never holds up the audit writer. The query logic sits behind
:meth:`~gateway.audit.store.AuditStore.query`; nothing here knows SQL.

Every read of the log is itself recorded (event ``audit_read``, with the
filters) before it is answered: who looked at the audit log is part of it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import APIRouter, Query
from pydantic import BeforeValidator

from gateway.audit.anchor import open_anchor
from gateway.audit.checkpoints import load_public_keys
from gateway.audit.query import DEFAULT_LIMIT, MAX_LIMIT, MAX_TEXT, AuditFilter
from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import EVENTS, AuditReadRecord
from gateway.audit.verify import VerifyResult, verify
from gateway.errors import AuditUnavailable, GatewayError, InvalidRequest
from gateway.http.deps import Auditor, AuditReaderDep, Context, RecorderDep, SettingsDep
from gateway.http.problems import JSONResponse
from gateway.identity.tokens import Identity

VERIFY_BATCH = 5000
CHAIN_PATTERN = r"^(?:_legacy|[a-z0-9][a-z0-9.-]{0,63})$"  # a replica id, or the chain from before replicas had one
MAX_SEQ = 2**63 - 1  # sequence numbers are 64-bit in both stores (and in the JSON audit record)
Short = Annotated[str | None, Query(min_length=1, max_length=255)]
Event = Annotated[str | None, Query(min_length=1, max_length=255, description=f"the record kind: {', '.join(EVENTS)}")]
_NUMBER = re.compile(r"\s*[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*")


def _iso_only(value: object) -> object:
    """Refuse a bare number: pydantic would read it as Unix seconds, the API takes ISO 8601."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("must be an ISO 8601 date and time, e.g. 2026-05-01T00:00:00Z")
    return value


Time = Annotated[datetime | None, Query(), BeforeValidator(_iso_only)]


Reader = AuditReaderDep
router = APIRouter()


def _aware(moment: datetime | None, name: str) -> datetime | None:
    """Times without an offset are taken as UTC; one that leaves years 1-9999 in UTC is refused."""
    if moment is None:
        return None
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:
        aware.astimezone(UTC)  # what the stores do; an OverflowError there would read as a store failure
    except OverflowError:
        raise InvalidRequest(f"{name} must fall within the years 1-9999 in UTC") from None
    return aware


async def _record_read(
    recorder: Recorder, ctx: RequestContext, caller: Identity, what: str, details: dict[str, Any]
) -> None:
    """Durably record that ``caller`` read the audit log; fail closed like every audit write."""
    await recorder.event(AuditReadRecord(who=recorder.who(ctx, caller), reason=what, filters=details))


P = ParamSpec("P")
T = TypeVar("T")


async def read_store(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking store work off the event loop; a store failure is ``audit_unavailable``.

    Every reader of the audit log uses it: these routes and the console's auditor and history pages.
    """
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except GatewayError:
        raise
    except Exception as exc:  # any driver error means the log cannot be read now
        raise AuditUnavailable("the audit store could not be read") from exc


@router.get("/v1/audit")
async def audit_log(
    *,
    caller: Auditor,
    ctx: Context,
    recorder: RecorderDep,
    store: Reader,
    user: Short = None,
    target: Short = None,
    decision: Short = None,
    code: Short = None,
    event: Event = None,
    request_id: Short = None,
    since: Time = None,
    until: Time = None,
    q: Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_LIMIT,
) -> JSONResponse:
    """Audit entries matching every given filter, newest first, ``limit`` (at most 500) per page."""
    filters = AuditFilter(
        user=user,
        target=target,
        decision=decision,
        code=code,
        event=event,
        request_id=request_id,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
        q=q,
    )
    if filters.since and filters.until and filters.since >= filters.until:
        raise InvalidRequest("since must be before until")
    await _record_read(recorder, ctx, caller, "audit query", {**filters.describe(), "cursor": cursor})
    page = await read_store(store.query, filters, cursor, limit)
    return JSONResponse({"entries": page.entries, "next_cursor": page.next_cursor, "limit": min(limit, MAX_LIMIT)})


@router.get("/v1/audit/verify")
async def audit_verify(
    *,
    caller: Auditor,
    ctx: Context,
    recorder: RecorderDep,
    store: Reader,
    settings: SettingsDep,
    head_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    head_hash: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    chain: Annotated[str | None, Query(pattern=CHAIN_PATTERN)] = None,
) -> JSONResponse:
    """Verify every hash chain, streaming through them in batches, and every signed checkpoint.

    ``head_seq`` and ``head_hash`` (the last head shipped to the SIEM, with
    its ``chain`` on the shared store) also catch a truncated tail.
    ``head_seq``/``head_hash`` in the reply are that chain's (or the only
    chain's); ``chains`` holds every chain's count and head.
    """
    if (head_seq is None) != (head_hash is None):
        raise InvalidRequest("head_seq and head_hash go together")
    expected = (head_seq, head_hash) if head_seq is not None and head_hash is not None else None
    await _record_read(recorder, ctx, caller, "audit verify", {"head_seq": head_seq, "chain": chain})
    config = settings.audit.checkpoints
    keys, anchor = load_public_keys(config), open_anchor(config.anchor)

    def check() -> VerifyResult:
        anchored = None if anchor is None else anchor.iter_anchored()
        return verify(store, expected_head=expected, chain=chain, keys=keys, anchored=anchored, batch=VERIFY_BATCH)

    result = await read_store(check)
    return JSONResponse(
        {
            "ok": result.ok,
            "count": result.count,
            "head_seq": result.head_seq,
            "head_hash": result.head_hash,
            "problems": result.problems,
            "chains": {
                name: {"count": c.count, "head_seq": c.head_seq, "head_hash": c.head_hash}
                for name, c in result.chains.items()
            },
            "checkpoints": result.checkpoints,
            "notes": result.notes,
        }
    )
