"""GET /v1/audit and GET /v1/audit/verify on the session gateway (embedded store)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import RunningGateway

ROUTES = ("/v1/audit", "/v1/audit/verify")


@pytest.mark.parametrize("route", ROUTES)
def test_audit_routes_need_the_auditor_role(gateway: RunningGateway, route: str) -> None:
    """No token: 401; a valid token without the auditor role: 403; the auditor: 200."""
    with gateway.client(None) as anonymous:
        reply = anonymous.get(route)
        assert reply.status_code == 401
        assert reply.headers["content-type"] == "application/problem+json"
    with gateway.client("reader") as reader:
        reply = reader.get(route)
        assert reply.status_code == 403
        assert reply.json()["code"] == "forbidden"
        assert "auditor" in reply.json()["detail"]
    with gateway.client("admin") as auditor:
        assert auditor.get(route).status_code == 200


def _run(gateway: RunningGateway, user: str, sql: str) -> str:
    """Send ``sql`` as ``user``; return the gateway's request id."""
    with gateway.client(user) as http:
        return http.post("/v1/query", json={"target": "shop", "sql": sql}).headers["x-request-id"]


def test_filters_and_cursor_pages_return_the_right_records_newest_first(gateway: RunningGateway) -> None:
    """Requests made now come back through filters, newest first, across cursor pages, with nothing lost."""
    since = datetime.now(UTC).isoformat()  # same clock as the gateway: only this test's records follow
    ids = [_run(gateway, "reader", f"SELECT id FROM items WHERE id = {i}") for i in range(5)]
    denied_id = _run(gateway, "reader", "DELETE FROM items")
    writer_id = _run(gateway, "writer", "SELECT id FROM items WHERE id = 1")
    seen: list[str] = []
    params: dict[str, str | int] = {"user": "reader@example.com", "event": "decision", "since": since, "limit": 2}
    with gateway.client("admin") as auditor:
        for _ in range(10):
            reply = auditor.get("/v1/audit", params=params)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert len(body["entries"]) <= 2
            seen += [e["request_id"] for e in body["entries"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
        denied = auditor.get("/v1/audit", params={"decision": "deny", "code": "forbidden", "since": since}).json()
        text = auditor.get("/v1/audit", params={"q": "delete from ITEMS", "since": since}).json()
        by_id = auditor.get("/v1/audit", params={"request_id": writer_id}).json()
    assert seen == [denied_id, *reversed(ids)]
    assert [e["request_id"] for e in denied["entries"]] == [denied_id]
    assert [e["request_id"] for e in text["entries"]] == [denied_id]
    assert {(e["event"], e["user"]) for e in by_id["entries"]} == {
        ("decision", "writer@example.com"),
        ("outcome", "writer@example.com"),
    }
    assert all({"seq", "prev_hash", "hash"} <= e.keys() for e in by_id["entries"])


def test_bad_filters_are_invalid_requests(gateway: RunningGateway) -> None:
    """A cursor that is not ours, an unreadable time, or since after until: 422 problem+json."""
    with gateway.client("admin") as auditor:
        for params in ({"cursor": "bogus"}, {"since": "yesterday"}, {"since": "2026-02-01", "until": "2026-01-01"}):
            reply = auditor.get("/v1/audit", params=params)
            assert reply.status_code == 422, params
            assert reply.json()["code"] == "invalid_request"


@pytest.mark.parametrize("params", [{"until": "0.5"}, {"since": "1700000000"}, {"since": " -1e3 "}])
def test_times_are_iso_8601_not_unix_seconds(gateway: RunningGateway, params: dict[str, str]) -> None:
    """A bare number for since/until is refused (422), not read as seconds since 1970 (found by schemathesis)."""
    with gateway.client("admin") as auditor:
        reply = auditor.get("/v1/audit", params=params)
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "invalid_request"
    assert "ISO 8601" in reply.json()["detail"]


@pytest.mark.parametrize("params", [{"since": "0001-01-01T00:00:00+01:00"}, {"until": "9999-12-31T23:59:59-01:00"}])
def test_times_outside_the_utc_range_are_invalid_requests(gateway: RunningGateway, params: dict[str, str]) -> None:
    """A time that leaves years 1-9999 once moved to UTC is 422, not 503 audit_unavailable (it is the caller's)."""
    with gateway.client("admin") as auditor:
        reply = auditor.get("/v1/audit", params=params)
    assert reply.status_code == 422, reply.text
    assert "years 1-9999" in reply.json()["detail"]


def test_verify_head_seq_past_64_bits_is_an_invalid_request(gateway: RunningGateway) -> None:
    """head_seq over 2**63 - 1 is 422; it used to reach the audit record of the read and fail as a 500."""
    with gateway.client("admin") as auditor:
        reply = auditor.get("/v1/audit/verify", params={"head_seq": str(10**30), "head_hash": "0" * 64})
    assert reply.status_code == 422, reply.text
    assert reply.json()["code"] == "invalid_request"


def test_limit_is_capped(gateway: RunningGateway) -> None:
    """A limit over the cap is served at the cap (500)."""
    with gateway.client("admin") as auditor:
        body = auditor.get("/v1/audit", params={"limit": 100_000}).json()
    assert body["limit"] == 500
    assert len(body["entries"]) <= 500


def test_reading_the_audit_log_is_itself_audited(gateway: RunningGateway) -> None:
    """Each audit read leaves an audit_read record naming the auditor and the filters, before the answer."""
    with gateway.client("admin") as auditor:
        looked = auditor.get("/v1/audit", params={"user": "someone@example.com"})
        body = auditor.get("/v1/audit", params={"request_id": looked.headers["x-request-id"]}).json()
    (entry,) = body["entries"]
    assert entry["event"] == "audit_read"
    assert entry["user"] == "admin@example.com"
    assert entry["filters"]["user"] == "someone@example.com"


def test_verify_endpoint_reports_a_clean_chain(gateway: RunningGateway) -> None:
    """The verify endpoint walks the whole chain and reports ok, the count and the head."""
    with gateway.client("admin") as auditor:
        body = auditor.get("/v1/audit/verify").json()
        assert body["ok"], body["problems"]
        assert body["count"] == body["head_seq"] > 0
        anchored = auditor.get(
            "/v1/audit/verify", params={"head_seq": body["head_seq"], "head_hash": body["head_hash"]}
        ).json()
        assert anchored["ok"]
        wrong = auditor.get("/v1/audit/verify", params={"head_seq": body["head_seq"], "head_hash": "f" * 64}).json()
    assert not wrong["ok"]
    assert "hash differs from the shipped head" in wrong["problems"][-1]
