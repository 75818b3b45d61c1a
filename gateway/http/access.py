"""Access request routes: ask for time-boxed access; admins approve or deny.

``POST /v1/access-requests`` and ``GET /v1/access-requests`` take any valid
token (callers see their own requests; admins see all). Approve and deny need
the admin role and are refused to the requester: the same person (issuer,
``sub``) or anyone sharing one of the person's names (the name on the request,
the names the alias registry saw the requester's person with, the caller's
name and aliases), so a second token, a second issuer or a changed email
cannot approve one's own request (SECURITY rule 26). An approval writes a grant
named after the request into the managed policy file, expiring ``duration``
after the approval, with a YAML comment naming the approver and the request;
the policy edit is audited like any other. Every step is audited.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import UNSET, AccessRequestRecord, RouteDenied
from gateway.errors import Forbidden, InvalidRequest, UnknownTarget
from gateway.http.admin import applied, audit_edit
from gateway.http.bodies import json_body
from gateway.http.deps import (
    AccessRequestsDep,
    Admin,
    AliasesDep,
    Caller,
    ClockDep,
    Context,
    EditorDep,
    PoliciesDep,
    RecorderDep,
    SettingsDep,
)
from gateway.http.problems import JSONResponse
from gateway.identity.aliases import AliasRegistry
from gateway.identity.subjects import canonical_name
from gateway.identity.tokens import Identity
from gateway.policy.decide import roles_of
from gateway.policy.durations import parse_duration
from gateway.policy.requests import STATES
from gateway.policy.store import PolicyStore
from gateway.policy.types import Access

router = APIRouter()
_DAYS = re.compile(r"^([0-9]+)d$")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


class RequestBody(BaseModel):
    """Body of ``POST /v1/access-requests``."""

    model_config = ConfigDict(extra="forbid")
    target: Annotated[str, Field(min_length=1, max_length=128)]
    access: StrictStr
    duration: StrictStr
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class DecisionBody(BaseModel):
    """Body of approve / deny."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str | None, Field(max_length=500)] = None
    db_user: Annotated[str | None, Field(min_length=1, max_length=80)] = None
    duration: Annotated[str | None, Field(min_length=1, max_length=32)] = None  # approve: at most the asked-for one


def _seconds(text: str, limit: float) -> float:
    days = _DAYS.match(text.strip())
    try:
        seconds = float(days[1]) * 86400 if days else parse_duration(text)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"duration {exc}") from None
    if not 0 < seconds <= limit:
        raise InvalidRequest(f"duration must be positive and at most {limit:g} seconds")
    return seconds


async def _audit(recorder: Recorder, ctx: RequestContext, caller: Identity, action: str, item: dict[str, Any]) -> None:
    record = AccessRequestRecord(
        who=recorder.who(ctx, caller),
        action=action,
        access_request=item["id"],
        requester=item["requester"],
        requester_issuer=item["requester_issuer"],
        requester_sub=item["requester_sub"],
        target=item["target"],
        access=item["access"],
        reason=item.get("decision_reason") or item["reason"],
    )
    await recorder.event(record)


@router.post("/v1/access-requests", status_code=201)
async def create_request(  # noqa: PLR0917 - FastAPI dependencies
    caller: Caller,
    ctx: Context,
    recorder: RecorderDep,
    settings: SettingsDep,
    requests: AccessRequestsDep,
    body: Annotated[RequestBody, Depends(json_body(RequestBody))],
) -> JSONResponse:
    """Ask for time-boxed access to a target."""
    if body.target not in settings.targets:
        raise UnknownTarget(f"no target named {body.target!r}")
    try:
        access = Access.from_label(body.access)
    except ValueError:
        raise InvalidRequest("access must be read, write or ddl") from None
    seconds = _seconds(body.duration, settings.admin.max_request_duration)
    item = await asyncio.to_thread(
        requests.create, caller.user, body.target, access.label, seconds, body.reason, person=caller.person
    )
    await _audit(recorder, ctx, caller, "create", item)
    return JSONResponse(item, status_code=201)


@router.get("/v1/access-requests")
async def list_requests(
    caller: Caller,
    policies: PoliciesDep,
    requests: AccessRequestsDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
) -> JSONResponse:
    """The caller's requests (admins: everyone's), newest first, optionally by state."""
    if state is not None and state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)}")
    if "admin" in roles_of(caller, policies.current):
        found = await asyncio.to_thread(requests.list, state=state)
    else:
        found = await asyncio.to_thread(requests.list, requester=caller.user, person=caller.person, state=state)
    return JSONResponse({"requests": found})


async def _not_own(
    recorder: Recorder,
    aliases: AliasRegistry,
    ctx: RequestContext,
    caller: Identity,
    item: dict[str, Any],
    *,
    route: str,
) -> None:
    """Refuse the requester: the same person, or a person sharing one of their names; recorded before the 403."""
    person = (item["requester_issuer"], item["requester_sub"])
    reason = "nobody approves or denies their own access request (under any of their names)"
    await refuse_own(
        recorder,
        aliases,
        ctx,
        caller,
        person,
        str(item["requester"]),
        route=route,
        reason=reason,
        access_request=item["id"],
    )


async def refuse_own(  # noqa: PLR0917 - the author, the caller and what the refusal names
    recorder: Recorder,
    aliases: AliasRegistry,
    ctx: RequestContext,
    caller: Identity,
    person: tuple[str | None, str | None],
    name: str,
    *,
    route: str,
    reason: str,
    access_request: str | None = None,
    review: str | None = None,
) -> None:
    """Refuse ``caller`` when they are the author ``person`` or share one of the author's names (SECURITY rule 26).

    The registry is read now: names learned since the tokens were validated
    count too. The refusal is a ``deny`` decision record, written before the 403.
    """
    names = {_canonical(name)}
    if person[0] is not None and person[1] is not None:
        names |= await aliases.names(person[0], person[1])
    if person == caller.person or names & (caller.names | await aliases.names(*caller.person)):
        # Someone trying to approve their own work is a denial the audit log must show (rule 21).
        refusal = RouteDenied(
            who=recorder.who(ctx, caller),
            code="forbidden",
            reason=reason,
            route=route,
            access_request=UNSET if access_request is None else access_request,
            review=UNSET if review is None else review,
        )
        await recorder.event(refusal)
        raise Forbidden(reason)


def _canonical(name: str) -> str:
    # Rows written before names were canonical may hold another spelling.
    try:
        return canonical_name(name)
    except ValueError:
        return name


def _db_user(policies: PolicyStore, item: dict[str, Any], chosen: str | None) -> str:
    if chosen:
        return chosen
    for grant in policies.current.grants:
        if grant.target == item["target"] and grant.access.label == item["access"]:
            return grant.db_user
    raise InvalidRequest(f"no existing {item['access']} grant on {item['target']} to copy db_user from: give db_user")


@router.post("/v1/access-requests/{request_id}/approve")
async def approve(  # noqa: PLR0917 - FastAPI dependencies
    caller: Admin,
    ctx: Context,
    recorder: RecorderDep,
    policies: PoliciesDep,
    editor: EditorDep,
    requests: AccessRequestsDep,
    aliases: AliasesDep,
    clock: ClockDep,
    request_id: str,
    body: Annotated[DecisionBody, Depends(json_body(DecisionBody))],
) -> JSONResponse:
    """Approve: write a grant expiring ``duration`` from now (or the shorter one given), attributed to the approver."""
    item = await asyncio.to_thread(requests.get, request_id)
    await _not_own(recorder, aliases, ctx, caller, item, route=f"POST /v1/access-requests/{request_id}/approve")
    db_user = _db_user(policies, item, body.db_user)
    asked = float(item["duration_s"])
    seconds = asked if body.duration is None else _seconds(body.duration, asked)  # an admin may only shorten it
    now = clock().replace(microsecond=0)
    expires = now + timedelta(seconds=seconds)
    entry = {
        "name": item["id"],
        "subjects": [f"user:{item['requester']}"],
        "target": item["target"],
        "access": item["access"],
        "db_user": db_user,
        "expires": expires.isoformat().replace("+00:00", "Z"),
    }
    note = _UNPRINTABLE.sub(" ", str(item["reason"]))[:200]
    comment = f"access request {item['id']} by {item['requester']}, approved by {caller.user} at {now.isoformat()}"
    comment += f"\nreason: {note}"
    await asyncio.to_thread(
        requests.decide, request_id, by=caller.user, state="approved", reason=body.reason, grant_name=item["id"]
    )
    try:
        audit = audit_edit(recorder, ctx, caller, access_request=item["id"])
        result = await editor.add_grant(entry, None, audit, comment)
    except BaseException:
        await asyncio.to_thread(requests.undo, request_id)
        raise
    decided = await asyncio.to_thread(requests.get, request_id)
    await _audit(recorder, ctx, caller, "approve", decided)
    response = await applied(policies, result)
    return JSONResponse(
        {"request": decided, "grant": entry, "revision": result.revision}, headers={"ETag": response.headers["etag"]}
    )


@router.post("/v1/access-requests/{request_id}/deny")
async def deny(  # noqa: PLR0917 - FastAPI dependencies
    caller: Admin,
    ctx: Context,
    recorder: RecorderDep,
    requests: AccessRequestsDep,
    aliases: AliasesDep,
    request_id: str,
    body: Annotated[DecisionBody, Depends(json_body(DecisionBody))],
) -> JSONResponse:
    """Deny a pending request, with a reason."""
    if not body.reason:
        raise InvalidRequest("a denial needs a reason")
    item = await asyncio.to_thread(requests.get, request_id)
    await _not_own(recorder, aliases, ctx, caller, item, route=f"POST /v1/access-requests/{request_id}/deny")
    await asyncio.to_thread(
        requests.decide, request_id, by=caller.user, state="denied", reason=body.reason, grant_name=None
    )
    decided = await asyncio.to_thread(requests.get, request_id)
    await _audit(recorder, ctx, caller, "deny", decided)
    return JSONResponse({"request": decided})
