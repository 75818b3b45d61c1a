"""schemathesis against a running gateway, from the gateway's own OpenAPI document.

The gateway under test is this module's own: its own policies directory,
audit file, access-request state and scratch database (``gwtest_...``, like
``test_db``, so an interrupted run is cleaned up by the next session), so the
fuzzed admin routes may rewrite policies and the fuzzed admin token may run
DDL without touching what other tests use.

Every operation is fuzzed three times: without a token, with the ``reader``
token (a read grant) and with the ``admin`` token (admin and auditor roles,
a DDL grant), so the requests reach past authentication into the policy,
the statement analyser, the database and the admin editor. Policy edits get
the current revision as ``If-Match`` so they reach the editor too.

The document is built from the app object at import (schemathesis' lazy
``from_fixture`` loader does not work with pytest 9); the first test checks
that the running gateway serves that same document at ``/openapi.json``.
"""

from __future__ import annotations

import secrets
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from conftest import (
    RunningGateway,
    ScratchDatabase,
    gateway_settings,
    root_connection,
    run,
    start_gateway,
    stop_gateway,
)
from fuzzprofile import budget
from hypothesis import given, settings
from hypothesis import strategies as st
from oidcfixture import OidcProvider
from schemathesis.core import NotSet

from gateway.db.provision import Account, drop, provision
from gateway.db.streaming import NDJSON
from gateway.http.app import create_app
from gateway.http.openapi import BODIES, IF_MATCH
from gateway.http.problems import PROBLEM
from gateway.settings import Settings

if TYPE_CHECKING:
    from schemathesis.specs.openapi.schemas import OpenApiCase

pytestmark = pytest.mark.fuzz

# Only the document is taken from this app: it is never started.
_DOCUMENT_CONFIG: dict[str, Any] = {
    "issuers": [{"issuer": "https://idp.invalid", "audience": "gateway"}],
    "policies_dir": Path("policies"),
    "targets": {"shop": {"host": "127.0.0.1", "database": "shop", "secrets": {"gw_reader": {"env": "UNUSED"}}}},
    "audit": {"path": Path("unused-audit.db")},
}
_DOCUMENT_APP = create_app(Settings(**_DOCUMENT_CONFIG))
DOCUMENT = _DOCUMENT_APP.openapi()
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # Starlette lists only the first route's methods in a 405's Allow header, and GET and
            # POST /v1/access-requests are two routes: OPTIONS there says `Allow: POST`. Known,
            # harmless (the 405 and its Allow header are there), left to the framework.
            "allow_header_conformance": {"enabled": False},
            # The document cannot say which values exist (a target, a grant name, a cursor from an
            # earlier page, the current policy revision), so schema-valid requests are often
            # rightly refused with 404, 412 or 422: the check would fail on documented behaviour.
            "positive_data_acceptance": {"enabled": False},
            # A policy edit without If-Match is 428 precondition_required, as documented.
            "missing_required_header": {"expected-statuses": [400, 401, 403, 406, 415, 422, 428]},
        },
        "generation": {
            # Unknown query parameters are ignored, as HTTP APIs conventionally do; unknown body keys
            # are refused, which test_unknown_body_keys_are_refused checks instead.
            "allow-extra-parameters": False,
            # The bearer token is set per identity below, never drawn or dropped by the generator.
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},  # links are not described; every call stands alone
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
EXAMPLES = budget(12)  # per operation and identity: 17 x 3 x 12, plus the coverage phase's own cases


@pytest.fixture(scope="module")
def fuzz_db() -> Iterator[ScratchDatabase]:
    """A scratch database only the fuzzed gateway uses (named like ``test_db``, so leftovers are dropped)."""
    stamp, rand = str(int(time.time())), secrets.token_hex(3)
    name, prefix = f"gwtest_{stamp}_{rand}", f"gwt{stamp[-4:]}{rand}"

    async def setup() -> dict[str, Account]:
        conn = await root_connection()
        try:
            return await provision(conn, name, prefix)
        finally:
            conn.close()

    async def teardown() -> None:
        conn = await root_connection()
        try:
            await drop(conn, name, prefix)
        finally:
            conn.close()

    accounts = run(setup())
    try:
        yield ScratchDatabase(name, prefix, accounts)
    finally:
        run(teardown())


@pytest.fixture(scope="module")
def fuzz_gateway(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, fuzz_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """A gateway of this module's own: policies, audit log, access requests and database all private."""
    tmp = tmp_path_factory.mktemp("fuzz-api")
    running = start_gateway(gateway_settings(tmp, idp, fuzz_db, admin={"state_dir": tmp / "state"}), idp, fuzz_db)
    yield running
    stop_gateway(running)


@pytest.fixture(scope="module")
def tokens(idp: OidcProvider) -> dict[str, str]:
    """One real token per fuzzing identity, minted once (they outlive the module)."""
    return {user: idp.token(user) for user in ("reader", "admin")}


def call(case: OpenApiCase, gateway: RunningGateway, token: str | None) -> None:
    """Send ``case`` as the given identity and run every check on the reply.

    Beyond schemathesis' checks (no 5xx, status, content type, headers and
    body as documented, schema-violating input refused, missing required
    headers refused, undeclared methods 405 with Allow, auth not ignored):
    no 5xx at all, and every error is problem+json with its status, a
    ``code`` and the ``X-Request-ID`` as its ``request_id``.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = None if isinstance(case.body, NotSet) else case.body  # NotSet's repr holds an address
    coin = zlib.crc32(repr((case.method, case.path, body, case.query)).encode())  # the same on every run
    positive = case.meta is None or case.meta.generation.mode.is_positive  # negative cases stay as drawn
    if positive and isinstance(case.body, dict) and isinstance(case.body.get("target"), str) and coin % 2:
        case.body["target"] = "shop"  # half the bodies name the real target, to reach policy, analyser and database
    if case.path == "/v1/query" and coin % 4 < 2:  # a quarter each way
        headers["Accept"] = NDJSON  # the streaming path
    if token and (case.method.lower(), case.path) in IF_MATCH and case.headers and "If-Match" in case.headers:
        # A random revision is always stale (412); the current one lets the edit reach the editor.
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as http:
            current = http.get("/v1/policy").headers.get("etag")
        if current:
            case.headers["If-Match"] = current
    response = case.call_and_validate(base_url=gateway.url, headers=headers, timeout=10)
    # not_a_server_error already fails on any 5xx; the documented 503s (database, pool, audit
    # unavailable) cannot happen here either, so this says it outright.
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        (content_type,) = response.headers["content-type"]  # schemathesis keeps every value of a header
        assert content_type.startswith(PROBLEM), response.text
        problem = response.json()
        assert problem["status"] == response.status_code
        assert problem["code"]
        assert problem["request_id"] == response.headers["x-request-id"][0]


def test_the_fuzzed_document_is_the_one_served(fuzz_gateway: RunningGateway) -> None:
    """The running gateway serves at /openapi.json exactly the document fuzzed below."""
    with httpx.Client(base_url=fuzz_gateway.url, timeout=10) as http:
        assert http.get("/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_without_a_token(case: OpenApiCase, fuzz_gateway: RunningGateway) -> None:
    """Anonymous callers: every operation answers 2xx (public ones) or a documented problem, never a 5xx."""
    call(case, fuzz_gateway, None)


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_as_a_reader(case: OpenApiCase, fuzz_gateway: RunningGateway, tokens: dict[str, str]) -> None:
    """A caller with a read grant and no role: no 5xx, every error a documented problem."""
    call(case, fuzz_gateway, tokens["reader"])


@schema.parametrize()
@settings(max_examples=EXAMPLES)
def test_as_an_admin(case: OpenApiCase, fuzz_gateway: RunningGateway, tokens: dict[str, str]) -> None:
    """An admin and auditor with a DDL grant on the module's own database: no 5xx, every error a documented problem."""
    call(case, fuzz_gateway, tokens["admin"])


@pytest.mark.parametrize("operation", sorted(BODIES))
def test_unknown_body_keys_are_refused(
    fuzz_gateway: RunningGateway, tokens: dict[str, str], operation: tuple[str, str]
) -> None:
    """Each documented body with an extra key is invalid_request (422), never silently accepted."""
    method, path = operation
    _, example = BODIES[operation]
    url = path.replace("{request_id}", "ar-missing")
    headers = {"Authorization": f"Bearer {tokens['admin']}", "If-Match": "stale"}
    with httpx.Client(base_url=fuzz_gateway.url, headers=headers, timeout=10) as http:
        reply = http.request(method, url, json={**example, "unknown": 1})
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "invalid_request"
    assert "unknown" in reply.json()["detail"]


OFFSETS = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: timezone(timedelta(minutes=minutes)))
EDGE_TIMES = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), OFFSETS)),
    st.sampled_from([datetime.min.replace(tzinfo=timezone(timedelta(hours=1))), datetime.max.replace(tzinfo=UTC)]),
).map(datetime.isoformat)
EDGE_INTS = st.one_of(st.integers(min_value=1), st.integers(2**62, 10**40)).map(str)


@settings(max_examples=budget(40))
@given(
    st.one_of(
        st.fixed_dictionaries({"since": EDGE_TIMES}, optional={"until": EDGE_TIMES}),
        st.fixed_dictionaries({"limit": EDGE_INTS}),
        st.fixed_dictionaries({"head_seq": EDGE_INTS, "head_hash": st.just("0" * 64)}),
    )
)
def test_audit_filters_at_the_edges(
    fuzz_gateway: RunningGateway, tokens: dict[str, str], params: dict[str, str]
) -> None:
    """Times of any year and offset, and integers far past 64 bits, in audit filters: a reply or a 422, never a 5xx.

    schemathesis rarely draws these: they once came back as 503 audit_unavailable (a time leaving
    years 1-9999 in UTC) and 500 (a head_seq the audit record could not hold).
    """
    route = "/v1/audit/verify" if "head_seq" in params else "/v1/audit"
    with httpx.Client(base_url=fuzz_gateway.url, timeout=10) as http:
        reply = http.get(route, params=params, headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert reply.status_code in {200, 422}, reply.text
    if reply.status_code == 422:
        assert reply.json()["code"] == "invalid_request"
