"""The admin's policy pages: the merged policy by target and by subject, and edits with the ETag rules.

``/console/admin/policy`` re-reads the policy files first (as ``GET
/v1/policy`` does) and shows every grant and revocation with the file and
line it comes from and how long it has left. Each edit form carries the
revision the page showed; the edit goes through the API's own route function
with that revision as ``If-Match``, so the rules are the API's: a policy
changed meanwhile is refused (412) and nothing is written, and the page says
so and shows the current policy. Every edit is a ``policy_edit`` record with
its diff, marked as from the console. ``/console/admin/history`` lists those
records with their diffs.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from gateway.audit.query import AuditFilter
from gateway.audit.records import AuditReadRecord
from gateway.console.deps import AdminViewer, Viewer
from gateway.console.engineer import body_of
from gateway.console.web import ConsoleRoute, Form, invalid_form, read_form, render
from gateway.errors import AuditUnavailable, GatewayError, InvalidRequest, PreconditionFailed
from gateway.http import admin as adminapi
from gateway.http.deps import services_of

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
HISTORY_PAGE = 20
STALE = (
    "The policy changed since this page was loaded (another admin's edit, or a change to the files). "
    "Nothing was written. The page now shows the current policy: check it and try again."
)
_SPLIT = re.compile(r"[\s,]+")


def _list(text: str) -> list[str] | None:
    items = [item for item in _SPLIT.split(text) if item]
    return items or None


def _moment(text: str) -> str | None:
    """A ``datetime-local`` value (``YYYY-MM-DDTHH:MM``, UTC) as the API's ISO 8601 text."""
    if not text:
        return None
    if text.endswith("Z") or "+" in text[10:]:
        return text
    return f"{text}:00Z" if len(text) == len("YYYY-MM-DDTHH:MM") else f"{text}Z"


async def _policy_page(request: Request, status: int = 200, error: str | None = None, **form: Any) -> Response:  # noqa: ANN401 - form values
    services = services_of(request)
    await asyncio.to_thread(services.policies.poll)  # another replica's edit shows at once
    policy = services.policies.current
    by_target: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"grants": [], "revocations": []})
    by_subject: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"grants": [], "revocations": []})
    for name in services.settings.targets:
        by_target[name]
    for grant in policy.grants:
        by_target[grant.target]["grants"].append(grant)
        for subject in grant.subjects:
            by_subject[subject]["grants"].append(grant)
    for revocation in policy.revocations:
        by_target[revocation.target]["revocations"].append(revocation)
        by_subject[revocation.subject]["revocations"].append(revocation)
    view = "subject" if request.query_params.get("view") == "subject" else "target"
    return await render(
        request,
        "policy.html",
        status=status,
        policy=policy,
        by_target=dict(sorted(by_target.items())),
        by_subject=dict(sorted(by_subject.items())),
        view=view,
        error=error,
        form=form,
        last_error=services.policies.last_error,
        targets=sorted(services.settings.targets),
    )


@router.get("/console/admin/policy")
async def policy_page(request: Request, viewer: AdminViewer) -> Response:
    """The merged policy, by target (default) or by subject (``?view=subject``)."""
    del viewer
    return await _policy_page(request)


async def _edit(request: Request, viewer: Viewer, form: Form, action: str) -> Response:
    """Run one edit through the admin API's route function; a refusal re-renders the page saying why."""
    services = services_of(request)
    revision = form.get("revision")
    audit = adminapi.audit_edit(services.recorder, viewer.ctx, viewer.identity)
    edit = adminapi.PolicyEdit(services.editor, services.policies, revision, audit)
    try:
        if not revision:
            raise InvalidRequest("the form carries no policy revision: reload the page")
        if action == "add-grant":
            tables = {"allow": _list(form.get("tables_allow")), "deny": _list(form.get("tables_deny"))}
            body = adminapi.GrantBody(
                name=form.get("name"),
                subjects=_list(form.get("subjects")) or [],
                target=form.get("target"),
                access=form.get("access"),
                db_user=form.get("db_user"),
                tables=adminapi.TablesBody(**tables) if any(tables.values()) else None,
                max_rows=int(form.get("max_rows")) if form.get("max_rows") else None,
                statement_timeout=form.get("statement_timeout") or None,
                expires=_moment(form.get("expires")),
            )
            reply = await adminapi.add_grant(edit, body)
        elif action == "remove-grant":
            reply = await adminapi.delete_grant(edit, form.get("name"))
        elif action == "revoke":
            revoke = adminapi.RevocationBody(
                subject=form.get("subject"),
                target=form.get("target") or "*",
                reason=form.get("reason") or None,
                until=_moment(form.get("until")),
            )
            reply = await adminapi.add_revocation(edit, revoke)
        else:
            reply = await adminapi.lift_revocation(edit, form.get("subject"), form.get("target") or None)
    except PreconditionFailed:
        return await _policy_page(request, status=412, error=STALE)
    except ValidationError as exc:
        return await _policy_page(request, status=422, error=invalid_form(exc).detail, **form.values)
    except ValueError:
        return await _policy_page(request, status=422, error="max rows must be a whole number", **form.values)
    except GatewayError as exc:
        return await _policy_page(request, status=exc.status, error=f"{exc.detail} ({exc.code})", **form.values)
    done = body_of(reply)
    viewer.session.notices.append(f"Done: {done['action']} in {done['file']} (revision {done['revision'][:12]}).")
    return RedirectResponse("/console/admin/policy", status_code=303)


@router.post("/console/admin/grants")
async def add_grant(request: Request, viewer: AdminViewer) -> Response:
    """Add a grant (to the managed file)."""
    return await _edit(request, viewer, await read_form(request), "add-grant")


@router.post("/console/admin/grants/remove")
async def remove_grant(request: Request, viewer: AdminViewer) -> Response:
    """Remove a grant from whichever file holds it."""
    return await _edit(request, viewer, await read_form(request), "remove-grant")


@router.post("/console/admin/revocations")
async def revoke(request: Request, viewer: AdminViewer) -> Response:
    """Revoke a subject's access (in force at once; running statements are cancelled)."""
    return await _edit(request, viewer, await read_form(request), "revoke")


@router.post("/console/admin/revocations/lift")
async def lift(request: Request, viewer: AdminViewer) -> Response:
    """Lift a revocation."""
    return await _edit(request, viewer, await read_form(request), "lift")


def diff_lines(diff: str) -> list[tuple[str, str]]:
    """A unified diff as (kind, line) pairs: ``add``, ``del``, ``hunk``, ``file`` or ``ctx``."""
    out: list[tuple[str, str]] = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            out.append(("file", line))
        elif line.startswith("@@"):
            out.append(("hunk", line))
        elif line.startswith("+"):
            out.append(("add", line))
        elif line.startswith("-"):
            out.append(("del", line))
        else:
            out.append(("ctx", line))
    return out


@router.get("/console/admin/history")
async def history(
    request: Request, viewer: AdminViewer, cursor: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    """Policy edits, newest first, each with who made it, from where, and its diff."""
    services = services_of(request)
    filters = AuditFilter(event="policy_edit")
    record = AuditReadRecord(
        who=services.recorder.who(viewer.ctx, viewer.identity),
        reason="console: policy history",
        filters=filters.describe(),
    )
    await services.recorder.event(record)
    try:
        page = await asyncio.to_thread(services.audit_reader.query, filters, cursor, HISTORY_PAGE)
    except Exception as exc:  # any driver error means the log cannot be read now
        raise AuditUnavailable("the audit store could not be read") from exc
    return await render(
        request, "policy_history.html", entries=page.entries, next_cursor=page.next_cursor, diff_lines=diff_lines
    )
