"""Correctness of the performance work (docs/benchmarks.md): each shortcut keeps its behaviour."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, NoReturn

import fastapi.routing
import httpx
import pytest
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs
from test_policy import grant, policy, revoke, stmt, who

from gateway import log as gateway_log
from gateway.audit.format import format_time
from gateway.errors import Unauthenticated
from gateway.http import statements, status
from gateway.http.app import create_app
from gateway.http.front import Endpoint, GatewayApp, StatementEndpoints
from gateway.http.metrics import Metrics
from gateway.http.middleware import GatewayMiddleware
from gateway.log import dumps, info_batch, scrub_secrets
from gateway.policy.decide import active_revocations, decide, effective_grants
from gateway.policy.types import Access
from gateway.requestids import RequestIds
from gateway.revocation.inflight import still_allowed
from gateway.settings import Settings
from gateway.sql.statements import Kind

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any] | None]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def _app_under_test(tmp_path: Path) -> GatewayApp:
    """The production app (``create_app``) on dev-mode settings; nothing connects until its lifespan."""
    settings = Settings.model_validate(
        {
            "dev_mode": True,
            "targets": {"shop": {"host": "127.0.0.1", "database": "shop"}},
            "dev": {"key_file": tmp_path / "dev-key.pem"},
            "audit": {"path": tmp_path / "audit.db"},
        }
    )
    app = create_app(settings)
    assert isinstance(app, GatewayApp)
    return app


def _served_directly(app: GatewayApp) -> dict[str, Endpoint]:
    """The paths the app's front serves itself (without FastAPI's stack), and their endpoints."""
    front: object = app.front
    while not isinstance(front, StatementEndpoints):  # the middleware in front of it
        assert isinstance(front, GatewayMiddleware), f"unexpected front {front!r}"
        front = front.app
    return {path: route.endpoint for path, route in front._routes.items()}


def test_statement_routes_are_served_directly_by_async_endpoints(tmp_path: Path) -> None:
    """What production serves for /v1/query and /v1/transaction: the front's own async endpoints, no dependencies.

    The same paths are declared in FastAPI (for the OpenAPI document and for
    dependency overrides in tests), but the front answers them itself, so
    their FastAPI dependency graph is not what serves requests.
    """
    app = _app_under_test(tmp_path)
    served = _served_directly(app)
    declared = {r.path for r in statements.router.routes if isinstance(r, APIRoute) and "POST" in (r.methods or set())}
    assert set(served) == {"/v1/query", "/v1/transaction"}
    assert set(served) <= declared
    sync = [path for path, endpoint in served.items() if not inspect.iscoroutinefunction(endpoint)]
    assert sync == []


def test_request_path_dependencies_are_async(tmp_path: Path) -> None:
    """Every dependency of the routes FastAPI serves on the request path is async (a sync one costs a thread hop)."""
    app = _app_under_test(tmp_path)
    served = _served_directly(app)
    declared = (*status.router.routes, *statements.router.routes)  # the routers the app includes
    routes = {r.path: r for r in declared if isinstance(r, APIRoute) and r.path not in served}
    for path in ("/v1/me", "/v1/targets"):
        calls = list(_dependency_calls(routes[path].dependant))
        assert calls, path
        sync = [getattr(c, "__qualname__", repr(c)) for c in calls if not inspect.iscoroutinefunction(c)]
        assert sync == [], f"{path} has sync dependencies {sync}"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    pass


def test_generated_request_ids_are_unique_sane_and_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Request ids are made without a getrandom() call per request, are unique, 32 hex digits, and differ by process."""
    first, second = RequestIds(), RequestIds()  # each draws its key once, here

    def no_syscall(_size: int) -> bytes:
        raise AssertionError("a request id must not cost a getrandom() call")

    monkeypatch.setattr(os, "urandom", no_syscall)
    ids = [first.new() for _ in range(1000)] + [second.new() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)  # as long as the uuid4 hex it replaces


def test_safe_function_list_is_honoured_per_call() -> None:
    """The upper-cased safe list is cached per set, never across sets: each call's own list decides."""
    pol = policy(grant("g", "user:alice@example.com", access=Access.READ))
    batch = [stmt(Kind.READ, "shop.items", functions=("MY_FUNC",))]
    allowed = decide(who(), batch, "shop", pol, NOW, safe_functions=frozenset({"my_func", "count"}))
    denied = decide(who(), batch, "shop", pol, NOW, safe_functions=frozenset({"count"}))
    again = decide(who(), batch, "shop", pol, NOW, safe_functions=frozenset({"MY_FUNC"}))
    assert allowed.allowed
    assert not denied.allowed
    assert denied.reason == "function MY_FUNC is not allowed"
    assert again.allowed


def test_log_lines_are_json_even_when_orjson_refuses() -> None:
    """Log lines use orjson, and fall back to the stdlib for what orjson refuses (big ints), never failing."""
    assert json.loads(dumps({"event": "x", "n": 1, 2: "non-str key"})) == {"event": "x", "n": 1, "2": "non-str key"}
    assert json.loads(dumps({"big": 2**80})) == {"big": 2**80}
    assert json.loads(dumps({"obj": object()}, default=repr))["obj"].startswith("<object")


def test_secret_scrubbing_is_the_same_on_every_call() -> None:
    """Scrubbing decides per key name once and then from its cache: a secret key is redacted every time."""
    for _ in range(3):
        event = scrub_secrets(None, "info", {"Password": "p", "db_secret": "s", "token_hash": "h", "user": "u"})
        assert event == {"Password": "[redacted]", "db_secret": "[redacted]", "token_hash": "h", "user": "u"}


def test_identity_subjects_are_built_once_and_follow_the_identity() -> None:
    """The cached subject set is the identity's own: right for each identity, rebuilt by replace(), not compared."""
    alice = who("alice@example.com", "analysts")
    assert alice.subjects == frozenset({"user:alice@example.com", "group:analysts"})
    assert alice.subjects is alice.subjects
    bob = dataclasses.replace(alice, user="bob@example.com", groups=frozenset({"dba"}))
    assert bob.subjects == frozenset({"user:bob@example.com", "group:dba"})
    assert alice == who("alice@example.com", "analysts")
    assert "_subjects" not in repr(alice)


def test_revocations_apply_at_once_whatever_was_cached() -> None:
    """No cache holds a decision: a new revocation bites on the next call, a lifted one too."""
    alice = who("alice@example.com", "analysts")
    open_policy = policy(grant("g", "group:analysts"))
    revoked = policy(grant("g", "group:analysts"), revocations=[revoke("user:alice@example.com")])
    batch = [stmt(Kind.READ, "shop.items")]
    for _ in range(2):  # the second round runs on warm caches
        assert decide(alice, batch, "shop", open_policy, NOW, safe_functions=frozenset()).allowed
        assert still_allowed(alice, "shop", open_policy, NOW)
        denied = decide(alice, batch, "shop", revoked, NOW, safe_functions=frozenset())
        assert (denied.allowed, denied.code) == (False, "revoked")
        assert not still_allowed(alice, "shop", revoked, NOW)
        assert effective_grants(alice, revoked, NOW) == []
        assert [r.subject for r in active_revocations(alice, revoked, NOW)] == ["user:alice@example.com"]
        assert active_revocations(who("bob@example.com", "analysts"), revoked, NOW) == []


def test_request_metrics_count_each_route_and_code_apart() -> None:
    """The cached metric children add up exactly as ``.labels()`` calls would, per route and per code."""
    metrics = Metrics()
    middleware = GatewayMiddleware(_app, max_body=1, metrics=metrics)
    for route, code in [("/v1/query", 200), ("/v1/query", 200), ("/v1/query", 403), ("/v1/me", 200)]:
        middleware._count(route, code)
        middleware._time(route, 0.002)
    value = metrics.registry.get_sample_value
    assert value("gateway_requests_total", {"route": "/v1/query", "code": "200"}) == 2
    assert value("gateway_requests_total", {"route": "/v1/query", "code": "403"}) == 1
    assert value("gateway_requests_total", {"route": "/v1/me", "code": "200"}) == 1
    assert value("gateway_request_seconds_count", {"route": "/v1/query"}) == 3
    assert value("gateway_request_seconds_count", {"route": "/v1/me"}) == 1


def test_audit_times_keep_their_stored_form() -> None:
    """format_time gives exactly the strftime text it replaces (fixed width, microseconds, Z), any zone."""
    east = timezone(timedelta(hours=5, minutes=30))
    moments = [
        datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 3, 1, 1, 0, 0, 5, tzinfo=east),
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime.now(UTC),
    ]
    for moment in moments:
        assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2025, 1, 2))  # noqa: DTZ001 - the naive time under test


@pytest.fixture
def json_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The CLI's JSON log set-up writing into a buffer; structlog's defaults again afterwards."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    gateway_log.configure(json=True)
    yield out
    structlog.reset_defaults()
    monkeypatch.setattr(gateway_log, "_output", None)


def test_batched_events_are_the_lines_structlog_would_write(json_logging: io.StringIO) -> None:
    """info_batch writes in one go the lines one structlog call per event writes: fields, level, scrubbing, context."""
    events: list[dict[str, object]] = [
        {"seq": 1, "user": "a", "password": "p", "request_id": "own"},
        {"seq": 2, "user": "b", "kind": "read", "token_hash": "h", "tables": ("t",), "odd": {1, 2}, "obj": object()},
    ]
    structlog.contextvars.bind_contextvars(request_id="r1", trace="t1")
    try:
        for fields in events:
            structlog.get_logger("audit").info("audit_record", **{"logger": "audit", **fields})
        one_by_one = json_logging.getvalue().splitlines()
        json_logging.truncate(0)
        json_logging.seek(0)
        info_batch("audit", "audit_record", events)
        batched = json_logging.getvalue().splitlines()
    finally:
        structlog.contextvars.unbind_contextvars("request_id", "trace")
    assert len(batched) == len(one_by_one) == 2
    for line, reference in zip(batched, one_by_one, strict=True):
        # The same keys in the same order, the same values; only the time differs.
        got, want = json.loads(line), json.loads(reference)
        assert got.pop("timestamp").endswith("Z")
        want.pop("timestamp")
        assert list(got.items()) == list(want.items())
    assert json.loads(batched[0])["password"] == "[redacted]"
    assert json.loads(batched[0])["request_id"] == "own"  # the event's own field beats the context's
    assert json.loads(batched[1])["event"] == "audit_record"
    assert json.loads(batched[1])["request_id"] == "r1"
    assert json.loads(batched[1])["obj"].startswith("<object object")  # structlog's fallback for the unknown


def test_batched_events_skip_the_bound_logger_under_the_json_set_up(
    json_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's JSON set-up renders a batch directly (the cheap path the test above compares with structlog)."""

    def no_logger(*_: object) -> None:
        raise AssertionError("structlog's bound logger was used")

    monkeypatch.setattr(structlog, "get_logger", no_logger)
    info_batch("audit", "audit_record", [{"seq": 1}, {"seq": 2}])
    assert [json.loads(line)["seq"] for line in json_logging.getvalue().splitlines()] == [1, 2]


class CountingFile(io.StringIO):
    """A text file that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def test_a_batch_of_events_is_one_write(json_logging: io.StringIO) -> None:
    """Under the JSON set-up a batch goes out in one write and one flush, each event still its own line."""
    output = gateway_log._output
    assert output is not None
    counting = CountingFile()
    output._file = counting
    writes = counting.writes
    info_batch("audit", "audit_record", [{"seq": n} for n in range(5)])
    structlog.get_logger("audit").info("single")
    assert len(writes) == 2
    assert [json.loads(line)["seq"] for line in writes[0].splitlines()] == [0, 1, 2, 3, 4]
    assert json.loads(writes[1])["event"] == "single"


def test_batched_events_honour_the_level_and_other_set_ups(json_logging: io.StringIO) -> None:
    """Above INFO nothing is written; under capture_logs each event is an ordinary structlog event."""
    with capture_logs() as logs:
        info_batch("audit", "audit_record", [{"seq": 1}, {"seq": 2}])
    assert [(e["event"], e["logger"], e["seq"]) for e in logs] == [
        ("audit_record", "audit", 1),
        ("audit_record", "audit", 2),
    ]
    assert json_logging.getvalue() == ""
    gateway_log.configure(json=True, level=logging.WARNING)
    info_batch("audit", "audit_record", [{"seq": 3}])
    assert json_logging.getvalue() == ""


async def _who_calls(request: Request) -> str:
    if request.headers.get("authorization") != "Bearer ok":
        raise Unauthenticated("no bearer token")
    return "caller"


async def _declared(request: Request, caller: Annotated[str, Depends(_who_calls)]) -> JSONResponse:
    return JSONResponse({"caller": caller, "served_by": "fastapi"})


async def _direct(request: Request) -> JSONResponse:
    caller = await _who_calls(request)
    if request.headers.get("x-fail") == "crash":
        raise RuntimeError("boom")
    return JSONResponse({"caller": caller, "served_by": "front", "route": request.scope["route"].path})


def _front_app() -> GatewayApp:
    """A small app shaped like the gateway's: /x declared in FastAPI and served directly by the front."""
    app = GatewayApp()
    app.add_api_route("/x", _declared, methods=["POST"])
    app.front = StatementEndpoints(app, {"/x": _direct}, fallback=app.stack())
    return app


async def _post(app: GatewayApp, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        return await client.post("/x", **kwargs)


@pytest.mark.anyio
async def test_statement_routes_skip_fastapis_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The front serves its paths without FastAPI's stack; errors still become problem+json (401, logged 500)."""

    def not_called(*_args: object, **_kwargs: object) -> NoReturn:
        raise AssertionError("FastAPI's stack ran")

    app = _front_app()
    monkeypatch.setattr(fastapi.routing, "solve_dependencies", not_called)
    monkeypatch.setattr(FastAPI, "build_middleware_stack", not_called)
    answer = await _post(app, headers={"Authorization": "Bearer ok"})
    assert answer.json() == {"caller": "caller", "served_by": "front", "route": "/x"}
    refused = await _post(app)
    assert (refused.status_code, refused.headers["content-type"]) == (401, "application/problem+json")
    assert refused.json()["code"] == "unauthenticated"
    with capture_logs() as logs:
        crashed = await _post(app, headers={"Authorization": "Bearer ok", "X-Fail": "crash"})
    assert (crashed.status_code, crashed.json()["code"]) == (500, "internal_error")
    assert "boom" not in crashed.text
    assert [e["error"] for e in logs if e["event"] == "unhandled_error"] == ["RuntimeError"]


@pytest.mark.anyio
async def test_statement_routes_fall_back_to_fastapi() -> None:
    """Other methods and paths, and any request while dependency overrides are set, go to FastAPI's stack."""
    app = _front_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        assert (await client.get("/x")).status_code == 405
        assert (await client.post("/x/other")).status_code == 404

    async def overridden() -> str:
        return "override"

    app.dependency_overrides[_who_calls] = overridden
    assert (await _post(app)).json() == {"caller": "override", "served_by": "fastapi"}
