"""``POST /v1/query`` and ``POST /v1/transaction``: the statement routes, the gateway's hot path.

Each resolves everything it needs with ONE async dependency (FastAPI solves
one, not four, per request), in the order of the checks: the token first (a
401 is audited whatever the body), then the body. ``DIRECT_ROUTES`` are the
same routes as plain ``request -> response`` functions, for
:mod:`gateway.http.front` to serve without FastAPI's stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.types import Scope

from gateway.audit.recorder import RequestContext
from gateway.audit.records import RouteDenied
from gateway.errors import AuditUnavailable, GatewayError, InvalidRequest
from gateway.http.bodies import Model, QueryBody, TransactionBody, json_body
from gateway.http.deps import authenticate, context_of, services_of
from gateway.http.ndjson import NDJSONResponse, streamed_media
from gateway.http.problems import JSONResponse
from gateway.http.services import Services
from gateway.identity.tokens import Identity
from gateway.pipeline import StatementRequest, Stream
from gateway.settings import LimitSettings

router = APIRouter()


@dataclass(frozen=True, slots=True)
class Call(Generic[Model]):
    """Everything a statement route needs, resolved by one dependency."""

    caller: Identity
    ctx: RequestContext
    services: Services
    body: Model


def _call(model: type[Model]) -> Callable[[Request], Awaitable[Call[Model]]]:
    parse = json_body(model)

    async def resolve(request: Request) -> Call[Model]:
        services = services_of(request)
        ctx = context_of(request)
        caller = await authenticate(request, services.pipeline, ctx)
        return Call(caller, ctx, services, await parse(request))

    return resolve


_query_call = _call(QueryBody)
_transaction_call = _call(TransactionBody)


async def query(request: Request, call: Annotated[Call[QueryBody], Depends(_query_call)]) -> Response:
    """Run one statement; with ``Accept`` NDJSON, ``text/csv`` or ``text/tab-separated-values`` the rows stream."""
    caller, ctx, pipeline, body = call.caller, call.ctx, call.services.pipeline, call.body
    _check_params(call.services.settings.limits, len(body.params))
    statement = StatementRequest(body.sql, body.params)
    media = streamed_media(request)
    if media is not None:
        opened = await pipeline.open_stream(ctx, caller, body.target, statement, body.max_rows, reason=body.reason)
        return NDJSONResponse(opened, media) if isinstance(opened, Stream) else _reply(opened)
    return _reply(await pipeline.query(ctx, caller, body.target, statement, body.max_rows, reason=body.reason))


async def transaction(call: Annotated[Call[TransactionBody], Depends(_transaction_call)]) -> JSONResponse:
    """Run several statements atomically."""
    limits = call.services.settings.limits
    if len(call.body.statements) > limits.max_statements:
        raise InvalidRequest(f"at most {limits.max_statements} statements per transaction")
    for stmt in call.body.statements:
        _check_params(limits, len(stmt.params))
    requests = [StatementRequest(s.sql, s.params) for s in call.body.statements]
    pipeline = call.services.pipeline
    return _reply(
        await pipeline.transaction(call.ctx, call.caller, call.body.target, requests, reason=call.body.reason)
    )


def _reply(body: dict[str, Any]) -> JSONResponse:
    """200 with the result, or 202 when the work is held for review (issue 16): nothing has run."""
    held = body.get("status") == "review_required"
    return JSONResponse(body, status_code=202 if held else 200, headers=_location(body) if held else None)


def _location(body: dict[str, Any]) -> dict[str, str]:
    return {"Location": f"/v1/reviews/{body['review']['id']}"}


router.add_api_route("/v1/query", query, methods=["POST"])
router.add_api_route("/v1/transaction", transaction, methods=["POST"])


async def _serve_query(request: Request) -> Response:
    return await query(request, await _query_call(request))


async def _serve_transaction(request: Request) -> Response:
    return await transaction(await _transaction_call(request))


# The routes above as plain ``request -> response`` functions: the same dependency, then the same endpoint.
DIRECT_ROUTES: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "/v1/query": _serve_query,
    "/v1/transaction": _serve_transaction,
}


async def record_refusal(app: FastAPI, scope: Scope, refusal: GatewayError) -> None:
    """Record a request the middleware refused (oversized headers or body), under the flood control of 401s."""
    services: Services | None = getattr(app.state, "services", None)
    if services is None:  # not started (or stopped): nothing can be recorded, so nothing is answered but 503
        raise AuditUnavailable("the gateway is not serving yet")
    who = services.recorder.who(context_of(Request(scope)), None)
    route = f"{scope['method']} {scope['path']}"
    await services.recorder.unverified(RouteDenied(who=who, code=refusal.code, reason=refusal.detail, route=route))


def _check_params(limits: LimitSettings, count: int) -> None:
    if count > limits.max_params:
        raise InvalidRequest(f"at most {limits.max_params} params per statement")
