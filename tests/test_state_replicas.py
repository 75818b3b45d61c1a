"""Three gateways sharing one MariaDB state store and a read-only base policy directory (issue 14).

Each replica is its own app (own pools, policy store, state-store connections,
audit log) served by uvicorn on its own loopback port, with the real OIDC
provider and real MariaDB. Nothing is written to the base directory: admin
edits and approvals go to the store, and every replica sees them through its
revision poll. Tests wait on conditions (polls with a deadline), never on a
fixed sleep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RunningGateway, ScratchDatabase, free_port, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider
from statefixture import lock_account, scratch_state_db, unlock_account

from gateway.settings import ListenSettings, StateDatabaseSettings

# About 10^12 row combinations: runs far past any test unless cancelled.
HEAVY = "SELECT COUNT(*) FROM items a, items b, items c, items d WHERE a.price + b.price + c.price > d.price"
SMALL = {"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"}


@dataclass
class Cluster:
    """Three replicas, their shared store's settings and the base directory's files at start."""

    replicas: list[RunningGateway]
    store: StateDatabaseSettings
    base: Path
    base_files: dict[str, bytes]


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase) -> Iterator[Cluster]:
    """Three gateways on one state store and one base directory (read-only: nothing may write it)."""
    tmp = tmp_path_factory.mktemp("state-replicas")
    with scratch_state_db() as store:
        state = {"store": "mariadb", "mariadb": store.model_dump(), "poll_interval": 0.2}
        settings = gateway_settings(tmp, idp, test_db, state=state)
        policy = settings.policies_dir / "policy.yaml"
        # A revocation, not the 2 s statement timeout, must end the long query below.
        policy.write_text(policy.read_text(encoding="utf-8").replace("statement_timeout: 2s", "statement_timeout: 60s"))
        settings.policies_dir.chmod(0o555)
        policy.chmod(0o444)
        running: list[RunningGateway] = []
        try:
            for index in range(3):
                replica = settings.model_copy(
                    update={
                        "listen": ListenSettings(host="127.0.0.1", port=free_port()),
                        "audit": settings.audit.model_copy(update={"path": tmp / f"audit-{index}.db"}),
                        "admin": settings.admin.model_copy(update={"state_dir": tmp / f"state-{index}"}),
                    }
                )
                running.append(start_gateway(replica, idp, test_db))
            yield Cluster(running, store, settings.policies_dir, _files(settings.policies_dir))
        finally:
            for gateway in reversed(running):
                stop_gateway(gateway)
            settings.policies_dir.chmod(0o755)


def _wait_for(check: Callable[[], bool], within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _etag(http: httpx.Client) -> str:
    reply = http.get("/v1/policy")
    assert reply.status_code == 200, reply.text
    return reply.headers["etag"]


def _edit(http: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
    return http.request(method, url, headers={"If-Match": _etag(http)}, **kwargs)


def _grant(name: str, subject: str, test_db: ScratchDatabase) -> dict[str, Any]:
    return {
        "name": name,
        "subjects": [subject],
        "target": "shop",
        "access": "read",
        "db_user": test_db.accounts["reader"].user,
    }


def _status(gateway: RunningGateway, user: str) -> int:
    with gateway.client(user) as http:
        return http.post("/v1/query", json=SMALL).status_code


def test_a_grant_through_replica_1_works_on_2_and_3(cluster: Cluster, test_db: ScratchDatabase) -> None:
    """Added on 1: in force on 2 and 3; removed through 3: gone on 1; the base directory is never written."""
    one, two, three = cluster.replicas
    assert {_status(r, "nobody") for r in cluster.replicas} == {403}
    with one.client("admin") as http:
        added = _edit(http, "POST", "/v1/grants", json=_grant("state-nobody-read", "user:nobody@example.com", test_db))
    assert added.status_code == 201, added.text
    assert added.json()["file"] == "managed.yaml"
    assert _wait_for(lambda: _status(two, "nobody") == 200)
    assert _wait_for(lambda: _status(three, "nobody") == 200)
    with three.client("admin") as http:
        policy = http.get("/v1/policy").json()
        assert policy["revision"] == added.headers["etag"].strip('"')
        (mine,) = [g for g in policy["grants"] if g["name"] == "state-nobody-read"]
        assert (mine["file"], mine["line"]) == ("managed.yaml", 3)
        removed = _edit(http, "DELETE", "/v1/grants/state-nobody-read")
    assert removed.status_code == 200, removed.text
    assert _wait_for(lambda: _status(one, "nobody") == 403)
    assert _files(cluster.base) == cluster.base_files


def test_a_base_file_entry_cannot_be_edited_through_the_api(cluster: Cluster) -> None:
    """Removing a grant of the read-only base files is refused by the gateway (422), nothing written."""
    with cluster.replicas[0].client("admin") as http:
        refused = _edit(http, "DELETE", "/v1/grants/analysts-read")
    assert (refused.status_code, refused.json()["code"]) == (422, "policy_invalid")
    assert "read-only base policy file" in refused.json()["detail"]
    assert _files(cluster.base) == cluster.base_files


def test_concurrent_edits_through_two_replicas_one_201_one_412(cluster: Cluster, test_db: ScratchDatabase) -> None:
    """Same If-Match, two replicas, at once: one 201, one 412 precondition_failed; the winner's grant is everywhere."""
    one, two, three = cluster.replicas
    with one.client("admin") as http:
        revision = _etag(http)
    barrier = threading.Barrier(2)

    def add(args: tuple[RunningGateway, str]) -> httpx.Response:
        replica, name = args
        body = _grant(name, "user:nobody@example.com", test_db)
        with replica.client("admin") as http:
            barrier.wait()
            return http.post("/v1/grants", json=body, headers={"If-Match": revision})

    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(add, [(one, "race-one"), (two, "race-two")]))
    assert sorted(r.status_code for r in replies) == [201, 412], [r.text for r in replies]
    (lost,) = [r for r in replies if r.status_code == 412]
    assert lost.json()["code"] == "precondition_failed"
    (won,) = [r for r in replies if r.status_code == 201]
    winner = won.json()["detail"]["grant"]["name"]
    loser = ({"race-one", "race-two"} - {winner}).pop()
    with three.client("admin") as http:

        def names() -> set[str]:
            return {g["name"] for g in http.get("/v1/policy").json()["grants"]}

        assert _wait_for(lambda: winner in names())
        assert loser not in names()
        assert _edit(http, "DELETE", f"/v1/grants/{winner}").status_code == 200


def _busy(http: httpx.Client) -> bool:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("gateway_pool_in_use{") and not line.endswith(" 0.0"):
            return True
    return False


def test_a_revocation_through_replica_2_cancels_a_running_statement_on_3(cluster: Cluster) -> None:
    """Revoked on 2: the reader's running query on 3 ends 403 revoked, and 1 refuses their next one."""
    one, two, three = cluster.replicas
    outcome: dict[str, Any] = {}

    def heavy() -> None:
        with three.client("reader") as http:
            reply = http.post("/v1/query", json={"target": "shop", "sql": HEAVY})
            outcome["status"], outcome["body"] = reply.status_code, reply.json()

    worker = threading.Thread(target=heavy)
    worker.start()
    with three.client("admin") as http:
        assert _wait_for(lambda: _busy(http))
    with two.client("admin") as http:
        revoked = _edit(http, "POST", "/v1/revocations", json={"subject": "group:analysts", "reason": "issue 14"})
        assert revoked.status_code == 201, revoked.text
        try:
            worker.join(timeout=30)
            assert not worker.is_alive()
            assert (outcome["status"], outcome["body"]["code"]) == (403, "revoked")
            with one.client("reader") as reader:
                assert _wait_for(lambda: reader.post("/v1/query", json=SMALL).status_code == 403)
                assert reader.post("/v1/query", json=SMALL).json()["code"] == "revoked"
        finally:
            assert _edit(http, "DELETE", "/v1/revocations/group:analysts").status_code == 200
    assert _wait_for(lambda: _status(one, "reader") == 200)


def test_an_access_request_filed_on_1_approved_on_2_is_used_on_3(cluster: Cluster) -> None:
    """Filed on 1, listed and approved on 2 (never by the requester, on any replica), in force on 3."""
    one, two, three = cluster.replicas
    ask = {"target": "shop", "access": "read", "duration": "1h", "reason": "issue 14: shared requests"}
    with one.client("nobody") as http:
        filed = http.post("/v1/access-requests", json=ask)
    assert filed.status_code == 201, filed.text
    item = filed.json()
    with one.client("admin") as http:
        own = http.post("/v1/access-requests", json=ask).json()
    with two.client("admin") as http:
        pending = {r["id"] for r in http.get("/v1/access-requests", params={"state": "pending"}).json()["requests"]}
        assert {item["id"], own["id"]} <= pending
        refused = http.post(f"/v1/access-requests/{own['id']}/approve", json={})
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        assert "their own access request" in refused.json()["detail"]
        approved = http.post(f"/v1/access-requests/{item['id']}/approve", json={})
        assert approved.status_code == 200, approved.text
        again = http.post(f"/v1/access-requests/{item['id']}/approve", json={})
        assert (again.status_code, again.json()["code"]) == (409, "conflict")
    with three.client("nobody") as http:

        def used() -> bool:
            reply = http.post("/v1/query", json=SMALL)
            return reply.status_code == 200 and reply.json()["grant"] == item["id"]

        assert _wait_for(used)
        mine = http.get("/v1/access-requests").json()["requests"]
        assert [r["state"] for r in mine if r["id"] == item["id"]] == ["approved"]
    with three.client("admin") as http:
        assert _edit(http, "DELETE", f"/v1/grants/{item['id']}").status_code == 200
        denied = http.post(f"/v1/access-requests/{own['id']}/deny", json={"reason": "x"})
        assert (denied.status_code, denied.json()["code"]) == (403, "forbidden")  # the requester, on replica 3 too
    assert _files(cluster.base) == cluster.base_files


def test_store_down_edits_fail_closed_and_queries_keep_the_last_good_policy(cluster: Cluster) -> None:
    """The state store unreachable: an edit is 503 state_unavailable; queries run; /readyz says so; then recovery.

    A person this replica had read before the outage keeps querying on the last good policy; one it never
    saw cannot have their name recorded, so their token is refused (503 identity_unavailable, fail closed).
    """
    one, two, _ = cluster.replicas
    with (
        one.client("admin") as admin,
        two.client("reader") as reader,
        two.client("admin") as watcher,
        two.client("writer") as stranger,
    ):
        revision = _etag(admin)
        assert reader.post("/v1/query", json=SMALL).status_code == 200
        assert watcher.get("/v1/me").status_code == 200  # replica two has read the watcher's names too
        lock_account(cluster.store)
        try:
            refused = admin.post(
                "/v1/revocations", json={"subject": "user:nobody@example.com"}, headers={"If-Match": revision}
            )
            assert (refused.status_code, refused.json()["code"]) == (503, "state_unavailable")
            assert _wait_for(lambda: watcher.get("/readyz").json()["checks"]["state"]["ok"] is False)
            for _ in range(3):
                assert reader.post("/v1/query", json=SMALL).status_code == 200
            assert watcher.get("/readyz").status_code == 200  # not gating: the last good policy decides
            assert "gateway_policy_source_unavailable 1.0" in watcher.get("/metrics").text
            unseen = stranger.post("/v1/query", json=SMALL)
            assert (unseen.status_code, unseen.json()["code"]) == (503, "identity_unavailable")
        finally:
            unlock_account(cluster.store)
        assert _wait_for(lambda: watcher.get("/readyz").json()["checks"]["state"]["ok"] is True)
        assert "gateway_policy_source_unavailable 0.0" in watcher.get("/metrics").text
        assert _etag(admin) == revision  # nothing was written
        # Edits work again at once: each edit connects anew. This replica's read link may still be down
        # for a moment after the outage; the edit is written all the same, and the reply says so (201,
        # ``applied_here`` false if the reload missed; never a 503 for an edit that was written).
        added = _edit(admin, "POST", "/v1/revocations", json={"subject": "user:nobody@example.com"})
        assert added.status_code == 201, added.text
        assert _wait_for(lambda: _etag(admin) == added.headers["etag"])
        assert _edit(admin, "DELETE", "/v1/revocations/user:nobody@example.com").status_code == 200
