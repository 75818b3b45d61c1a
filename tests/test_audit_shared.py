"""Three gateway replicas sharing the MariaDB audit store: a chain each, signed checkpoints, one log to read."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
from auditfixture import audit_db, audit_root_query
from chainsfixture import checkpoint_settings, new_key
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider

from gateway.settings import AuditDatabaseSettings

__all__ = ["audit_db"]

NAMES = ("one", "two", "three")
PER_REPLICA = 6


def _send(replica: RunningGateway, name: str) -> dict[str, str]:
    """Six queries through ``replica``; return the caller's ids -> the gateway's own."""
    ids: dict[str, str] = {}
    with replica.client("reader") as http:
        for i in range(PER_REPLICA):
            reply = http.post(
                "/v1/query",
                json={"target": "shop", "sql": "SELECT id FROM items WHERE id < 3"},
                headers={"X-Request-ID": f"{name}-{i}"},
            )
            assert reply.status_code == 200, reply.text
            ids[f"{name}-{i}"] = reply.headers["x-request-id"]
    return ids


def _checkpointed(database: str, heads: dict[str, int]) -> bool:
    """Whether some checkpoint names every chain at least at the given seq."""
    rows = audit_root_query(f"SELECT body FROM `{database}`.audit_checkpoints ORDER BY id DESC LIMIT 10")
    for (body,) in rows:
        named = orjson.loads(body)["heads"]
        if all(chain in named and named[chain][0] >= seq for chain, seq in heads.items()):
            return True
    return False


def _verify(replica: RunningGateway) -> Any:
    with replica.client("admin") as auditor:
        reply = auditor.get("/v1/audit/verify")
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_three_gateways_share_one_verifiable_audit_log(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, audit_db: AuditDatabaseSettings
) -> None:
    """Three replicas each write their own chain and sign checkpoints; any of them lists and verifies all three.

    A removed chain and an edited record are then found through any replica.
    """
    key = new_key()
    checkpoints = checkpoint_settings(tmp_path, key, interval=0.05).model_dump()
    replicas = [
        start_gateway(
            gateway_settings(
                tmp_path / name,
                idp,
                test_db,
                audit={
                    "store": "mariadb",
                    "mariadb": audit_db.model_dump(),
                    "replica_id": name,
                    "checkpoints": checkpoints,
                    # Replica two's store runs in a child process (test_audit_process.py): one log either way.
                    "writer": "process" if name == "two" else "thread",
                },
            ),
            idp,
            test_db,
        )
        for name in NAMES
    ]
    try:
        assert [p.name for p in multiprocessing.active_children()].count("gateway-audit-store") == 1  # replica two's
        with ThreadPoolExecutor(3) as pool:  # all three replicas write at the same time
            sent = list(pool.map(_send, replicas, NAMES))
        gateway_ids = {k: v for ids in sent for k, v in ids.items()}
        expected = set(gateway_ids)
        # Each replica's chain holds at least its decisions and outcomes; wait for a checkpoint naming them all.
        deadline = time.monotonic() + 20
        while not _checkpointed(audit_db.database, dict.fromkeys(NAMES, 2 * PER_REPLICA)):
            assert time.monotonic() < deadline, "no checkpoint named every chain"
            time.sleep(0.05)

        for replica in replicas:
            with replica.client("admin") as auditor:
                body = auditor.get("/v1/audit", params={"user": "reader@example.com", "limit": 500}).json()
            decisions = [e for e in body["entries"] if e["event"] == "decision"]
            assert {e["client_request_id"] for e in decisions} == expected
            assert {e["chain"] for e in decisions} == set(NAMES)
            assert all(e["chain"] == e["client_request_id"].split("-")[0] for e in decisions)
            outcomes = {e["request_id"] for e in body["entries"] if e["event"] == "outcome"}
            assert outcomes == set(gateway_ids.values())
            verified = _verify(replica)
            assert verified["ok"], verified["problems"]
            assert set(verified["chains"]) == set(NAMES)
            assert verified["checkpoints"] >= 1
            assert verified["count"] == sum(c["count"] for c in verified["chains"].values()) >= 36

        # An edit made directly in the shared store is found through every replica.
        audit_root_query(
            f"UPDATE `{audit_db.database}`.audit_log SET record = REPLACE(record, 'one-3', 'one-9') "
            f"WHERE request_id = '{gateway_ids['one-3']}' AND event = 'decision'"
        )
        # So is a replica's chain removed with its head row (only a checkpoint remembers it).
        audit_root_query(f"DELETE FROM `{audit_db.database}`.audit_log WHERE chain = 'three'")
        audit_root_query(f"DELETE FROM `{audit_db.database}`.audit_chains WHERE chain = 'three'")
        for replica in replicas[:2]:
            problems = _verify(replica)["problems"]
            assert any(
                p.startswith("chain 'one': seq ") and p.endswith("hash does not match the record (record edited)")
                for p in problems
            ), problems
            assert any(p.startswith("chain 'three': missing, checkpoint #") for p in problems), problems
    finally:
        for replica in replicas:
            stop_gateway(replica)
