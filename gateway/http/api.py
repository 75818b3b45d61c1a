"""HTTP routes and schemas; the only place errors become problem+json responses."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from gateway.errors import AuditUnavailable, Forbidden, GatewayError, InvalidRequest, Unauthenticated, Unavailable
from gateway.http import readiness
from gateway.http.ndjson import NDJSONResponse, wants_ndjson
from gateway.identity.tokens import Identity
from gateway.pipeline import Pipeline, RequestContext, StatementRequest

log = structlog.get_logger("gateway.http.api")
PROBLEM = "application/problem+json"
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # MariaDB's BIGINT and BIGINT UNSIGNED together
# 19 digits in a row: the shortest integer that may be beyond 64 bits (orjson reads those as floats).
_LONG_NUMBER = re.compile(rb"\d{19}")


def _bindable(value: object) -> object:
    """Refuse what would not be bound as sent: integers beyond 64 bits, NaN and infinities."""
    if type(value) is int and not INT_MIN <= value <= INT_MAX:
        raise ValueError("integer outside the 64-bit range")  # else it would be bound as a rounded double
    if type(value) is float and not math.isfinite(value):
        raise ValueError("NaN and infinite numbers cannot be bound")
    return value


Param = Annotated[StrictBool | StrictInt | StrictFloat | StrictStr | None, BeforeValidator(_bindable)]


Model = TypeVar("Model", bound=BaseModel)


class JSONResponse(Response):
    """orjson-encoded JSON (about 10x faster than the stdlib for row data)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:  # noqa: ANN401
        """Encode with orjson."""
        return orjson.dumps(content)


class StatementBody(BaseModel):
    """One statement with its parameters."""

    model_config = ConfigDict(extra="forbid")
    sql: Annotated[str, Field(min_length=1)]
    params: list[Param] = Field(default_factory=list)


class QueryBody(StatementBody):
    """Body of ``POST /v1/query``."""

    target: Annotated[str, Field(min_length=1, max_length=128)]
    max_rows: Annotated[int | None, Field(ge=1)] = None


class TransactionBody(BaseModel):
    """Body of ``POST /v1/transaction``."""

    model_config = ConfigDict(extra="forbid")
    target: Annotated[str, Field(min_length=1, max_length=128)]
    statements: Annotated[list[StatementBody], Field(min_length=1)]


def problem(request_id: str, exc: GatewayError, client_request_id: str | None = None) -> Response:
    """Render an error as RFC 9457 problem+json with the gateway's code (and the caller's own id, if sane)."""
    body = {
        "type": f"https://db-gateway.dev/problems/{exc.code}",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "code": exc.code,
        "request_id": request_id,
    }
    if client_request_id is not None:
        body["client_request_id"] = client_request_id
    headers = {}
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return Response(orjson.dumps(body), status_code=exc.status, media_type=PROBLEM, headers=headers)


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def _client_request_id(request: Request) -> str | None:
    offered = request.scope.get("state", {}).get("client_request_id")
    return str(offered) if offered is not None else None


def _problem(request: Request, exc: GatewayError) -> Response:
    return problem(_request_id(request), exc, _client_request_id(request))


def _pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline  # type: ignore[no-any-return]


def _context(request: Request) -> RequestContext:
    client = request.client.host if request.client else None
    return RequestContext(
        _request_id(request), client, request.headers.get("user-agent"), client_request_id=_client_request_id(request)
    )


async def _authenticate(request: Request, pipeline: Pipeline, ctx: RequestContext) -> Identity:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    return await pipeline.authenticate(bearer, ctx)


async def _identity(request: Request) -> Identity:
    return await _authenticate(request, _pipeline(request), _context(request))


Caller = Annotated[Identity, Depends(_identity)]


def require_role(role: str) -> Callable[[Request, Identity], Awaitable[Identity]]:
    """A dependency that lets only callers holding ``role`` (admin, auditor) through."""

    async def check(request: Request, caller: Caller) -> Identity:
        pipeline = _pipeline(request)
        if role not in pipeline.roles(caller):
            # A refused admin or auditor call is a decision too: recorded before the 403.
            await pipeline.deny_role(_context(request), caller, role, f"{request.method} {request.url.path}")
            raise Forbidden(f"the {role} role is required")
        return caller

    return check


Admin = Annotated[Identity, Depends(require_role("admin"))]
Auditor = Annotated[Identity, Depends(require_role("auditor"))]


# FastAPI runs a plain ``def`` dependency in a worker thread: a thread hop per
# request for a dict lookup. These async twins run inline on the event loop.
async def _context_dep(request: Request) -> RequestContext:
    return _context(request)


async def _pipeline_dep(request: Request) -> Pipeline:
    return _pipeline(request)


Context = Annotated[RequestContext, Depends(_context_dep)]
PipelineDep = Annotated[Pipeline, Depends(_pipeline_dep)]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request, pipeline: PipelineDep) -> Response:
    """Ready (200) or not (503) for anyone; the checks behind it only for a caller with the admin role.

    The details name files, grants, hosts and accounts (SECURITY rule 31), so
    a probe without a token learns only the status. A token, if sent, is
    validated like on every route (an invalid one is a 401); a valid one
    without the admin role gets the status alone.
    """
    checks = await readiness.check(pipeline.policies, pipeline.key_sources, pipeline.pools, pipeline.audit)
    ready = readiness.is_ready(checks)
    body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
    if "authorization" in request.headers:
        caller = await _authenticate(request, pipeline, _context(request))
        if "admin" in pipeline.roles(caller):
            body.update(ready=ready, checks=checks)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/v1/me")
async def me(caller: Caller, pipeline: PipelineDep) -> JSONResponse:
    """Who the caller is, their roles and effective grants."""
    return JSONResponse(pipeline.me(caller))


@router.get("/v1/targets")
async def targets(caller: Caller, pipeline: PipelineDep) -> JSONResponse:
    """Targets the caller can use, with the access level."""
    return JSONResponse({"targets": pipeline.targets(caller)})


def _errors_text(errors: Sequence[Any]) -> str:
    parts = []
    for err in list(errors)[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid body"


def _json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """Parse the body as JSON whatever its content type (curl -d sends a form type)."""

    async def parse(request: Request) -> Model:
        raw = await request.body()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the body is not valid JSON") from None
        if _LONG_NUMBER.search(raw) or raw.count(b":") > _members(data):
            data = _exact_numbers(raw)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(_errors_text(exc.errors())) from None

    return parse


def _refuse_constant(name: str) -> object:
    raise InvalidRequest(f"{name} is not a JSON number")


def _members(value: object) -> int:
    """How many object members ``value`` holds, at every depth."""
    if isinstance(value, dict):
        return len(value) + sum(_members(v) for v in value.values() if isinstance(v, dict | list))
    if isinstance(value, list):
        return sum(_members(v) for v in value if isinstance(v, dict | list))
    return 0


def _unique_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # RFC 8259 leaves the meaning open: a proxy or log reading the first of two "sql" members
        # would see another statement than the one the gateway checks and runs.
        raise InvalidRequest("a JSON object in the body has the same member name twice")
    return result


def _exact_numbers(raw: bytes) -> object:
    """Parse again, keeping integers exact and refusing a member name given twice.

    orjson reads an integer beyond 64 bits as a float, which would pass as one,
    and keeps the last of two members of one name. The second parse runs only
    when one could matter: 19 or more digits in a row, or more colons in the
    body than members parsed (every member takes one colon outside strings,
    so without spare colons no member can have been given twice).
    """
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_unique_members)
    except ValueError:  # more digits than int() takes (sys.int_info.default_max_str_digits)
        raise InvalidRequest("a number in the body has too many digits") from None


@dataclass(frozen=True, slots=True)
class Call(Generic[Model]):
    """Everything a statement route needs, resolved by one dependency."""

    caller: Identity
    ctx: RequestContext
    pipeline: Pipeline
    body: Model


def _call(model: type[Model]) -> Callable[[Request], Awaitable[Call[Model]]]:
    """One async dependency for the hot routes: FastAPI solves one, not four, per request.

    The order is that of the four it replaces: the token first (a 401 is
    audited whatever the body), then the body.
    """
    parse = _json_body(model)

    async def resolve(request: Request) -> Call[Model]:
        pipeline = _pipeline(request)
        ctx = _context(request)
        caller = await _authenticate(request, pipeline, ctx)
        return Call(caller, ctx, pipeline, await parse(request))

    return resolve


_query_call = _call(QueryBody)
_transaction_call = _call(TransactionBody)


async def query(request: Request, call: Annotated[Call[QueryBody], Depends(_query_call)]) -> Response:
    """Run one statement; with ``Accept: application/x-ndjson`` the rows stream."""
    caller, ctx, pipeline, body = call.caller, call.ctx, call.pipeline, call.body
    _check_params(pipeline, len(body.params))
    if wants_ndjson(request):
        stream = await pipeline.query_stream(
            ctx, caller, body.target, StatementRequest(body.sql, body.params), body.max_rows
        )
        return NDJSONResponse(stream)
    reply = await pipeline.query(ctx, caller, body.target, StatementRequest(body.sql, body.params), body.max_rows)
    return JSONResponse(reply)


async def transaction(call: Annotated[Call[TransactionBody], Depends(_transaction_call)]) -> JSONResponse:
    """Run several statements atomically."""
    caller, ctx, pipeline, body = call.caller, call.ctx, call.pipeline, call.body
    limits = pipeline.settings.limits
    if len(body.statements) > limits.max_statements:
        raise InvalidRequest(f"at most {limits.max_statements} statements per transaction")
    for stmt in body.statements:
        _check_params(pipeline, len(stmt.params))
    requests = [StatementRequest(s.sql, s.params) for s in body.statements]
    return JSONResponse(await pipeline.transaction(ctx, caller, body.target, requests))


router.add_api_route("/v1/query", query, methods=["POST"])
router.add_api_route("/v1/transaction", transaction, methods=["POST"])


async def _serve_query(request: Request) -> Response:
    return await query(request, await _query_call(request))


async def _serve_transaction(request: Request) -> Response:
    return await transaction(await _transaction_call(request))


# The hot routes as plain ``request -> response`` functions, for gateway.http.front to serve
# without FastAPI's stack: the same dependency, then the same endpoint, as declared above.
DIRECT_ROUTES: dict[str, Callable[[Request], Awaitable[Response]]] = {
    "/v1/query": _serve_query,
    "/v1/transaction": _serve_transaction,
}


async def record_refusal(app: FastAPI, scope: Scope, refusal: GatewayError) -> None:
    """Durably record a request the middleware refused (oversized headers or body); see ``Pipeline.record_refusal``."""
    pipeline: Pipeline | None = getattr(app.state, "pipeline", None)
    if pipeline is None:  # not started (or stopped): nothing can be recorded, so nothing is answered but 503
        raise AuditUnavailable("the gateway is not serving yet")
    await pipeline.record_refusal(_context(Request(scope)), refusal, f"{scope['method']} {scope['path']}")


def _check_params(pipeline: Pipeline, count: int) -> None:
    if count > pipeline.settings.limits.max_params:
        raise InvalidRequest(f"at most {pipeline.settings.limits.max_params} params per statement")


def install(app: FastAPI) -> None:
    """Add the routes and the error handlers to ``app``."""
    app.include_router(router)

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> Response:
        return _problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _problem(request, InvalidRequest(_errors_text(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = GatewayError(str(exc.detail))
        err.status, err.code, err.title = (
            exc.status_code,
            _HTTP_CODES.get(exc.status_code, "http_error"),
            "HTTP error",
        )
        response = _problem(request, err)
        response.headers.update(exc.headers or {})  # a 405 lists the allowed methods in Allow (RFC 9110)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return internal_error(_request_id(request), exc, _client_request_id(request))


def internal_error(request_id: str, exc: Exception, client_request_id: str | None = None) -> Response:
    """Log an unexpected error with its traceback; answer a generic 500 problem naming the request id."""
    log.error("unhandled_error", request_id=request_id, error=type(exc).__name__, exc_info=exc)
    return problem(request_id, GatewayError("an internal error occurred; quote the request id"), client_request_id)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}
