"""End to end through HTTP: real provider token -> policy -> MariaDB -> audit."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

from conftest import (
    RunningGateway,
    ScratchDatabase,
    free_port,
    gateway_settings,
    root_query,
    start_gateway,
    stop_gateway,
)
from oidcfixture import OidcProvider


def test_health_and_ready(gateway: RunningGateway) -> None:
    """/healthz answers; /readyz shows an admin the policies, keys and every pool as usable."""
    with gateway.client(None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
    with gateway.client("admin") as http:
        ready = http.get("/readyz")
        body = ready.json()
        assert ready.status_code == 200, body
        assert body["ready"] is True
        assert body["checks"]["policies"]["ok"] is True
        assert body["checks"]["keys"]["ok"] is True
        assert any(k.startswith("pool:shop/") for k in body["checks"])
        assert body["checks"]["audit"]["ok"] is True


def test_a_database_outage_is_reported_but_keeps_the_replica_ready(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase
) -> None:
    """A target whose database is unreachable: /readyz stays 200 and names the pool; queries get 503 + Retry-After."""
    settings = gateway_settings(tmp_path, idp, test_db)
    shop = settings.targets["shop"].model_copy(update={"port": free_port()})  # nothing listens there
    running = start_gateway(settings.model_copy(update={"targets": {"shop": shop}}), idp, test_db)
    try:
        with running.client("admin") as http:
            ready = http.get("/readyz")
        with running.client("reader") as http:
            reply = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
    finally:
        stop_gateway(running)
    assert ready.status_code == 200
    pools = {k: v for k, v in ready.json()["checks"].items() if k.startswith("pool:shop/")}
    assert pools
    assert all(v["ok"] is False and v["required"] is False and v["detail"] for v in pools.values())
    assert (reply.status_code, reply.json()["code"]) == (503, "database_unavailable")
    assert "retry-after" in reply.headers


def test_point_select_returns_rows_in_spec_shape(gateway: RunningGateway) -> None:
    """A read grant holder gets the SPEC's reply shape, with the deciding grant named."""
    with gateway.client("reader") as http:
        reply = http.post(
            "/v1/query",
            json={
                "target": "shop",
                "sql": "SELECT id, name FROM items WHERE id = ?",
                "params": [1],
            },
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["rows"] == [[1, "pen"]]
    assert body["columns"] == [
        {"name": "id", "type": "LONG"},
        {"name": "name", "type": "VAR_STRING"},
    ]
    assert body["kind"] == "read"
    assert body["grant"] == "analysts-read"
    assert body["row_count"] == 1
    assert body["truncated"] is False
    assert body["rows_affected"] is None
    assert reply.headers["x-request-id"] == body["request_id"]


def test_value_encoding(gateway: RunningGateway) -> None:
    """DECIMAL -> string, DATETIME/DATE -> ISO 8601, binary -> base64, NULL -> null."""
    sql = (
        "SELECT i.price, c.created_at, i.sku, o.note, i.added "
        "FROM items i JOIN orders o ON o.item_id = i.id JOIN customers c ON c.id = o.customer_id "
        "WHERE i.id = 1"
    )
    with gateway.client("reader") as http:
        body = http.post("/v1/query", json={"target": "shop", "sql": sql}).json()
    price, created, sku, note, added = body["rows"][0]
    assert price == "1.50"
    assert created == "2024-01-02T03:04:05.123456"
    assert base64.b64decode(sku) == b"\x00\xff\x10\x80"
    assert note is None
    assert added == "2024-01-01"


def test_row_cap_truncates(gateway: RunningGateway) -> None:
    """The smaller of the grant's max_rows and the request's max_rows caps the rows; truncated says so."""
    with gateway.client("reader") as http:
        body = http.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items", "max_rows": 7}).json()
        assert body["row_count"] == 7
        assert body["truncated"] is True
        capped = http.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items ORDER BY id"}).json()
        assert capped["row_count"] == 500  # the grant's cap
        assert capped["truncated"] is True
        # The session that was cut short is not reused: the next query works normally.
        again = http.post("/v1/query", json={"target": "shop", "sql": "SELECT COUNT(*) FROM items"}).json()
        assert again["rows"] == [[1000]]


def test_request_id_is_always_the_gateways_own(gateway: RunningGateway) -> None:
    """The caller never picks the X-Request-ID: a sane one or an unsafe one, the reply's is a fresh 32-hex id."""
    with gateway.client("reader") as http:
        sane = http.get("/v1/me", headers={"X-Request-ID": "abc-123"})
        unsafe = http.get("/v1/me", headers={"X-Request-ID": "*/ DROP TABLE x; --"})
    ids = {sane.headers["x-request-id"], unsafe.headers["x-request-id"]}
    assert len(ids) == 2
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_wrong_method_is_405_with_allow(gateway: RunningGateway) -> None:
    """A method a route does not take is a 405 problem listing the allowed ones in Allow (RFC 9110)."""
    with gateway.client(None) as http:
        reply = http.post("/healthz")
    assert reply.status_code == 405
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "method_not_allowed"
    assert reply.headers["allow"] == "GET"


def test_me_and_targets(gateway: RunningGateway) -> None:
    """/v1/me shows the caller's groups and grants only; /v1/targets the access level."""
    with gateway.client("writer") as http:
        me = http.get("/v1/me").json()
        targets = http.get("/v1/targets").json()
    assert me["user"] == "writer@example.com"
    assert me["groups"] == ["engineers"]
    assert [g["name"] for g in me["grants"]] == ["engineers-write"]
    assert targets["targets"][0]["name"] == "shop"
    assert targets["targets"][0]["access"] == "write"


def test_forbidden_tables_and_no_grant(gateway: RunningGateway) -> None:
    """A denied table and a user without grants get 403 forbidden as problem+json."""
    with gateway.client("reader") as http:
        denied = http.post("/v1/query", json={"target": "shop", "sql": "SELECT * FROM payment_cards"})
    assert denied.status_code == 403
    assert denied.headers["content-type"] == "application/problem+json"
    problem = denied.json()
    assert problem["code"] == "forbidden"
    assert set(problem) >= {"type", "title", "status", "detail", "code", "request_id"}
    with gateway.client("nobody") as http:
        none = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
    assert none.status_code == 403
    assert none.json()["code"] == "forbidden"


def test_revoked_user(gateway: RunningGateway) -> None:
    """A revocation beats the user's group grant: 403 revoked."""
    with gateway.client("mallory") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
    assert reply.status_code == 403
    assert reply.json()["code"] == "revoked"


def test_error_codes(gateway: RunningGateway) -> None:
    """Unknown target 404, bad body 422, unparseable SQL 400, DB refusal 422, wrong param count 422."""
    with gateway.client("reader") as http:
        assert http.post("/v1/query", json={"target": "nope", "sql": "SELECT 1"}).json()["code"] == "unknown_target"
        bad = http.post("/v1/query", json={"target": "shop"})
        assert bad.status_code == 422
        assert bad.json()["code"] == "invalid_request"
        nested = http.post("/v1/query", json={"target": "shop", "sql": "SELECT ?", "params": [[1]]})
        assert nested.json()["code"] == "invalid_request"
        junk = http.post("/v1/query", content=b"{not json", headers={"content-type": "application/json"})
        assert junk.status_code == 422
        parse = http.post("/v1/query", json={"target": "shop", "sql": "SELEC 1 FROM"})
        assert parse.status_code == 400
        assert parse.json()["code"] == "statement_rejected"
        missing = http.post("/v1/query", json={"target": "shop", "sql": "SELECT nope FROM items"})
        assert missing.status_code == 422
        assert missing.json()["code"] == "database_error"
        assert "1054" in missing.json()["detail"]
        count = http.post("/v1/query", json={"target": "shop", "sql": "SELECT ?", "params": [1, 2]})
        assert count.status_code == 422
        assert count.json()["code"] == "invalid_request"
        route = http.get("/v1/nothing-here")
        assert route.status_code == 404
        assert route.headers["content-type"] == "application/problem+json"


def test_statement_timeout(gateway: RunningGateway) -> None:
    """A statement over the grant's 2 s timeout is stopped by MariaDB: 504 statement_timeout."""
    heavy = "SELECT COUNT(*) FROM items a, items b, items c, items d"
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": heavy})
    assert reply.status_code == 504, reply.text
    assert reply.json()["code"] == "statement_timeout"


def test_write_grant_insert_and_params(gateway: RunningGateway) -> None:
    """A write grant inserts with bound params (quotes and backslashes stay data)."""
    tricky = "O'Brien \\' OR 1=1 -- "
    with gateway.client("writer") as http:
        reply = http.post(
            "/v1/query",
            json={
                "target": "shop",
                "sql": "INSERT INTO customers (name, email, created_at) VALUES (?, ?, NOW())",
                "params": [tricky, "ob@example.com"],
            },
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["kind"] == "write"
    assert body["rows_affected"] == 1
    new_id = body["last_insert_id"]
    rows = root_query(f"SELECT name FROM `{gateway.db.name}`.customers WHERE id = %s", (new_id,))
    assert rows == [(tricky,)]


def test_reader_cannot_write(gateway: RunningGateway) -> None:
    """A read grant holder's INSERT is refused by the policy (403), and the row is not there."""
    with gateway.client("reader") as http:
        reply = http.post(
            "/v1/query",
            json={"target": "shop", "sql": "INSERT INTO items (name, price) VALUES ('x', 1)"},
        )
    assert reply.status_code == 403
    assert root_query(f"SELECT COUNT(*) FROM `{gateway.db.name}`.items WHERE name = 'x'") == [(0,)]


def test_body_cap(gateway: RunningGateway) -> None:
    """A body over the cap gets 413 payload_too_large before it is parsed."""
    with gateway.client("reader") as http:
        huge = "SELECT 1 -- " + "x" * (300 * 1024)
        reply = http.post("/v1/query", json={"target": "shop", "sql": huge})
    assert reply.status_code == 413
    assert reply.json()["code"] == "payload_too_large"


def test_statement_comment_carries_request_id(gateway: RunningGateway) -> None:
    """MariaDB sees the gateway's comment with the gateway's request id, never the caller's (processlist)."""
    seen: list[str] = []

    def watch() -> None:
        for _ in range(40):
            rows = root_query("SELECT info FROM information_schema.processlist WHERE info LIKE '%%comment_probe%%'")
            seen.extend(r[0] for r in rows if "processlist" not in r[0])
            if seen:
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with gateway.client("reader") as http:
        reply = http.post(
            "/v1/query",
            json={"target": "shop", "sql": "SELECT COUNT(*) AS comment_probe FROM items a, items b, items c"},
            headers={"X-Request-ID": "trace-me-42"},
        )
    watcher.join()
    request_id = reply.headers["x-request-id"]
    assert any(f"gw request_id={request_id} user=reader@example.com" in s for s in seen), seen
    assert not any("trace-me-42" in s for s in seen), seen


def test_json_body_whatever_the_content_type(gateway: RunningGateway) -> None:
    """A JSON body sent with curl's default form content type is still read as JSON."""
    with gateway.client("reader") as http:
        reply = http.post(
            "/v1/query",
            content=b'{"target": "shop", "sql": "SELECT 1"}',
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"] == [[1]]


def test_metrics_exposed(gateway: RunningGateway) -> None:
    """/metrics serves Prometheus text with request counters and pool gauges."""
    with gateway.client("reader") as http:
        http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
        text = http.get("/metrics").text
    assert 'gateway_requests_total{code="200",route="/v1/query"}' in text
    assert "gateway_pool_in_use" in text


def test_long_statements_are_analysed_like_short_ones(gateway: RunningGateway) -> None:
    """A statement past the inline-analysis size (analysed off the event loop) gets the same checks and rows."""
    ids = list(range(1, 901))
    padding = "x" * 1500
    long_sql = (
        "SELECT id FROM items WHERE id IN (" + ", ".join("?" for _ in ids) + f") AND name <> '{padding}' ORDER BY id"
    )
    assert len(long_sql) > 4096
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": long_sql, "params": ids})
        assert reply.status_code == 200, reply.text
        assert reply.json()["row_count"] == 500  # the grant's cap
        assert reply.json()["rows"][:3] == [[1], [2], [3]]
        hostile = "SELECT 1 " + " " * 5000 + "; DROP TABLE items"
        refused = http.post("/v1/query", json={"target": "shop", "sql": hostile})
        assert (refused.status_code, refused.json()["code"]) == (400, "statement_rejected")
        cards = "SELECT card_number FROM payment_cards WHERE id IN (" + ", ".join(str(i) for i in ids) + ")"
        denied = http.post("/v1/query", json={"target": "shop", "sql": cards})
        assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")


def _samples(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 - only this test parses the exposition format

    return {
        f"{s.name}{{{','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))}}}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_decision_and_audit_metrics_count_what_happened(gateway: RunningGateway) -> None:
    """Decisions by result and code, committed audit records and the commit-latency histogram move with traffic."""
    with gateway.client("reader") as http:
        before = _samples(http.get("/metrics").text)
        http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
        http.post("/v1/query", json={"target": "shop", "sql": "DELETE FROM items"})
        with gateway.client(None) as anonymous:
            anonymous.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
        gateway.audit_settled()
        after = _samples(http.get("/metrics").text)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("gateway_decisions_total{code=allowed,decision=allow}") == 1
    assert delta("gateway_decisions_total{code=forbidden,decision=deny}") == 1
    assert delta("gateway_decisions_total{code=unauthenticated,decision=deny}") == 1
    assert delta("gateway_audit_records_total{}") >= 4  # 3 decisions, 1 outcome, the /metrics reads are not audited
    assert delta("gateway_audit_write_seconds_count{}") >= 1
    assert after["gateway_audit_write_failures_total{}"] == 0
    assert "gateway_audit_pending{}" in after
