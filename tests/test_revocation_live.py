"""Hot reload and immediate revocation across two replicas sharing a policies directory."""

from __future__ import annotations

import json
import threading
import time

from adminfixture import Replicas, edit, replicas

__all__ = ["replicas"]

# About 10^12 row combinations: runs far past any test unless cancelled.
HEAVY = "SELECT COUNT(*) FROM items a, items b, items c, items d WHERE a.price + b.price + c.price > d.price"


def _wait_for(check, within: float) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_broken_file_by_hand_keeps_last_good_policy(replicas: Replicas):
    """A broken file written by hand: both replicas keep the last good policy, /readyz and metrics show it."""
    directory = replicas.first.settings.policies_dir
    broken = directory / "zz-broken.yaml"
    with replicas.first.client("admin") as http:
        revision = http.get("/v1/policy").json()["revision"]
    broken.write_text("version: 1\ngrants:\n  - name: [unclosed\n", encoding="utf-8")
    try:
        for gateway in (replicas.first, replicas.second):
            with gateway.client("admin") as http, gateway.client("reader") as reader:

                def failed(http=http) -> bool:
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


def test_revocation_cancels_in_flight_statements_on_the_other_replica(replicas: Replicas):
    """Revoking through replica 1 cancels the user's running query on replica 2 and refuses their next one."""
    outcome: dict[str, object] = {}

    def heavy() -> None:
        with replicas.second.client("reader") as http:
            started = time.monotonic()
            reply = http.post("/v1/query", json={"target": "shop", "sql": HEAVY})
            outcome["status"], outcome["body"], outcome["ended"] = reply.status_code, reply.json(), time.monotonic()
            outcome["request_id"] = reply.headers["x-request-id"]
            outcome["took"] = outcome["ended"] - started

    worker = threading.Thread(target=heavy)
    worker.start()
    with replicas.second.client("admin") as http:
        # The statement is running on replica 2 once its pool shows a connection in use.
        assert _wait_for(lambda: 'gateway_pool_in_use{pool="shop/' in http.get("/metrics").text and _busy(http), 10)
    with replicas.first.client("admin") as http:
        reply = edit(http, "POST", "/v1/revocations", json={"subject": "group:analysts", "reason": "test"})
        assert reply.status_code == 201, reply.text
        revoked_at = time.monotonic()
        try:
            worker.join(timeout=20)
            assert not worker.is_alive()
            assert outcome["status"] == 403
            assert outcome["body"]["code"] == "revoked"
            # Ended by the revocation (within the 1 s poll plus the kill), not by its 60 s timeout.
            assert outcome["ended"] - revoked_at < 5
            with replicas.second.client("reader") as reader:
                nxt = reader.post("/v1/query", json={"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"})
                assert (nxt.status_code, nxt.json()["code"]) == (403, "revoked")
            # One shared audit log: the revocation (made on replica 1) and the cancelled query (on
            # replica 2) are both there when read through either replica, and the chain verifies.
            for replica in (replicas.first, replicas.second):
                with replica.client("admin") as auditor:

                    def heavy() -> list[dict[str, object]]:
                        return auditor.get("/v1/audit", params={"request_id": outcome["request_id"]}).json()["entries"]

                    # The kill's own record is written once KILL returns, which may be after the reply.
                    assert _wait_for(lambda: len(heavy()) == 3, 5)
                    heavy_records = heavy()
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


def test_revoked_transaction_is_rolled_back(replicas: Replicas):
    """A writer's open transaction is killed by a revocation: its insert never commits."""
    db = replicas.first.db
    outcome: dict[str, object] = {}
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

    worker = threading.Thread(target=txn)
    worker.start()
    with replicas.second.client("admin") as http:
        assert _wait_for(lambda: _busy(http), 10)
    with replicas.first.client("admin") as http:
        reply = edit(http, "POST", "/v1/revocations", json={"subject": "user:writer@example.com", "target": "shop"})
        assert reply.status_code == 201, reply.text
        try:
            worker.join(timeout=20)
            assert not worker.is_alive()
            assert (outcome["status"], outcome["body"]["code"]) == (403, "revoked")
        finally:
            assert edit(http, "DELETE", "/v1/revocations/user:writer@example.com").status_code == 200
    from conftest import root_query  # noqa: PLC0415

    assert root_query(f"SELECT COUNT(*) FROM `{db.name}`.orders WHERE note = %s", (marker,)) == [(0,)]


def _busy(http) -> bool:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("gateway_pool_in_use{") and not line.endswith(" 0.0"):
            return True
    return False


def test_revocation_cancels_a_running_stream(replicas: Replicas):
    """A streamed (NDJSON) statement is in flight too: a revocation ends it as `revoked`.

    MariaDB sends this aggregate's column header only with its row, so the
    statement is cancelled before the stream starts: the answer is a 403
    problem (once the header is out it would be an error line instead).
    """
    lines: list[dict] = []
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
    with replicas.second.client("admin") as http:
        assert _wait_for(lambda: _busy(http), 10)
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
            assert [e["code"] for e in records["entries"]] == ["revoked"]
        finally:
            lifted = edit(http, "DELETE", "/v1/revocations/group:analysts")
            assert lifted.status_code == 200, lifted.text
