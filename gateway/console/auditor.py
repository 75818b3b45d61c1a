"""The auditor's pages: the log with filters and paging, one record in its chain, export, verify, charts.

Every page reads through the app's reader store (as ``/v1/audit`` does) and
writes its ``audit_read`` record first (via the console); the log page calls
``GET /v1/audit``'s own route function, so filters, paging and their checks
are the API's. A record's page shows every field and where it sits in the
hash chain: its hash recomputed, the previous record's hash it must link to,
and links to both neighbours. Export streams the current filter as CSV
(formula-safe) or JSON lines; verification runs in the background
(:mod:`gateway.console.jobs`) and its page refreshes itself until done.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from gateway.audit import export
from gateway.audit.anchor import open_anchor
from gateway.audit.checkpoints import load_public_keys
from gateway.audit.query import MAX_LIMIT, AuditFilter
from gateway.audit.records import EVENTS, AuditReadRecord
from gateway.audit.schema import LEGACY_CHAIN
from gateway.audit.store import GENESIS_HASH, AuditStore, Entry, MultiChainStore, chain_hash, chained_body, entry_total
from gateway.console import charts
from gateway.console.deps import AuditorViewer, Viewer
from gateway.console.engineer import body_of
from gateway.console.web import ConsoleRoute, console_of, render
from gateway.errors import InvalidRequest, NotFound
from gateway.http import audit as auditapi
from gateway.http.audit import read_store
from gateway.http.deps import services_of

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
PAGE = 50
CHART_WINDOW = 20_000  # newest entries the charts count
EXPORT_BATCH = 1000
FILTERS = ("user", "target", "decision", "code", "event", "request_id", "since", "until", "q")
Text = Annotated[str, Query(max_length=255)]


def _time(text: str, name: str) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"{name} must be a date and time (YYYY-MM-DDTHH:MM, UTC)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _filters(request: Request) -> tuple[dict[str, str], AuditFilter]:
    """The filter form's values (as typed) and the filter they make."""
    values = {name: request.query_params.get(name, "").strip()[:255] for name in FILTERS}
    text = {name: values[name] or None for name in FILTERS if name not in ("since", "until")}
    return values, AuditFilter(**text, since=_time(values["since"], "since"), until=_time(values["until"], "until"))


async def _record(request: Request, viewer: Viewer, what: str, details: dict[str, Any]) -> None:
    recorder = services_of(request).recorder
    await recorder.event(AuditReadRecord(who=recorder.who(viewer.ctx, viewer.identity), reason=what, filters=details))


@router.get("/console/audit")
async def log_page(
    request: Request, viewer: AuditorViewer, cursor: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    """The audit log, newest first, filtered, one page at a time."""
    services = services_of(request)
    values, f = _filters(request)
    reply = await auditapi.audit_log(
        caller=viewer.identity,
        ctx=viewer.ctx,
        recorder=services.recorder,
        store=services.audit_reader,
        user=f.user,
        target=f.target,
        decision=f.decision,
        code=f.code,
        event=f.event,
        request_id=f.request_id,
        since=f.since,
        until=f.until,
        q=f.q,
        cursor=cursor,
        limit=PAGE,
    )
    page = body_of(reply)
    query = {k: v for k, v in values.items() if v}
    return await render(
        request,
        "audit.html",
        entries=page["entries"],
        next_cursor=page["next_cursor"],
        filters=values,
        query=query,
        events=EVENTS,
    )


def _neighbours(store: AuditStore, seq: int, chain: str | None) -> list[Entry]:
    if isinstance(store, MultiChainStore):  # the shared store: the record's own chain (before replicas: _legacy)
        rows = store.iter_chain(chain or LEGACY_CHAIN, batch=3, after_seq=max(seq - 2, 0))
        return [entry for entry, _ in itertools.islice(rows, 3)]
    return list(itertools.islice(store.iter_entries(after_seq=max(seq - 2, 0), batch=3), 3))


@router.get("/console/audit/record/{seq}")
async def record_page(
    request: Request,
    viewer: AuditorViewer,
    seq: int,
    chain: Annotated[str | None, Query(pattern=auditapi.CHAIN_PATTERN)] = None,
) -> Response:
    """One record in its chain: every field, its hash checked, its link to the previous record."""
    if not 0 < seq < 2**63:
        raise NotFound("no such record")
    await _record(request, viewer, "console: audit record", {"seq": seq, "chain": chain})
    around: list[Entry] = await read_store(_neighbours, services_of(request).audit_reader, seq, chain)
    entry = next((e for e in around if e.get("seq") == seq), None)
    if entry is None:
        raise NotFound(f"no audit record with seq {seq}")
    previous = next((e for e in around if e.get("seq") == seq - 1), None)
    following = next((e for e in around if e.get("seq") == seq + 1), None)
    expected_prev = GENESIS_HASH if seq == 1 else previous.get("hash") if previous else None
    place = {
        "hash_ok": chain_hash(str(entry.get("prev_hash")), chained_body(entry)) == entry.get("hash"),
        "links": expected_prev is not None and expected_prev == entry.get("prev_hash"),
        "previous": previous,
        "following": following,
    }
    fields = {
        k: v if isinstance(v, str) or v is None else orjson.dumps(v, option=orjson.OPT_INDENT_2).decode()
        for k, v in entry.items()
    }
    return await render(request, "record.html", entry=entry, fields=fields, chain=place)


def _batches(store: AuditStore, filters: AuditFilter) -> Iterator[list[Entry]]:
    entries = export.entries(store, filters)
    while batch := list(itertools.islice(entries, EXPORT_BATCH)):
        yield batch


async def _export_body(store: AuditStore, filters: AuditFilter, fmt: str) -> AsyncIterator[bytes]:
    batches = _batches(store, filters)
    if fmt == "csv":
        yield (",".join(export.CSV_COLUMNS) + "\r\n").encode()
    while True:
        batch = await read_store(next, batches, None)  # store reads off the event loop, one batch at a time
        if batch is None:
            return
        if fmt == "csv":
            out = io.StringIO()
            csv.writer(out).writerows(export.csv_row(e) for e in batch)
            yield out.getvalue().encode()
        else:
            yield b"".join(orjson.dumps(e) + b"\n" for e in batch)


@router.get("/console/audit/export")
async def export_log(request: Request, viewer: AuditorViewer, format: Text = "csv") -> Response:  # noqa: A002 - the URL's name
    """The entries matching the current filter as a CSV or JSON-lines download (oldest first)."""
    if format not in export.FORMATS:
        raise InvalidRequest("format must be csv or jsonl")
    _, filters = _filters(request)
    await _record(request, viewer, "console: audit export", {**filters.describe(), "format": format})
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    stamp = services_of(request).clock().strftime("%Y%m%dT%H%M%SZ")
    headers = {"Content-Disposition": f'attachment; filename="audit-{stamp}.{format}"'}
    return StreamingResponse(
        _export_body(services_of(request).audit_reader, filters, format), media_type=media, headers=headers
    )


@router.get("/console/audit/verify")
async def verify_page(
    request: Request, viewer: AuditorViewer, job: Annotated[str | None, Query(max_length=32)] = None
) -> Response:
    """The verification page: start one, or follow one (it refreshes itself while running)."""
    del viewer
    jobs = console_of(request).jobs
    shown = jobs.get(job) if job else jobs.running()
    return await render(request, "verify.html", job=shown)


@router.post("/console/audit/verify")
async def verify_start(request: Request, viewer: AuditorViewer) -> Response:
    """Start verifying the whole chain in the background (recorded first), then follow it."""
    services = services_of(request)
    await _record(request, viewer, "audit verify", {"head_seq": None, "via": "console"})
    total = await read_store(entry_total, services.audit_reader) or 0
    job = console_of(request).jobs.start(
        services.audit_reader,
        user=viewer.user,
        started=services.clock().isoformat(timespec="seconds"),
        total=total,
        keys=load_public_keys(services.settings.audit.checkpoints),
        anchor=open_anchor(services.settings.audit.checkpoints.anchor),
    )
    return RedirectResponse(f"/console/audit/verify?job={job.id}", status_code=303)


def _scan(store: AuditStore, filters: AuditFilter) -> list[Entry]:
    found: list[Entry] = []
    cursor: str | None = None
    while len(found) < CHART_WINDOW:
        page = store.query(filters, cursor, MAX_LIMIT)
        found.extend(page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return found[:CHART_WINDOW]


@router.get("/console/audit/charts")
async def charts_page(request: Request, viewer: AuditorViewer) -> Response:
    """Decisions over time, denials by user and by target, busiest targets: the newest entries of the filter."""
    values, filters = _filters(request)
    await _record(request, viewer, "console: audit charts", filters.describe())
    entries = await read_store(_scan, services_of(request).audit_reader, filters)
    summary, hourly = charts.summarise(entries)
    return await render(
        request,
        "charts.html",
        summary=summary,
        hourly=hourly,
        window=CHART_WINDOW,
        filters=values,
        events=EVENTS,
        timeline=charts.timeline(summary),
        denied_users=charts.ranking(summary.denied_users),
        denied_targets=charts.ranking(summary.denied_targets),
        targets=charts.ranking(summary.targets),
    )
