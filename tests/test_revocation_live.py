"""Hot reload and immediate revocation across two replicas sharing a policies directory."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from adminfixture import Replicas, edit, replicas
from conftest import RunningGateway, root_query

__all__ = ["replicas"]

# About 10^12 row combinations: runs far past any test unless cancelled (the replicas' grants allow 60 s).
HEAVY = "SELECT COUNT(*) FROM items a, items b, items c, items d WHERE a.price + b.price + c.price > d.price"
RUNNING_BOUND = 20.0  # seconds for a statement to show as running in MariaDB


def _wait_for(check: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _heavy_running(gateway: RunningGateway, level: str) -> bool:
    """Whether MariaDB is running HEAVY for ``level``'s account now (its processlist, not the gateway's view)."""
    rows = root_query(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s AND db = %s AND command = 'Query'"
        " AND info LIKE %s",
        (gateway.db.accounts[level].user, gateway.db.name, "%WHERE a.price + b.price + c.price > d.price%"),
    )
    return int(rows[0][0]) > 0


def _cancels(auditor: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    """The ``revocation_cancel`` records of one request, read through the audit API."""
    reply = auditor.get("/v1/audit", params={"request_id": request_id, "event": "revocation_cancel"})
    entries: list[dict[str, Any]] = reply.json()["entries"]
    return entries


def test_broken_file_by_hand_keeps_last_good_policy(replicas: Replicas) -> None:
    """A broken file written by hand: both replicas keep the last good policy, /readyz and metrics show it."""
    directory = replicas.first.settings.policies_dir
    broken = directory / "zz-broken.yaml"
    with replicas.first.client("admin") as http:
        revision = http.get("/v1/policy").json()["revision"]
    broken.write_text("version: 1\ngrants:\n  - name: [unclosed\n", encoding="utf-8")
    try:
        for gateway in (replicas.first, replicas.second):
            with gateway.client("admin") as http, gateway.client("reader") as reader:

                def failed(http: httpx.Client = http) -> bool:
                    return http.get("/readyz").json()["checks"]["policies"]["last_reload_error"] is not None

                assert _wait_for(failed, 3)
                error = http.get("/readyz").json()["checks"]["policies"]["last_reload_error"]
                assert "zz-broken.yaml:4: invalid YAML" in error
                metrics = http.get("/metrics").text
                assert "gateway_policy_reload_failed 1.0" in metrics
                assert "gateway_policy_reload_failures_total" in metrics
                reply = reader.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"})
                assert reply.status_code == 200
        with replicas.first.client("admin") as http:
            assert http.get("/v1/policy").json()["revision"] == revision
            refused = edit(http, "POST", "/v1/revocations", json={"subject": "user:nobody@example.com"})
            assert (refused.status_code, refused.json()["code"]) == (412, "precondition_failed")
    finally:
        broken.unlink()
    with replicas.second.client("admin") as http:
        assert _wait_for(lambda: http.get("/readyz").json()["checks"]["policies"]["last_reload_error"] is None, 3)
        assert "gateway_policy_reload_failed 0.0" in http.get("/metrics").text


def test_revocation_cancels_in_flight_statements_on_the_other_replica(replicas: Replicas) -> None:
    """Revoking through replica 1 cancels the user's running query on replica 2 and refuses their next one."""
    outcome: dict[str, Any] = {}

    def heavy() -> None:
        with replicas.second.client("reader") as http:
            reply = http.post("/v1/query", json={"target": "shop", "sql": HEAVY})
            outcome["status"], outcome["body"] = reply.status_code, reply.json()
            outcome["request_id"] = reply.headers["x-request-id"]

    worker = threading.Thread(target=heavy)
    worker.start()
    # Revoke only once MariaDB itself runs the statement (a revocation before it would refuse, not cancel).
    assert _wait_for(lambda: _heavy_running(replicas.second, "reader"), RUNNING_BOUND)
    with replicas.first.client("admin") as http:
        reply = edit(http, "POST", "/v1/revocations", json={"subject": "group:analysts", "reason": "test"})
        assert reply.status_code == 201, reply.text
        try:
            worker.join(timeout=20)  # the statement would run for 60 s: ended early, by the revocation
            assert not worker.is_alive()
            assert outcome["status"] == 403
            assert outcome["body"]["code"] == "revoked"
            # KILL QUERY sets a flag MariaDB checks as it goes: wait (bounded) for the statement to end.
            assert _wait_for(lambda: not _heavy_running(replicas.second, "reader"), 10)
            with replicas.second.client("reader") as reader:
                nxt = reader.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"})
                assert (nxt.status_code, nxt.json()["code"]) == (403, "revoked")
            # One shared audit log: the revocation (made on replica 1) and the cancelled query (on
            # replica 2) are both there when read through either replica, and the chain verifies.
            for replica in (replicas.first, replicas.second):
                with replica.client("admin") as auditor:

                    def records(auditor: httpx.Client = auditor) -> list[dict[str, Any]]:
                        entries: list[dict[str, Any]] = auditor.get(
                            "/v1/audit", params={"request_id": outcome["request_id"]}
                        ).json()["entries"]
                        return entries

                    # The kill's own record is written once KILL returns, which may be after the reply.
                    assert _wait_for(lambda: len(records()) == 3, 5)
                    heavy_records = records()
                    assert {(e["event"], e["code"]) for e in heavy_records} == {
                        ("decision", "allowed"),
                        ("revocation_cancel", "revoked"),
                        ("outcome", "revoked"),
                    }
                    (cancel,) = [e for e in heavy_records if e["event"] == "revocation_cancel"]
                    assert (cancel["action"], cancel["killed"], cancel["user"]) == (
                        "KILL QUERY",
                        True,
                        "reader@example.com",
                    )
                    edits = auditor.get("/v1/audit", params={"request_id": reply.headers["x-request-id"]}).json()
                    assert [e["event"] for e in edits["entries"]] == ["policy_edit"]
                    verified = auditor.get("/v1/audit/verify").json()
                    assert verified["ok"], verified["problems"]
        finally:
            lifted = edit(http, "DELETE", "/v1/revocations/group:analysts")
            assert lifted.status_code == 200, lifted.text


def test_revoked_transaction_is_rolled_back(replicas: Replicas) -> None:
    """A writer's open transaction is killed by a revocation: its insert never commits."""
    db = replicas.first.db
    outcome: dict[str, Any] = {}
    marker = f"txn-{time.monotonic_ns()}"

    def txn() -> None:
        with replicas.second.client("writer") as http:
            reply = http.post(
                "/v1/transaction",
                json={
                    "target": "shop",
                    "statements": [
                        {
                            "sql": "INSERT INTO orders (customer_id, item_id, quantity, ordered_at, note) "
                            "VALUES (1, 1, 1, NOW(), ?)",
                            "params": [marker],
                        },
                        {"sql": HEAVY.replace("COUNT(*)", "COUNT(*) AS n")},
                    ],
                },
            )
            outcome["status"], outcome["body"] = reply.status_code, reply.json()
            outcome["request_id"] = reply.headers["x-request-id"]

    worker = threading.Thread(target=txn)
    worker.start()
    # The INSERT has run and the transaction's second statement is running in MariaDB: then revoke.
    assert _wait_for(lambda: _heavy_running(replicas.second, "writer"), RUNNING_BOUND)
    with replicas.first.client("admin") as http:
        reply = edit(http, "POST", "/v1/revocations", json={"subject": "user:writer@example.com", "target": "shop"})
        assert reply.status_code == 201, reply.text
        try:
            worker.join(timeout=20)
            assert not worker.is_alive()
            assert (outcome["status"], outcome["body"]["code"]) == (403, "revoked")
        finally:
            assert edit(http, "DELETE", "/v1/revocations/user:writer@example.com").status_code == 200
    with replicas.first.client("admin") as auditor:  # the transaction was killed, not refused before it ran
        assert _wait_for(lambda: len(_cancels(auditor, outcome["request_id"])) == 1, 5)
        (cancel,) = _cancels(auditor, outcome["request_id"])
    assert (cancel["killed"], cancel["user"]) == (True, "writer@example.com")
    assert root_query(f"SELECT COUNT(*) FROM `{db.name}`.orders WHERE note = %s", (marker,)) == [(0,)]


def test_revocation_cancels_a_running_stream(replicas: Replicas) -> None:
    """A streamed (NDJSON) statement is in flight too: a revocation ends it as `revoked`.

    MariaDB sends this aggregate's column header only with its row, so the
    statement is cancelled before the stream starts: the answer is a 403
    problem (once the header is out it would be an error line instead).
    """
    lines: list[dict[str, Any]] = []
    ids: list[str] = []

    def stream() -> None:
        with (
            replicas.second.client("reader") as http,
            http.stream(
                "POST",
                "/v1/query",
                json={"target": "shop", "sql": HEAVY},
                headers={"Accept": "application/x-ndjson"},
            ) as reply,
        ):
            ids.append(reply.headers["x-request-id"])
            lines.extend(json.loads(line) for line in reply.iter_lines() if line)
            lines.append({"status": reply.status_code})

    worker = threading.Thread(target=stream)
    worker.start()
    assert _wait_for(lambda: _heavy_running(replicas.second, "reader"), RUNNING_BOUND)
    with replicas.first.client("admin") as http:
        reply = edit(http, "POST", "/v1/revocations", json={"subject": "group:analysts", "reason": "stream test"})
        assert reply.status_code == 201, reply.text
        try:
            worker.join(timeout=20)
            assert not worker.is_alive(), lines
            *body, status = lines
            if status["status"] == 200:
                assert body[0]["type"] == "header"
                assert (body[-1]["type"], body[-1]["code"]) == ("error", "revoked")
            else:
                assert (status["status"], body[0]["code"]) == (403, "revoked")
            with replicas.first.client("admin") as auditor:
                records = auditor.get("/v1/audit", params={"request_id": ids[0], "event": "outcome"}).json()
                assert _wait_for(lambda: len(_cancels(auditor, ids[0])) == 1, 5)
                (cancel,) = _cancels(auditor, ids[0])
            assert [e["code"] for e in records["entries"]] == ["revoked"]
            assert (cancel["killed"], cancel["user"]) == (True, "reader@example.com")
        finally:
            lifted = edit(http, "DELETE", "/v1/revocations/group:analysts")
            assert lifted.status_code == 200, lifted.text
