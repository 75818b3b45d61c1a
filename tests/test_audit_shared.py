"""Two gateway replicas sharing the MariaDB audit store: one log, one chain, readable through either."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from auditfixture import audit_db, audit_root_query
from conftest import gateway_settings, start_gateway, stop_gateway

__all__ = ["audit_db"]


def test_two_gateways_share_one_verifiable_audit_log(tmp_path, idp, test_db, audit_db):
    """Requests through both replicas all appear when the log is read through either; both chains verify."""
    replicas = [
        start_gateway(
            gateway_settings(
                tmp_path / name,
                idp,
                test_db,
                audit={"store": "mariadb", "mariadb": audit_db.model_dump(), "replica_id": name},
            ),
            idp,
            test_db,
        )
        for name in ("one", "two")
    ]
    try:
        ids = {0: [f"one-{i}" for i in range(8)], 1: [f"two-{i}" for i in range(8)]}
        gateway_ids: dict[str, str] = {}  # the caller's id -> the gateway's own

        def send(replica: int) -> None:
            with replicas[replica].client("reader") as http:
                for request_id in ids[replica]:
                    reply = http.post(
                        "/v1/query",
                        json={"target": "shop", "sql": "SELECT id FROM items WHERE id < 3"},
                        headers={"X-Request-ID": request_id},
                    )
                    assert reply.status_code == 200, reply.text
                    gateway_ids[request_id] = reply.headers["x-request-id"]

        with ThreadPoolExecutor(2) as pool:  # both replicas write at the same time
            list(pool.map(send, (0, 1)))

        expected = set(ids[0] + ids[1])
        for replica in replicas:
            with replica.client("admin") as auditor:
                body = auditor.get("/v1/audit", params={"user": "reader@example.com", "limit": 500}).json()
                seen = {e["client_request_id"] for e in body["entries"] if e["event"] == "decision"}
                assert seen == expected
                outcomes = {e["request_id"] for e in body["entries"] if e["event"] == "outcome"}
                assert outcomes == set(gateway_ids.values())
                verified = auditor.get("/v1/audit/verify").json()
                assert verified["ok"], verified["problems"]
                assert set(verified["chains"]) == {"one", "two"}
                assert verified["count"] == sum(c["head_seq"] for c in verified["chains"].values()) >= 32

        # An edit made directly in the shared store is found through either replica.
        audit_root_query(
            f"UPDATE `{audit_db.database}`.audit_log SET record = REPLACE(record, 'one-3', 'one-9') "
            f"WHERE request_id = '{gateway_ids['one-3']}' AND event = 'decision'"
        )
        for replica in replicas:
            with replica.client("admin") as auditor:
                verified = auditor.get("/v1/audit/verify").json()
            assert not verified["ok"]
            assert verified["problems"][0].startswith("chain 'one': seq ")
            assert "hash does not match the record (record edited)" in verified["problems"][0]
    finally:
        for replica in replicas:
            stop_gateway(replica)
