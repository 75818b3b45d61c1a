"""The audit trail of real requests: decision before execution, outcome after, fail closed."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conftest import RunningGateway, ScratchDatabase, gateway_settings, root_query, start_gateway, stop_gateway
from oidcfixture import OidcProvider

from gateway.audit.fake import MemoryAuditStore
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.verify import verify


def broken_store() -> MemoryAuditStore:
    """An audit store failing every write (a disk that went away)."""
    return MemoryAuditStore(failing=OSError("disk gone"))


class HeldOutcomes:
    """Outcome writes wait for ``release``; ``holding`` is set once one waits."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()

    def __call__(self, records: Sequence[Mapping[str, object]]) -> None:
        if any(r["event"] == "outcome" for r in records):
            self.holding.set()
            assert self.release.wait(20)


def _records(gateway: RunningGateway, request_id: str) -> list[dict[str, Any]]:
    gateway.audit_settled()
    store = SQLiteAuditStore(gateway.settings.audit.path)
    try:
        return [e for e in store.iter_entries() if e.get("request_id") == request_id]
    finally:
        store.close()


def test_decision_then_outcome_records(gateway: RunningGateway) -> None:
    """An allowed query leaves a decision record (allow, grant, tables, revision) then an outcome."""
    with gateway.client("reader") as http:
        reply = http.post(
            "/v1/query",
            json={"target": "shop", "sql": "SELECT id FROM items WHERE id < 4"},
            headers={"X-Request-ID": "audit-pair"},
        )
    decision, outcome = _records(gateway, reply.headers["x-request-id"])
    assert decision["client_request_id"] == outcome["client_request_id"] == "audit-pair"
    assert decision["event"] == "decision"
    assert decision["decision"] == "allow"
    assert decision["grant"] == "analysts-read"
    assert decision["user"] == "reader@example.com"
    assert decision["tables"] == [f"{gateway.db.name}.items"]
    assert decision["policy_revision"]
    assert decision["statement"] == "SELECT id FROM items WHERE id < 4"
    assert outcome["event"] == "outcome"
    assert outcome["code"] == "ok"
    assert outcome["rows"] == 3
    assert outcome["seq"] > decision["seq"]


def test_denial_recorded(gateway: RunningGateway) -> None:
    """A denied statement is recorded with its code and reason, and no outcome follows."""
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": "DELETE FROM items"})
    (record,) = _records(gateway, reply.headers["x-request-id"])
    assert record["decision"] == "deny"
    assert record["code"] == "forbidden"


def test_role_refusals_recorded(gateway: RunningGateway) -> None:
    """A call refused for want of the admin or auditor role leaves a deny decision naming the role and the route."""
    with gateway.client("reader") as http:
        policy = http.get("/v1/policy")
        audit = http.get("/v1/audit")
    assert (policy.status_code, audit.status_code) == (403, 403)
    (admin,) = _records(gateway, policy.headers["x-request-id"])
    (auditor,) = _records(gateway, audit.headers["x-request-id"])
    assert (admin["event"], admin["decision"], admin["code"]) == ("decision", "deny", "forbidden")
    assert (admin["reason"], admin["route"], admin["user"]) == (
        "the admin role is required",
        "GET /v1/policy",
        "reader@example.com",
    )
    assert (auditor["reason"], auditor["route"]) == ("the auditor role is required", "GET /v1/audit")


def test_chain_verifies(gateway: RunningGateway) -> None:
    """After the session's traffic so far, the audit log's hash chain verifies."""
    with gateway.client("reader") as http:
        http.get("/v1/me")
        http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
    gateway.audit_settled()
    store = SQLiteAuditStore(gateway.settings.audit.path)
    try:
        result = verify(store)
    finally:
        store.close()
    assert result.ok, result.problems
    assert result.count > 0


def test_audit_unavailable_means_nothing_runs(tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase) -> None:
    """With an audit store that cannot write, a write is refused with 503 and never reaches MariaDB."""
    settings = gateway_settings(tmp_path, idp, test_db)
    running = start_gateway(settings, idp, test_db, audit_store=broken_store)
    try:
        with running.client("writer") as http:
            reply = http.post(
                "/v1/query",
                json={
                    "target": "shop",
                    "sql": "INSERT INTO orders (customer_id, item_id, quantity, ordered_at, note) "
                    "VALUES (1, 1, 1, NOW(), 'unaudited')",
                },
            )
        with running.client("admin") as http:
            ready = http.get("/readyz")
    finally:
        stop_gateway(running)
    # Reported, not gating: the store is shared, so pulling this replica would help nobody.
    assert ready.status_code == 200
    assert ready.json()["checks"]["audit"] == {"ok": False, "required": False, "last_error": "OSError: disk gone"}
    assert reply.status_code == 503
    assert reply.json()["code"] == "audit_unavailable"
    assert "retry-after" in reply.headers
    assert root_query(f"SELECT COUNT(*) FROM `{test_db.name}`.orders WHERE note = 'unaudited'") == [(0,)]


def _held_query(tmp_path: Path, idp: OidcProvider, test_db: Any, *, await_outcome: bool) -> tuple[bool, int]:
    """Send a query while the store holds outcome writes; say whether the reply came while held."""
    settings = gateway_settings(
        tmp_path, idp, test_db, audit={"path": tmp_path / "audit.db", "await_outcome": await_outcome}
    )
    held = HeldOutcomes()
    store = MemoryAuditStore(before_write=held)
    running = start_gateway(settings, idp, test_db, audit_store=lambda: store)
    try:
        with running.client("reader") as http, concurrent.futures.ThreadPoolExecutor(1) as pool:
            reply = pool.submit(http.post, "/v1/query", json={"target": "shop", "sql": "SELECT id FROM items"})
            assert held.holding.wait(20)
            try:
                answered_while_held = reply.result(timeout=2).status_code == 200
            except concurrent.futures.TimeoutError:
                answered_while_held = False
            held.release.set()
            assert reply.result(timeout=20).status_code == 200
        running.audit_settled()
        outcomes = [e for e in store.iter_entries() if e["event"] == "outcome"]
    finally:
        held.release.set()
        stop_gateway(running)
    return answered_while_held, len(outcomes)


def test_reply_does_not_wait_for_the_outcome_record(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase
) -> None:
    """By default the reply leaves while the outcome record is still being written; the record lands after."""
    answered_while_held, outcomes = _held_query(tmp_path, idp, test_db, await_outcome=False)
    assert answered_while_held
    assert outcomes == 1


def test_await_outcome_makes_the_reply_wait(tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase) -> None:
    """With audit.await_outcome the reply waits until the outcome record is committed."""
    answered_while_held, outcomes = _held_query(tmp_path, idp, test_db, await_outcome=True)
    assert not answered_while_held
    assert outcomes == 1
