"""Admin routes: read the merged policy, add/remove grants and revocations.

Every route needs the ``admin`` role. Edits need ``If-Match: <revision>``
(the ``ETag`` of ``GET /v1/policy``): missing -> 428 ``precondition_required``,
stale -> 412 ``precondition_failed``; so an admin never overwrites a change
they have not seen. Request values are checked (``gateway.policy.values``:
422 ``invalid_request``), the edit is checked to change exactly the intended
entry (``gateway.policy.editcheck``: 422 ``policy_invalid``), audited
(``policy_edit`` with a unified diff), written atomically, and the policy
reloaded before the reply. Subjects are compared and written in canonical
form (``gateway.identity.subjects``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import UNSET, PolicyEditRecord
from gateway.errors import PreconditionRequired, Unavailable
from gateway.http.bodies import json_body
from gateway.http.deps import Admin, Context, EditorDep, PoliciesDep, RecorderDep
from gateway.http.problems import JSONResponse
from gateway.identity.tokens import Identity
from gateway.policy import views
from gateway.policy.edit import Audit, EditResult, PolicyEditor
from gateway.policy.store import PolicyStore
from gateway.policy.types import Grant, Revocation

log = structlog.get_logger("gateway.http.admin")
router = APIRouter()


class TablesBody(BaseModel):
    """Table patterns of a grant."""

    model_config = ConfigDict(extra="forbid")
    allow: list[StrictStr] | None = None
    deny: list[StrictStr] | None = None


class GrantBody(BaseModel):
    """Body of ``POST /v1/grants``: a grant as in the policy files."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=128)]
    subjects: Annotated[list[StrictStr], Field(min_length=1)]
    target: Annotated[str, Field(min_length=1, max_length=128)]
    access: StrictStr
    db_user: StrictStr
    tables: TablesBody | None = None
    max_rows: StrictInt | None = None
    statement_timeout: StrictStr | StrictInt | StrictFloat | None = None
    expires: StrictStr | None = None
    functions: list[StrictStr] | None = None


class RevocationBody(BaseModel):
    """Body of ``POST /v1/revocations``."""

    model_config = ConfigDict(extra="forbid")
    subject: Annotated[str, Field(min_length=1, max_length=256)]
    target: Annotated[str, Field(min_length=1, max_length=128)] = "*"
    reason: StrictStr | None = None
    until: StrictStr | None = None


def audit_edit(
    recorder: Recorder, ctx: RequestContext, caller: Identity, *, access_request: str | None = None
) -> Audit:
    """An audit callback writing the ``policy_edit`` record (before the file is replaced)."""

    async def record(result: EditResult) -> None:
        edit = PolicyEditRecord(
            who=dataclasses.replace(recorder.who(ctx, caller), policy_revision=result.previous_revision),
            action=result.action,
            detail=result.detail,
            file=result.file,
            diff=result.diff,
            new_revision=result.revision,
            access_request=UNSET if access_request is None else access_request,
        )
        await recorder.event(edit)

    return record


async def applied(policies: PolicyStore, result: EditResult, status: int = 200) -> JSONResponse:
    """Reload now, off the event loop (this replica need not wait for its watcher), and describe the edit.

    The edit is committed and audited before this runs, so the reply says so even when the reload
    fails (the state store's read link still down after an outage): ``applied_here`` is then false
    and this replica's watcher applies the edit at its next poll. A 503 here would tell the admin
    "nothing was written" about an edit that was.
    """
    applied_here = True
    try:
        await asyncio.to_thread(policies.load)
    except Unavailable as exc:
        applied_here = False
        log.warning("policy_reload_after_edit_failed", revision=result.revision, error=exc.detail)
    body = {
        "action": result.action,
        "file": result.file,
        "revision": result.revision,
        "detail": result.detail,
        "applied_here": applied_here,
    }
    return JSONResponse(body, status_code=status, headers={"ETag": f'"{result.revision}"'})


def _if_match(request: Request) -> str:
    value = request.headers.get("if-match")
    if not value:
        raise PreconditionRequired("policy edits need If-Match: <revision> (the ETag of GET /v1/policy)")
    return value.strip().removeprefix("W/").strip('"')


IfMatch = Annotated[str, Depends(_if_match)]


@router.get("/v1/policy")
async def get_policy(caller: Admin, policies: PoliciesDep) -> JSONResponse:
    """The merged policy and its revision (also the ETag)."""
    del caller
    # A change made through another replica shows here at once, not at the next poll (read in a thread).
    # The state store down: the last good policy (an edit based on it fails closed anyway).
    with contextlib.suppress(Unavailable):
        await asyncio.to_thread(policies.poll)
    policy = policies.current
    body = {
        "revision": policy.revision,
        "roles": {role: sorted(members) for role, members in policy.roles.items()},
        "grants": [_grant(g) for g in policy.grants],
        "revocations": [_revocation(r) for r in policy.revocations],
        "last_reload_error": policies.last_error,
    }
    return JSONResponse(body, headers={"ETag": f'"{policy.revision}"'})


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyEdit:
    """What every edit needs, declared once: the editor, the caller's ``If-Match``, the audit callback, the reload."""

    editor: PolicyEditor
    policies: PolicyStore
    if_match: str | None
    audit: Audit

    async def reply(self, result: EditResult, status: int = 200) -> JSONResponse:
        """Reload and describe the edit (``applied``)."""
        return await applied(self.policies, result, status)


async def _policy_edit(
    *,
    caller: Admin,
    ctx: Context,
    recorder: RecorderDep,
    editor: EditorDep,
    policies: PoliciesDep,
    if_match: IfMatch,
) -> PolicyEdit:
    return PolicyEdit(editor, policies, if_match, audit_edit(recorder, ctx, caller))


Edit = Annotated[PolicyEdit, Depends(_policy_edit)]


@router.post("/v1/grants", status_code=201)
async def add_grant(edit: Edit, body: Annotated[GrantBody, Depends(json_body(GrantBody))]) -> JSONResponse:
    """Add a grant to the managed policy file."""
    entry = body.model_dump(exclude_none=True)
    if "tables" in entry and not entry["tables"]:
        del entry["tables"]
    return await edit.reply(await edit.editor.add_grant(entry, edit.if_match, edit.audit), 201)


@router.delete("/v1/grants/{name}")
async def delete_grant(edit: Edit, name: str) -> JSONResponse:
    """Remove a grant from whichever file holds it."""
    return await edit.reply(await edit.editor.delete_grant(name, edit.if_match, edit.audit))


@router.post("/v1/revocations", status_code=201)
async def add_revocation(
    edit: Edit, body: Annotated[RevocationBody, Depends(json_body(RevocationBody))]
) -> JSONResponse:
    """Revoke a subject's access (every target by default); in force at once."""
    entry = body.model_dump(exclude_none=True)
    return await edit.reply(await edit.editor.add_revocation(entry, edit.if_match, edit.audit), 201)


@router.delete("/v1/revocations/{subject}")
async def lift_revocation(
    edit: Edit, subject: str, target: Annotated[str | None, Query(max_length=128)] = None
) -> JSONResponse:
    """Lift a revocation (``?target=`` when the subject has several)."""
    return await edit.reply(await edit.editor.lift_revocation(subject, target, edit.if_match, edit.audit))


def _grant(grant: Grant) -> dict[str, Any]:
    # The admin view: what the caller's own view shows, plus who it is for and where it is written.
    return {
        **views.grant_view(grant),
        "subjects": list(grant.subjects),
        "functions": sorted(grant.functions),
        "file": grant.source_file,
        "line": grant.source_line,
    }


def _revocation(revocation: Revocation) -> dict[str, Any]:
    return {
        "subject": revocation.subject,
        "target": revocation.target,
        "reason": revocation.reason,
        "until": revocation.until.isoformat() if revocation.until else None,
        "file": revocation.source_file,
        "line": revocation.source_line,
    }
