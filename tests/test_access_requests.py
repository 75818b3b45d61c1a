"""Access requests: ask, list, approve (writes a time-boxed grant), deny, expire; every step audited."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from adminfixture import Replicas, edit, replicas
from conftest import RunningGateway

from gateway.errors import Conflict
from gateway.policy.requests import AccessRequestStore

__all__ = ["replicas"]


def _ask(gateway: RunningGateway, user: str = "nobody", **body: object) -> dict[str, Any]:
    payload = {"target": "shop", "access": "read", "duration": "4h", "reason": "ticket 7: debug an order"} | body
    with gateway.client(user) as http:
        reply = http.post("/v1/access-requests", json=payload)
    assert reply.status_code == 201, reply.text
    item: dict[str, Any] = reply.json()
    return item


@pytest.mark.parametrize("path", ["/approve", "/deny"])
def test_decisions_need_admin_and_a_token(replicas: Replicas, path: str) -> None:
    """Approve and deny: 401 without a token, 403 for a non-admin (even the requester)."""
    item = _ask(replicas.first)
    url = f"/v1/access-requests/{item['id']}{path}"
    with replicas.first.client(None) as anonymous:
        assert anonymous.post(url, json={"reason": "x"}).status_code == 401
        assert anonymous.get("/v1/access-requests").status_code == 401
        assert anonymous.post("/v1/access-requests", json={}).status_code == 401
    for user in ("nobody", "reader"):
        with replicas.first.client(user) as http:
            reply = http.post(url, json={"reason": "x"})
        assert (reply.status_code, reply.json()["code"]) == (403, "forbidden")


def test_approval_writes_an_attributed_time_boxed_grant(replicas: Replicas) -> None:
    """An admin on replica 2 approves; the grant (expiring after the duration) works on replica 1 too."""
    item = _ask(replicas.first)
    assert item["state"] == "pending"
    with replicas.first.client("nobody") as http:
        mine = http.get("/v1/access-requests").json()["requests"]
        assert {r["id"] for r in mine} >= {item["id"]}
        assert {r["requester"] for r in mine} == {"nobody@example.com"}
    with replicas.first.client("reader") as http:
        assert item["id"] not in {r["id"] for r in http.get("/v1/access-requests").json()["requests"]}
    with replicas.second.client("admin") as http:
        pending = http.get("/v1/access-requests", params={"state": "pending"}).json()["requests"]
        assert item["id"] in {r["id"] for r in pending}
        reply = http.post(f"/v1/access-requests/{item['id']}/approve", json={})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        again = http.post(f"/v1/access-requests/{item['id']}/approve", json={})
        assert (again.status_code, again.json()["code"]) == (409, "conflict")
    assert body["request"]["state"] == "approved"
    assert body["request"]["decided_by"] == "admin@example.com"
    expires = datetime.fromisoformat(body["grant"]["expires"])
    assert timedelta(hours=3, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=4)
    managed = (replicas.first.settings.policies_dir / "managed.yaml").read_text(encoding="utf-8")
    assert f"# access request {item['id']} by nobody@example.com, approved by admin@example.com" in managed
    with replicas.first.client("nobody") as http:
        deadline = datetime.now(UTC) + timedelta(seconds=3)
        while True:
            me = http.get("/v1/me").json()
            if any(g["name"] == item["id"] for g in me["grants"]) or datetime.now(UTC) > deadline:
                break
            time.sleep(0.05)
        assert any(g["name"] == item["id"] for g in me["grants"])
        reply = http.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["grant"] == item["id"]
        assert http.get("/v1/access-requests").json()["requests"][0]["state"] == "approved"
    with replicas.first.client("admin") as http:
        assert edit(http, "DELETE", f"/v1/grants/{item['id']}").status_code == 200
    # One shared audit log: every step, whichever replica took it, read through either replica.
    for replica in (replicas.first, replicas.second):
        assert [e["action"] for e in _events(replica, item["id"])] == ["create", "grant_add", "approve"]


def test_nobody_approves_their_own_request(replicas: Replicas) -> None:
    """An admin's own request cannot be approved (or denied) by that admin; each refusal is a recorded denial."""
    item = _ask(replicas.first, "admin")
    with replicas.first.client("admin") as http:
        reply = http.post(f"/v1/access-requests/{item['id']}/approve", json={})
        denial = http.post(f"/v1/access-requests/{item['id']}/deny", json={"reason": "tidy up"})
    for answer in (reply, denial):
        assert (answer.status_code, answer.json()["code"]) == (403, "forbidden")
        assert "own" in answer.json()["detail"]
    with replicas.first.client("admin") as auditor:  # admin@example.com is also an auditor in the test policy
        entries = auditor.get("/v1/audit", params={"event": "decision", "limit": 500}).json()["entries"]
    refused = sorted(
        (e["route"], e["decision"], e["code"], e["user"]) for e in entries if e.get("access_request") == item["id"]
    )
    assert refused == [
        (f"POST /v1/access-requests/{item['id']}/{action}", "deny", "forbidden", "admin@example.com")
        for action in ("approve", "deny")
    ]


def test_deny_needs_a_reason_and_ends_the_request(replicas: Replicas) -> None:
    """A denial without a reason is refused; with one, the request is denied and cannot be approved."""
    item = _ask(replicas.first)
    url = f"/v1/access-requests/{item['id']}"
    with replicas.first.client("admin") as http:
        assert http.post(f"{url}/deny", json={}).status_code == 422
        denied = http.post(f"{url}/deny", json={"reason": "use the replica"})
        assert denied.status_code == 200, denied.text
        assert denied.json()["request"]["state"] == "denied"
        assert http.post(f"{url}/approve", json={}).status_code == 409
    with replicas.first.client("nobody") as http:
        states = {r["id"]: r["state"] for r in http.get("/v1/access-requests").json()["requests"]}
    assert states[item["id"]] == "denied"


def test_bad_requests_are_refused(replicas: Replicas) -> None:
    """Unknown target: 404; bad access level or duration (or over the maximum): 422."""
    with replicas.first.client("nobody") as http:
        base = {"target": "shop", "access": "read", "duration": "4h", "reason": "r"}
        assert http.post("/v1/access-requests", json=base | {"target": "nope"}).status_code == 404
        for bad in ({"access": "root"}, {"duration": "soon"}, {"duration": "30d"}, {"reason": ""}):
            reply = http.post("/v1/access-requests", json=base | bad)
            assert (reply.status_code, reply.json()["code"]) == (422, "invalid_request"), bad


def test_pending_requests_expire(tmp_path: Path) -> None:
    """Past its TTL a pending request shows as expired and can no longer be approved."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = AccessRequestStore(tmp_path / "ar.db", ttl=3600, clock=lambda: now[0])
    try:
        item = store.create("eve@example.com", "shop", "read", 3600, "r", person=("https://idp", "eve"))
        now[0] += timedelta(seconds=3599)
        assert store.get(item["id"])["state"] == "pending"
        now[0] += timedelta(seconds=1)
        assert store.get(item["id"])["state"] == "expired"
        assert [r["id"] for r in store.list(state="expired")] == [item["id"]]
        with pytest.raises(Conflict, match="expired"):
            store.decide(item["id"], by="admin@example.com", state="approved", reason=None, grant_name=None)
    finally:
        store.close()


def test_a_store_from_before_persons_gains_the_columns(tmp_path: Path) -> None:
    """A database made before requests stored the person opens; its old rows have no person, new rows do."""
    old_columns = "id, requester, target, access, duration_s, reason, state, created_at, expires_at"
    with sqlite3.connect(tmp_path / "ar.db") as conn:
        conn.execute(
            "CREATE TABLE access_requests (id TEXT PRIMARY KEY, requester TEXT NOT NULL, target TEXT NOT NULL, "
            "access TEXT NOT NULL, duration_s REAL NOT NULL, reason TEXT NOT NULL, state TEXT NOT NULL, "
            "created_at TEXT NOT NULL, expires_at TEXT NOT NULL, decided_by TEXT, decided_at TEXT, "
            "decision_reason TEXT, grant_name TEXT)"
        )
        conn.execute(
            f"INSERT INTO access_requests ({old_columns}) VALUES "
            "('ar-old', 'Old@Example.com', 'shop', 'read', 60, 'r', 'pending', '2026-01-01', '2999-01-01')"
        )
    store = AccessRequestStore(tmp_path / "ar.db", ttl=3600)
    try:
        old = store.get("ar-old")
        assert (old["requester_issuer"], old["requester_sub"]) == (None, None)
        new = store.create("new@example.com", "shop", "read", 60, "r", person=("https://idp", "n1"))
        assert (new["requester_issuer"], new["requester_sub"]) == ("https://idp", "n1")
        assert [r["id"] for r in store.list(person=("https://idp", "n1"))] == [new["id"]]
        assert [r["id"] for r in store.list(requester="Old@Example.com")] == ["ar-old"]
    finally:
        store.close()


def _events(gateway: RunningGateway, request_id: str) -> list[dict[str, Any]]:
    """The access request's audit records, oldest first, read through the auditor API."""
    entries: list[dict[str, Any]] = []
    with gateway.client("admin") as auditor:  # admin@example.com is also an auditor in the test policy
        for event in ("access_request", "policy_edit"):
            page = auditor.get("/v1/audit", params={"event": event, "limit": 500}).json()
            entries += page["entries"]
    return sorted((e for e in entries if e.get("access_request") == request_id), key=lambda e: e["seq"])
