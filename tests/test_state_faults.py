"""The state store's faults through real gateways: an edit cut short mid-transaction, replicas starting together."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from conftest import RunningGateway, ScratchDatabase, free_port, gateway_settings, start_gateway, stop_gateway
from fastapi import FastAPI
from faultproxy import fault_proxy
from oidcfixture import OidcProvider
from statefixture import state_db, state_root_query

from gateway.audit.fake import MemoryAuditStore
from gateway.http.services import Services
from gateway.settings import ListenSettings, Settings, StateDatabaseSettings
from gateway.state.schema import LATEST, VERSION_TABLE
from gateway.state.store import StateStore

__all__ = ["state_db"]


def _wait_for(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _settings(tmp: Path, idp: OidcProvider, db: ScratchDatabase, store: StateDatabaseSettings) -> Settings:
    return gateway_settings(tmp, idp, db, state={"store": "mariadb", "mariadb": store.model_dump()})


def _other(settings: Settings, tmp: Path, name: str) -> Settings:
    """Another replica: its own port, audit file and scratch directory; the same base directory and store."""
    return settings.model_copy(
        update={
            "listen": ListenSettings(host="127.0.0.1", port=free_port()),
            "audit": settings.audit.model_copy(update={"path": tmp / f"audit-{name}.db"}),
            "admin": settings.admin.model_copy(update={"state_dir": tmp / f"state-{name}"}),
        }
    )


def _state(gateway: RunningGateway) -> StateStore:
    app = gateway.server.config.app
    assert isinstance(app, FastAPI)
    services = app.state.services
    assert isinstance(services, Services)
    assert services.state is not None
    return services.state


def _grant(name: str, db: ScratchDatabase) -> dict[str, Any]:
    return {
        "name": name,
        "subjects": ["user:nobody@example.com"],
        "target": "shop",
        "access": "read",
        "db_user": db.accounts["reader"].user,
    }


def _documents(store: StateDatabaseSettings) -> dict[str, bytes]:
    rows = state_root_query(f"SELECT name, content FROM `{store.database}`.policy_documents")
    return {str(name): bytes(content) for name, content in rows}


def _revision(store: StateDatabaseSettings) -> int:
    return int(state_root_query(f"SELECT revision FROM `{store.database}`.state_revision WHERE id = 1")[0][0])


def test_an_edit_cut_short_after_claiming_the_revision_leaves_nothing_and_holds_off_the_other_replica(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, state_db: StateDatabaseSettings
) -> None:
    """Replica A's edit dies at its audit write with the revision claimed: nothing of it is ever seen.

    While A's transaction is open, replica B's store view is unchanged and B's own edit waits on the revision
    row's lock; A's audit write then fails (503 audit_unavailable, from the gateway's audit log), its
    transaction is rolled back, and B's edit commits (201): the store holds B's grant and not A's.
    """
    held, release = threading.Event(), threading.Event()

    def hold(records: Sequence[Mapping[str, object]]) -> None:
        if any(r.get("event") == "policy_edit" for r in records):
            held.set()
            release.wait(30)
            raise OSError("the audit disk went away mid-edit")

    fake = MemoryAuditStore(before_write=hold)
    first_settings = _settings(tmp_path, idp, test_db, state_db)
    first = start_gateway(first_settings, idp, test_db, audit_store=lambda: fake)
    second: RunningGateway | None = None
    try:
        second = start_gateway(_other(first_settings, tmp_path, "b"), idp, test_db)
        with first.client("admin") as http:
            revision = http.get("/v1/policy").headers["etag"]
        replies: dict[str, httpx.Response] = {}

        def edit(name: str, gateway: RunningGateway) -> None:
            with gateway.client("admin") as http:
                replies[name] = http.post("/v1/grants", json=_grant(name, test_db), headers={"If-Match": revision})

        a = threading.Thread(target=edit, args=("from-a", first))
        a.start()
        assert held.wait(20), "replica A's edit never reached its audit write"
        assert (_revision(state_db), _documents(state_db)) == (0, {})  # claimed, written, not committed: unseen
        b = threading.Thread(target=edit, args=("from-b", second))
        b.start()
        # A lock wait of the store's own account (other tests share the server).
        waits = (
            # B's claim (the conditional UPDATE of the revision row) running while A's claim is uncommitted.
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE user = %s AND command = 'Query' AND info LIKE 'UPDATE state_revision%%'"
        )
        assert _wait_for(lambda: int(state_root_query(waits, (state_db.user,))[0][0]) > 0), "B is not waiting on A"
        release.set()
        a.join(timeout=30)
        b.join(timeout=30)
        assert (replies["from-a"].status_code, replies["from-a"].json()["code"]) == (503, "audit_unavailable")
        assert replies["from-b"].status_code == 201, replies["from-b"].text
        assert _revision(state_db) == 1
        managed = _documents(state_db)["managed.yaml"]
        assert b"from-b" in managed
        assert b"from-a" not in managed
        with first.client("admin") as http:
            assert _wait_for(lambda: "from-b" in {g["name"] for g in http.get("/v1/policy").json()["grants"]})
            assert "from-a" not in {g["name"] for g in http.get("/v1/policy").json()["grants"]}
    finally:
        release.set()
        if second is not None:
            stop_gateway(second)
        stop_gateway(first)


def test_two_gateways_starting_at_once_on_an_empty_store_migrate_once(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, state_db: StateDatabaseSettings
) -> None:
    """Two replicas start together on an empty state database: one applies the migrations, the other none."""
    base = _settings(tmp_path, idp, test_db, state_db)
    settings = [base, _other(base, tmp_path, "b")]
    barrier = threading.Barrier(2)

    def start(replica: Settings) -> RunningGateway:
        barrier.wait()
        return start_gateway(replica, idp, test_db)

    with ThreadPoolExecutor(2) as pool:
        gateways = list(pool.map(start, settings))
    try:
        migrated = sorted(_state(g).migrated for g in gateways)
        assert migrated == [[], list(range(1, LATEST + 1))]
        versions = state_root_query(f"SELECT version FROM `{state_db.database}`.{VERSION_TABLE}")
        assert sorted(v for (v,) in versions) == list(range(1, LATEST + 1))
        for gateway in gateways:
            with gateway.client("reader") as http:
                assert http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"}).status_code == 200
    finally:
        for gateway in gateways:
            stop_gateway(gateway)


def test_an_approval_that_loses_the_race_to_another_replicas_edit_is_rebuilt_not_lost(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, state_db: StateDatabaseSettings
) -> None:
    """Replica B approves while replica A's edit holds the revision row: A commits, B's claim fails, B rebuilds.

    An approval has no If-Match to disappoint, so the gateway builds it again on the newer documents: both
    edits end up in the store (A's grant and the approval's), neither lost, and the approval answers 200.
    """
    held, release = threading.Event(), threading.Event()

    def hold(records: Sequence[Mapping[str, object]]) -> None:
        if not held.is_set() and any(r.get("event") == "policy_edit" for r in records):
            held.set()
            release.wait(30)

    fake = MemoryAuditStore(before_write=hold)
    first_settings = _settings(tmp_path, idp, test_db, state_db)
    first = start_gateway(first_settings, idp, test_db, audit_store=lambda: fake)
    second: RunningGateway | None = None
    try:
        second = start_gateway(_other(first_settings, tmp_path, "b"), idp, test_db)
        ask = {"target": "shop", "access": "read", "duration": "1h", "reason": "the race"}
        with second.client("nobody") as http:
            request_id = http.post("/v1/access-requests", json=ask).json()["id"]
        with first.client("admin") as http:
            revision = http.get("/v1/policy").headers["etag"]
        replies: dict[str, httpx.Response] = {}

        def edit() -> None:
            with first.client("admin") as http:
                replies["edit"] = http.post(
                    "/v1/grants", json=_grant("held-a", test_db), headers={"If-Match": revision}
                )

        def approve() -> None:
            assert second is not None
            with second.client("admin") as http:
                replies["approve"] = http.post(f"/v1/access-requests/{request_id}/approve", json={})

        a = threading.Thread(target=edit)
        a.start()
        assert held.wait(20), "replica A's edit never reached its audit write"
        b = threading.Thread(target=approve)
        b.start()
        waits = (
            # B's claim (the conditional UPDATE of the revision row) running while A's claim is uncommitted.
            "SELECT COUNT(*) FROM information_schema.processlist "
            "WHERE user = %s AND command = 'Query' AND info LIKE 'UPDATE state_revision%%'"
        )
        assert _wait_for(lambda: int(state_root_query(waits, (state_db.user,))[0][0]) > 0), "B is not waiting on A"
        release.set()
        a.join(timeout=30)
        b.join(timeout=30)
        assert replies["edit"].status_code == 201, replies["edit"].text
        assert replies["approve"].status_code == 200, replies["approve"].text
        assert _revision(state_db) == 2
        managed = _documents(state_db)["managed.yaml"]
        assert b'name: "held-a"' in managed
        assert f'name: "{request_id}"'.encode() in managed
    finally:
        release.set()
        if second is not None:
            stop_gateway(second)
        stop_gateway(first)


def test_a_stalled_store_keeps_queries_answering_and_edits_fail_closed(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, state_db: StateDatabaseSettings
) -> None:
    """The store stops answering (a partition: sockets open, no bytes): queries still answer, edits are 503.

    The alias registry falls back to its last read of a known person instead of hanging every request on the
    store; the watcher keeps the last good policy and says so; after the partition heals, edits work again.
    """
    with fault_proxy(state_db.host, state_db.port) as proxy:
        store = state_db.model_copy(update={"port": proxy.port, "connect_timeout": 1.0, "query_timeout": 2.0})
        gateway = start_gateway(_settings(tmp_path, idp, test_db, store), idp, test_db)
        try:
            with gateway.client("reader") as reader, gateway.client("admin") as admin:
                small = {"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"}
                assert reader.post("/v1/query", json=small).status_code == 200
                revision = admin.get("/v1/policy").headers["etag"]
                proxy.stall()
                for _ in range(5):
                    assert reader.post("/v1/query", json=small).status_code == 200
                refused = admin.post(
                    "/v1/revocations", json={"subject": "user:nobody@example.com"}, headers={"If-Match": revision}
                )
                assert (refused.status_code, refused.json()["code"]) == (503, "state_unavailable")
                assert _wait_for(lambda: "gateway_policy_source_unavailable 1.0" in admin.get("/metrics").text, 30)
                proxy.resume()
                assert _wait_for(lambda: admin.get("/readyz").json()["checks"]["state"]["ok"] is True, 30)
                added = admin.post(
                    "/v1/revocations", json={"subject": "user:nobody@example.com"}, headers={"If-Match": revision}
                )
                assert added.status_code == 201, added.text
        finally:
            proxy.resume()
            stop_gateway(gateway)
