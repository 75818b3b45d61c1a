"""Correctness of the performance work (docs/benchmarks.md): each shortcut keeps its behaviour."""

from __future__ import annotations

import inspect
import json
import re
from datetime import UTC, datetime

from fastapi.routing import APIRoute
from test_policy import grant, policy, stmt, who

from gateway.api import router
from gateway.app import create_app
from gateway.log import dumps, scrub_secrets
from gateway.metrics import Metrics
from gateway.middleware import _SANE_ID, GatewayMiddleware
from gateway.policy import decide
from gateway.policytypes import Access
from gateway.settings import Settings
from gateway.statements import Kind

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _dependency_calls(dependant):
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def test_request_path_dependencies_are_async(tmp_path):
    """Every dependency of /v1/query and /v1/transaction is async: a sync one would cost a thread hop per request."""
    settings = Settings(
        dev_mode=True,
        targets={"shop": {"host": "127.0.0.1", "database": "shop"}},
        dev={"key_file": tmp_path / "dev-key.pem"},
        audit={"path": tmp_path / "audit.db"},
    )
    create_app(settings)  # installs the routes
    routes = {r.path: r for r in router.routes if isinstance(r, APIRoute)}
    for path in ("/v1/query", "/v1/transaction", "/v1/me", "/v1/targets"):
        calls = list(_dependency_calls(routes[path].dependant))
        assert calls, path
        sync = [getattr(c, "__qualname__", repr(c)) for c in calls if not inspect.iscoroutinefunction(c)]
        assert sync == [], f"{path} has sync dependencies {sync}"


async def _app(scope, receive, send):
    pass


def test_generated_request_ids_are_unique_sane_and_per_process():
    """Request ids made without a getrandom() call per request are unique, sane, and differ between processes."""
    first = GatewayMiddleware(_app, max_body=1, metrics=Metrics())
    second = GatewayMiddleware(_app, max_body=1, metrics=Metrics())
    ids = [first._new_id() for _ in range(1000)] + [second._new_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    assert all(_SANE_ID.match(i) for i in ids)
    assert first._id_prefix != second._id_prefix
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)  # as long as the uuid4 hex it replaces


def test_safe_function_list_is_honoured_per_call():
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


def test_log_lines_are_json_even_when_orjson_refuses():
    """Log lines use orjson, and fall back to the stdlib for what orjson refuses (big ints), never failing."""
    assert json.loads(dumps({"event": "x", "n": 1, 2: "non-str key"})) == {"event": "x", "n": 1, "2": "non-str key"}
    assert json.loads(dumps({"big": 2**80})) == {"big": 2**80}
    assert json.loads(dumps({"obj": object()}, default=repr))["obj"].startswith("<object")


def test_secret_scrubbing_is_the_same_on_every_call():
    """Scrubbing decides per key name once and then from its cache: a secret key is redacted every time."""
    for _ in range(3):
        event = scrub_secrets(None, "info", {"Password": "p", "db_secret": "s", "token_hash": "h", "user": "u"})
        assert event == {"Password": "[redacted]", "db_secret": "[redacted]", "token_hash": "h", "user": "u"}
