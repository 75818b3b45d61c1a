"""The engineer's SQL editor: run a statement, see its rows (streamed), download them as CSV, find past ones.

``POST /console/query`` and ``POST /console/query.csv`` run the statement
through ``Pipeline.open_stream`` with the console's audit context, exactly as
``POST /v1/query`` streams it: the same analysis, decision, decision record
before it runs and outcome record after, row caps and revocation. The page
shows at most ``console.page_rows`` rows (and says when the result was cut);
the CSV download streams up to the API's stream cap, every cell formula-safe.
``/console/history`` lists the person's own recent statements from the audit
log (that read is recorded like an auditor's), each one a link that puts it
back in the editor.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.audit.query import AuditFilter
from gateway.audit.records import AuditReadRecord
from gateway.audit.store import statement_text
from gateway.console.deps import Viewer, ViewerDep
from gateway.console.results import ClosingStream, StreamResult, csv_chunks
from gateway.console.web import ConsoleRoute, common, console_of, read_form, render
from gateway.errors import GatewayError, InvalidRequest
from gateway.http.audit import read_store
from gateway.http.deps import services_of
from gateway.pipeline import StatementRequest, Stream
from gateway.policy import views

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
HISTORY_PAGE = 50
MAX_PARAM_LINES = 1000


def parse_params(text: str) -> list[Any]:
    """One value per line: a line that is JSON (``42``, ``null``, ``"x"``) is that value, any other line text."""
    if not text.strip():
        return []
    values: list[Any] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[:MAX_PARAM_LINES]:
        try:
            values.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            values.append(line)
    return values


def _targets(request: Request, viewer: Viewer) -> list[dict[str, Any]]:
    services = services_of(request)
    return views.targets(viewer.identity, services.policies.current, services.clock(), services.settings.targets)


async def _read_own(request: Request, viewer: Viewer, filters: AuditFilter, cursor: str | None, limit: int) -> Any:  # noqa: ANN401 - an AuditPage
    """A page of the viewer's own audit records; the read itself is recorded first."""
    services = services_of(request)
    recorder = services.recorder
    record = AuditReadRecord(
        who=recorder.who(viewer.ctx, viewer.identity), reason="console: own history", filters=filters.describe()
    )
    await recorder.event(record)
    return await read_store(services.audit_reader.query, filters, cursor, limit)


@router.get("/console/query")
async def editor(
    request: Request,
    viewer: ViewerDep,
    target: Annotated[str | None, Query(max_length=128)] = None,
    rerun: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The SQL editor, empty or holding a statement of the viewer's history."""
    sql = ""
    if rerun:
        page = await _read_own(
            request, viewer, AuditFilter(user=viewer.user, request_id=rerun, event="decision"), None, 1
        )
        if page.entries:
            sql = statement_text(page.entries[0]) or ""
            target = target or page.entries[0].get("target")
    form = {"target": target or "", "sql": sql, "params": "", "max_rows": ""}
    return await _page(request, viewer, form)


class HeldForReview(GatewayError):
    """Not an error: the grant holds this statement for review; the page says where the review is."""

    code = "review_required"
    status = 202
    title = "Held for review"

    def __init__(self, reply: dict[str, Any]) -> None:
        review = reply.get("review") or {}
        counts = [s.get("rows_affected") for s in (reply.get("dry_run") or {}).get("statements", [])]
        super().__init__(
            f"review {review.get('id')} was requested: nothing ran. Dry run (rolled back): rows affected {counts}. "
            f"A reviewer approves it at /console/reviews; then execute it there."
        )
        self.review_id = str(review.get("id"))


async def _page(request: Request, viewer: Viewer, form: dict[str, str], error: GatewayError | None = None) -> Response:
    """The editor with the form's values and, after a refusal, why (with the refusal's status)."""
    return await render(
        request,
        "query.html",
        status=error.status if error else 200,
        targets=_targets(request, viewer),
        form=form,
        result=None,
        error=error,
        result_cap=console_of(request).settings.console.page_rows,
    )


async def _open(
    request: Request, viewer: Viewer, *, page: bool
) -> tuple[StreamResult | None, dict[str, str], GatewayError | None]:
    """Run the form's statement as a stream; a refusal before the first row is returned, not raised."""
    form = await read_form(request)
    values = {
        "target": form.get("target"),
        "sql": form.raw("sql"),
        "params": form.raw("params"),
        "max_rows": form.get("max_rows"),
    }
    services = services_of(request)
    try:
        params = parse_params(values["params"])
        if len(params) > services.settings.limits.max_params:
            raise InvalidRequest(f"at most {services.settings.limits.max_params} params per statement")
        if not values["target"] or not values["sql"].strip():
            raise InvalidRequest("choose a target and write a statement")
        wanted = int(values["max_rows"]) if values["max_rows"] else None
        if wanted is not None and wanted < 1:
            raise InvalidRequest("max rows must be a positive number")
        if page:
            cap = console_of(request).settings.console.page_rows
            wanted = min(wanted or cap, cap)
        stream = await services.pipeline.open_stream(
            viewer.ctx, viewer.identity, values["target"], StatementRequest(values["sql"], params), wanted
        )
    except ValueError:
        return None, values, InvalidRequest("max rows must be a number")
    except GatewayError as exc:
        return None, values, exc
    if not isinstance(stream, Stream):  # held for review (issue 16): nothing ran
        return None, values, HeldForReview(stream)
    result = StreamResult(stream)
    try:
        await result.open()
    except BaseException:
        result.close()
        raise
    return result, values, None


@router.post("/console/query")
async def run(request: Request, viewer: ViewerDep) -> Response:
    """Run the statement; the page streams its rows as they come (at most ``console.page_rows``)."""
    result, values, error = await _open(request, viewer, page=True)
    if result is None:
        return await _page(request, viewer, values, error)
    console = console_of(request)
    template = console.templates.get_template("query.html")
    body = template.generate_async(
        **common(request),
        targets=_targets(request, viewer),
        form=values,
        result=result,
        error=None,
        result_cap=console.settings.console.page_rows,
    )
    return ClosingStream(body, result, media_type="text/html; charset=utf-8")


@router.post("/console/query.csv")
async def download(request: Request, viewer: ViewerDep) -> Response:
    """Run the statement and stream its rows as a CSV download (formula-safe cells)."""
    result, values, error = await _open(request, viewer, page=False)
    if result is None:
        return await _page(request, viewer, values, error)
    name = f"result-{result.header.get('request_id', 'query')}.csv"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return ClosingStream(csv_chunks(result), result, media_type="text/csv; charset=utf-8", headers=headers)


@router.get("/console/history")
async def history(
    request: Request, viewer: ViewerDep, cursor: Annotated[str | None, Query(max_length=64)] = None
) -> Response:
    """The viewer's own recent statements (decision records), newest first, each re-runnable."""
    page = await _read_own(request, viewer, AuditFilter(user=viewer.user, event="decision"), cursor, HISTORY_PAGE)
    entries = [e for e in page.entries if e.get("statement") is not None]
    return await render(
        request, "history.html", entries=entries, next_cursor=page.next_cursor, statement_text=statement_text
    )
