"""Statement reviews shared by three gateways through one MariaDB state store (issues 14 and 16).

Each replica is its own app (own pools, audit log, ``admin.state_dir``): the
only thing they share is the state store, so a review seen on another replica
can only have come through it. Real MariaDB, the real OIDC provider, uvicorn on
loopback; waits are on conditions, never on a fixed sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from conftest import RunningGateway, free_port, gateway_settings, start_gateway, stop_gateway
from oidcfixture import running_provider
from reviewfixture import USERS, Clock, Env, ask, execute, problem, review_database, verdict, write_review_policy
from statefixture import scratch_state_db

from gateway.settings import ListenSettings


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Env]]:
    """Three review gateways on one state store, one review database and one (read-only) base policy."""
    clock = Clock()
    with review_database() as db, running_provider(users=USERS) as idp, scratch_state_db() as store:
        tmp = tmp_path_factory.mktemp("state-reviews")
        state = {"store": "mariadb", "mariadb": store.model_dump(), "poll_interval": 0.2}
        settings = gateway_settings(tmp, idp, db, env_prefix="GWSTATEREV", state=state)
        write_review_policy(settings.policies_dir, db)
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
                running.append(start_gateway(replica, idp, db, clock=clock))
            yield [Env(gateway, db, idp, clock) for gateway in running]
        finally:
            for gateway in reversed(running):
                stop_gateway(gateway)


def test_requested_on_1_approved_on_2_and_3_executed_once(replicas: list[Env]) -> None:
    """Ann asks on 1; her other login on 2 cannot approve; rex (2) and rae (3) do; executed on 3 once only."""
    one, two, three = replicas
    before = one.amounts()
    body = ask(one, "UPDATE ledger SET amount = amount + 7 WHERE id = ?", [2])
    review = str(body["review"]["id"])
    assert one.amounts() == before
    with two.client("rex") as http:
        queue = http.get("/v1/reviews", params={"state": "pending"})
    assert queue.status_code == 200, queue.text
    assert review in {r["id"] for r in queue.json()["to_review"]}
    assert problem(verdict(two, "ann-laptop", review)) == (403, "forbidden")  # the author, another sub and replica
    assert verdict(two, "rex", review).json()["review"]["state"] == "pending"
    assert problem(verdict(three, "rex", review)) == (409, "conflict")  # rex spoke already, on another replica
    assert verdict(three, "rae", review).json()["review"]["state"] == "approved"
    done = execute(three, review)
    assert done.status_code == 200, done.text
    assert one.amounts() == {**before, 2: before[2] + 7}
    for replica in (one, two, three):
        assert problem(execute(replica, review)) == (409, "review_used")
    assert one.amounts() == {**before, 2: before[2] + 7}
    with one.client("ann") as http:
        shown = http.get(f"/v1/reviews/{review}").json()["review"]
    assert (shown["state"], shown["result"]) == ("executed", {"rows_affected": [1]})
    assert [v["name"] for v in shown["verdicts"]] == ["rex@example.com", "rae@example.com"]


def test_two_replicas_executing_at_once_one_wins(replicas: list[Env]) -> None:
    """One approval executed through replicas 1 and 2 at the same moment: one 200, one review_used; run once."""
    one, two, three = replicas
    review = str(ask(three, "UPDATE ledger SET amount = amount + 50 WHERE id = 5")["review"]["id"])
    assert verdict(one, "rex", review).status_code == 200
    assert verdict(two, "rae", review).status_code == 200
    before = one.amounts()
    start = threading.Barrier(2)
    replies: list[httpx.Response] = []

    def run(replica: Env) -> None:
        with replica.client("ann") as http:
            start.wait()
            replies.append(http.post(f"/v1/reviews/{review}/execute"))

    threads = [threading.Thread(target=run, args=(replica,)) for replica in (one, two)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in replies) == [200, 409], [r.text for r in replies]
    assert next(r for r in replies if r.status_code == 409).json()["code"] == "review_used"
    assert one.amounts() == {**before, 5: before[5] + 50}
