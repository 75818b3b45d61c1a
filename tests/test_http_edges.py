"""The HTTP edges (SECURITY rules 21, 29, 30, 31): oversized requests, request ids, /readyz.

Against the session's real gateway (real provider tokens, real MariaDB, the
SQLite audit store). Records are read straight after the reply, without
waiting for the writer: a refusal's record is durable before it is answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import uvicorn
from conftest import RunningGateway, ScratchDatabase, free_port, gateway_settings, start_gateway, stop_gateway
from oidcfixture import GATEWAY_AUDIENCE, OidcProvider

from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import Entry
from gateway.cli.main import h11_header_limit
from gateway.http.app import create_app
from gateway.requestids import RequestIds, client_request_id

MB8 = 8 * 1024 * 1024
HEX = frozenset("0123456789abcdef")


def records(gateway: RunningGateway, request_id: str) -> list[Entry]:
    """The stored records with the gateway's ``request_id``, in seq order (no waiting)."""
    store = SQLiteAuditStore(gateway.settings.audit.path, readonly=True)
    try:
        return [e for e in store.iter_entries() if e.get("request_id") == request_id]
    finally:
        store.close()


def wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def is_gateway_id(value: str) -> bool:
    """Whether ``value`` has the gateway's id form: 32 lowercase hex digits."""
    return len(value) == 32 and set(value) <= HEX


# --- oversized requests (rule 29) -----------------------------------------------------------------


def test_an_8mb_header_is_a_431_problem_with_a_small_record(gateway: RunningGateway) -> None:
    """An unauthenticated request with an 8 MB header: 431 headers_too_large, recorded first, the record capped."""
    reply = httpx.get(f"{gateway.url}/v1/me", headers={"User-Agent": "U" * MB8}, timeout=60)
    assert reply.status_code == 431
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["code"] == "headers_too_large"
    assert problem["request_id"] == reply.headers["x-request-id"]
    (record,) = records(gateway, reply.headers["x-request-id"])
    assert (record["event"], record["decision"], record["code"]) == ("decision", "deny", "headers_too_large")
    assert (record["route"], record["client"], record["user_verified"]) == ("GET /v1/me", "127.0.0.1", False)
    assert record["user_agent"] == "U" * 4096 + f"…[truncated, {MB8} chars]"
    assert len(orjson.dumps(record)) < 8 * 1024


def test_a_long_header_under_the_cap_is_recorded_capped(gateway: RunningGateway) -> None:
    """A 20 KB user agent (headers within their cap) with a bad token: 401, its auth record's field cut to 4,096."""
    reply = httpx.get(
        f"{gateway.url}/v1/me", headers={"User-Agent": "V" * 20_000, "Authorization": "Bearer not.a.token"}
    )
    assert reply.status_code == 401
    (record,) = records(gateway, reply.headers["x-request-id"])
    assert record["event"] == "auth"
    assert record["user_agent"] == "V" * 4096 + "…[truncated, 20000 chars]"


def test_a_declared_oversized_body_is_413_and_recorded(gateway: RunningGateway) -> None:
    """A Content-Length over the body cap: 413 payload_too_large before anything is read, and a deny record."""
    body = b"x" * (gateway.settings.limits.max_body_bytes + 1)
    reply = httpx.post(f"{gateway.url}/v1/query", content=body, headers={"X-Request-ID": "big-body-1"})
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"
    assert reply.json()["client_request_id"] == "big-body-1"
    (record,) = records(gateway, reply.headers["x-request-id"])
    assert (record["decision"], record["code"], record["route"]) == ("deny", "payload_too_large", "POST /v1/query")
    assert (record["client"], record["client_request_id"]) == ("127.0.0.1", "big-body-1")


@pytest.mark.parametrize("path", ["/v1/query", "/v1/transaction", "/v1/access-requests"])
def test_a_streamed_oversized_body_is_413_and_recorded(gateway: RunningGateway, path: str) -> None:
    """A chunked body (no Content-Length) that passes the cap: 413 once it does, on every route, and a record."""
    cap = gateway.settings.limits.max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(cap // 65536 + 2):
            yield b"y" * 65536

    with gateway.client("admin") as http:
        reply = http.post(path, content=chunks())
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"
    decisions = [r for r in records(gateway, reply.headers["x-request-id"]) if r["code"] == "payload_too_large"]
    assert [(r["decision"], r["route"]) for r in decisions] == [("deny", f"POST {path}")]


# --- request ids (rule 30) ------------------------------------------------------------------------


def test_a_caller_cannot_pick_or_claim_a_request_id(gateway: RunningGateway) -> None:
    """Sending another request's id as X-Request-ID gets a fresh id; the audit keeps the two apart."""
    with gateway.client("reader") as http:
        first = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
    victim = first.headers["x-request-id"]
    with gateway.client("writer") as http:
        claim = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 2"}, headers={"X-Request-ID": victim})
    own = claim.headers["x-request-id"]
    assert is_gateway_id(victim)
    assert is_gateway_id(own)
    assert own != victim
    body = claim.json()
    assert (body["request_id"], body["client_request_id"]) == (own, victim)
    gateway.audit_settled()
    assert {r["user"] for r in records(gateway, victim)} == {"reader@example.com"}
    claimed = records(gateway, own)
    assert [r["event"] for r in claimed] == ["decision", "outcome"]
    assert all(r["client_request_id"] == victim and r["user"] == "writer@example.com" for r in claimed)


def test_the_callers_id_is_kept_apart_in_problems_and_streams(gateway: RunningGateway) -> None:
    """A denial's problem and a stream's header carry the gateway's id and, apart, the caller's sane one."""
    with gateway.client("reader") as http:
        denied = http.post(
            "/v1/query", json={"target": "shop", "sql": "DELETE FROM items"}, headers={"X-Request-ID": "mine.1"}
        )
        streamed = http.post(
            "/v1/query",
            json={"target": "shop", "sql": "SELECT 1"},
            headers={"X-Request-ID": "mine.2", "Accept": "application/x-ndjson"},
        )
        unsafe = http.post(
            "/v1/query", json={"target": "shop", "sql": "DELETE FROM items"}, headers={"X-Request-ID": "a b*/"}
        )
    problem = denied.json()
    assert (problem["request_id"], problem["client_request_id"]) == (denied.headers["x-request-id"], "mine.1")
    header = orjson.loads(streamed.text.splitlines()[0])
    assert (header["request_id"], header["client_request_id"]) == (streamed.headers["x-request-id"], "mine.2")
    assert "client_request_id" not in unsafe.json()  # an unsafe id is dropped, not kept
    (record,) = records(gateway, unsafe.headers["x-request-id"])
    assert "client_request_id" not in record


def test_request_ids_are_unique_and_keyed() -> None:
    """Ids are 32 hex digits, all distinct, and another key gives an unrelated sequence (nothing to extrapolate)."""
    one, other = RequestIds(b"k" * 32), RequestIds(b"j" * 32)
    ids = [one.new() for _ in range(100_000)]
    assert all(is_gateway_id(i) for i in ids[:100])
    assert len(set(ids)) == len(ids)
    assert not set(ids) & {other.new() for _ in range(100_000)}
    assert RequestIds(b"k" * 32).new() == ids[0]  # the key alone decides the sequence
    # No shared prefix or visible counter between consecutive ids.
    assert len({i[:8] for i in ids[:1000]}) > 990


@pytest.mark.parametrize(
    ("offered", "kept"),
    [("abc-123", "abc-123"), ("a" * 64, "a" * 64), ("a" * 65, None), ("x y", None), ("", None), ("a\n", None)],
)
def test_only_a_sane_client_request_id_is_kept(offered: str, kept: str | None) -> None:
    """A caller's id is kept only when it is 1-64 characters of [A-Za-z0-9._:-]."""
    assert client_request_id(offered) == kept


# --- /readyz (rule 31) ----------------------------------------------------------------------------


def test_readyz_without_a_token_says_only_ready(gateway: RunningGateway) -> None:
    """Unauthenticated /readyz: 200 and the status alone, nothing about files, grants, hosts or accounts."""
    reply = httpx.get(f"{gateway.url}/readyz")
    assert reply.status_code == 200
    assert reply.json() == {"status": "ready"}


def test_readyz_details_need_the_admin_role(gateway: RunningGateway) -> None:
    """A reader's valid token gets the status alone; an admin's gets the checks; a bad token is a recorded 401."""
    with gateway.client("reader") as http:
        assert http.get("/readyz").json() == {"status": "ready"}
    with gateway.client("admin") as http:
        body = http.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["ready"] is True
    assert any(k.startswith("pool:shop/") for k in body["checks"])
    bad = httpx.get(f"{gateway.url}/readyz", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401
    assert [r["event"] for r in records(gateway, bad.headers["x-request-id"])] == ["auth"]


def test_readyz_not_ready_is_503_and_still_says_nothing_more(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase
) -> None:
    """With an issuer whose keys cannot be fetched: 503 {"status": "not_ready"}; an admin sees the failing check."""
    unreachable = {"issuer": f"http://127.0.0.1:{free_port()}", "audience": GATEWAY_AUDIENCE}
    issuers = [{"issuer": idp.issuer, "audience": GATEWAY_AUDIENCE}, unreachable]
    running = start_gateway(gateway_settings(tmp_path, idp, test_db, issuers=issuers), idp, test_db)
    try:
        anonymous = httpx.get(f"{running.url}/readyz", timeout=30)
        with running.client("admin") as http:
            admin = http.get("/readyz")
    finally:
        stop_gateway(running)
    assert (anonymous.status_code, anonymous.json()) == (503, {"status": "not_ready"})
    assert admin.status_code == 503
    assert admin.json()["checks"]["keys"]["ok"] is False


def test_with_h11_a_header_past_the_cap_is_431_and_far_past_it_a_bounded_400(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase
) -> None:
    """Under h11 as ``gateway serve`` sets it up, 40 KB of headers is a recorded 431 and 8 MB a bounded 400.

    h11 (used when httptools is missing) reads at most ``max_header_bytes`` plus a margin: up to there
    the gateway answers and records; beyond, h11 refuses with a plain 400 (or cuts the connection while
    the client still sends) without the app or the audit log seeing it.
    """
    settings = gateway_settings(tmp_path, idp, test_db)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.listen.host,
        port=settings.listen.port,
        log_level="warning",
        http="h11",
        h11_max_incomplete_event_size=h11_header_limit(settings),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 20)
        url = f"http://{settings.listen.host}:{settings.listen.port}"
        past_cap = httpx.get(f"{url}/v1/me", headers={"X-Pad": "p" * 40_000})
        try:
            far_past: int | None = httpx.get(f"{url}/v1/me", headers={"X-Pad": "p" * MB8}, timeout=60).status_code
        except httpx.TransportError:  # the server closed while the client was still sending
            far_past = None
    finally:
        server.should_exit = True
        thread.join(20)
    assert (past_cap.status_code, past_cap.json()["code"]) == (431, "headers_too_large")
    assert far_past in {400, None}
    store = SQLiteAuditStore(tmp_path / "audit.db", readonly=True)
    try:
        codes = [e["code"] for e in store.iter_entries()]
    finally:
        store.close()
    assert codes == ["headers_too_large"]
