"""Admin API through HTTP: roles, If-Match, validation, audit, reload, expiry (two replicas)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from adminfixture import Replicas, edit, etag, replicas
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider

__all__ = ["replicas"]

ADMIN_ROUTES = [
    ("GET", "/v1/policy"),
    ("POST", "/v1/grants"),
    ("DELETE", "/v1/grants/analysts-read"),
    ("POST", "/v1/revocations"),
    ("DELETE", "/v1/revocations/user:mallory@example.com"),
]


def _grant(name: str, user: str, db_user: str, **extra: object) -> dict[str, object]:
    return {"name": name, "subjects": [f"user:{user}"], "target": "shop", "access": "read", "db_user": db_user} | extra


def _nobody_query(replicas: Replicas, which: str = "first") -> int:
    gateway: RunningGateway = getattr(replicas, which)
    with gateway.client("nobody") as http:
        return http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1 FROM items WHERE id = 1"}).status_code


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_every_admin_route_needs_the_admin_role(replicas: Replicas, method: str, path: str) -> None:
    """Without a token: 401; with a valid non-admin token: 403 forbidden; nothing is written."""
    before = replicas.first.settings.policies_dir.joinpath("policy.yaml").read_bytes()
    with replicas.first.client(None) as anonymous:
        assert anonymous.request(method, path, json={}).status_code == 401
    with replicas.first.client("reader") as reader:
        reply = reader.request(method, path, json={}, headers={"If-Match": "x"})
    assert reply.status_code == 403
    assert reply.json()["code"] == "forbidden"
    assert replicas.first.settings.policies_dir.joinpath("policy.yaml").read_bytes() == before


def test_get_policy_has_revision_as_etag(replicas: Replicas) -> None:
    """GET /v1/policy returns the merged policy; the ETag is the quoted revision."""
    with replicas.first.client("admin") as http:
        reply = http.get("/v1/policy")
    body = reply.json()
    assert reply.headers["etag"] == f'"{body["revision"]}"'
    assert {g["name"] for g in body["grants"]} >= {"analysts-read", "engineers-write", "admins-ddl"}
    assert body["revocations"][0]["subject"] == "user:mallory@example.com"


def test_grant_then_delete_takes_effect_on_both_replicas(replicas: Replicas) -> None:
    """A grant added through one replica works there at once and on the other within 2 s; deleting ends it."""
    db_user = replicas.first.db.accounts["reader"].user
    assert _nobody_query(replicas) == 403
    with replicas.first.client("admin") as http:
        added = edit(http, "POST", "/v1/grants", json=_grant("nobody-read", "nobody@example.com", db_user))
        assert added.status_code == 201, added.text
        assert added.headers["etag"] == f'"{added.json()["revision"]}"'
        assert added.json()["file"] == "managed.yaml"
        assert _nobody_query(replicas) == 200
        assert _wait_for(lambda: _nobody_query(replicas, "second") == 200)
        removed = edit(http, "DELETE", "/v1/grants/nobody-read")
        assert removed.status_code == 200, removed.text
    assert _nobody_query(replicas) == 403
    assert _wait_for(lambda: _nobody_query(replicas, "second") == 403)


def test_missing_and_stale_if_match(replicas: Replicas) -> None:
    """No If-Match: 428; a stale revision: 412 precondition_failed and nothing written."""
    managed = replicas.first.settings.policies_dir / "managed.yaml"
    db_user = replicas.first.db.accounts["reader"].user
    with replicas.first.client("admin") as http:
        reply = http.post("/v1/grants", json=_grant("x1", "nobody@example.com", db_user))
        assert (reply.status_code, reply.json()["code"]) == (428, "precondition_required")
        before = managed.read_bytes() if managed.exists() else None
        reply = http.post(
            "/v1/grants", json=_grant("x1", "nobody@example.com", db_user), headers={"If-Match": '"' + "0" * 64 + '"'}
        )
    assert (reply.status_code, reply.json()["code"]) == (412, "precondition_failed")
    assert (managed.read_bytes() if managed.exists() else None) == before


def test_concurrent_edits_one_wins_the_loser_changes_nothing(replicas: Replicas) -> None:
    """Two admins editing from the same revision (through two replicas): one 201, one 412, one grant written."""
    db_user = replicas.first.db.accounts["reader"].user
    with replicas.first.client("admin") as http:
        revision = etag(http)
    barrier = threading.Barrier(2)
    replies: dict[str, int] = {}

    def post(which: str) -> None:
        with getattr(replicas, which).client("admin") as http:
            barrier.wait(timeout=10)
            body = _grant(f"race-{which}", "nobody@example.com", db_user)
            replies[which] = http.post("/v1/grants", json=body, headers={"If-Match": revision}).status_code

    threads = [threading.Thread(target=post, args=(w,)) for w in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(replies.values()) == [201, 412]
    winner = next(w for w, status in replies.items() if status == 201)
    text = (replicas.first.settings.policies_dir / "managed.yaml").read_text(encoding="utf-8")
    assert f"race-{winner}" in text
    assert text.count("race-") == 1
    with replicas.first.client("admin") as http:
        # GET /v1/policy re-reads the files, so replica 1 edits on top of replica 2's change at once.
        assert edit(http, "DELETE", f"/v1/grants/race-{winner}").status_code == 200


def test_invalid_edit_is_rejected_with_422_and_not_written(replicas: Replicas) -> None:
    """A grant naming an unknown target or a bad access level is refused; the files stay as they were."""
    directory = replicas.first.settings.policies_dir
    before = {p.name: p.read_bytes() for p in directory.glob("*.yaml")}
    db_user = replicas.first.db.accounts["reader"].user
    with replicas.first.client("admin") as http:
        for body in (
            _grant("bad-target", "nobody@example.com", db_user, target="nowhere"),
            _grant("bad-access", "nobody@example.com", db_user, access="root"),
            _grant("analysts-read", "nobody@example.com", db_user),
        ):
            reply = edit(http, "POST", "/v1/grants", json=body)
            assert (reply.status_code, reply.json()["code"]) == (422, "policy_invalid"), reply.text
        reply = edit(http, "POST", "/v1/grants", json={"name": "x"})
        assert (reply.status_code, reply.json()["code"]) == (422, "invalid_request")
    assert {p.name: p.read_bytes() for p in directory.glob("*.yaml")} == before


def test_edit_keeps_comments_of_hand_written_file_byte_for_byte(replicas: Replicas) -> None:
    """Deleting a grant from the hand-written file removes only its lines; every other byte stays."""
    path = replicas.first.settings.policies_dir / "policy.yaml"
    original = path.read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    start = lines.index("  - name: admins-ddl\n")
    grant_lines = lines[start : start + 6]
    with replicas.first.client("admin") as http:
        reply = edit(http, "DELETE", "/v1/grants/admins-ddl")
        assert reply.status_code == 200, reply.text
        assert path.read_text(encoding="utf-8") == original.replace("".join(grant_lines), "")
        assert original.startswith("# Hand-written policy")
        # Put it back by hand, as an admin would with git revert.
        path.write_text(original, encoding="utf-8")
        assert _wait_for(lambda: any(g["name"] == "admins-ddl" for g in http.get("/v1/policy").json()["grants"]))


def test_policy_edits_are_audited_with_a_diff(replicas: Replicas) -> None:
    """Every edit leaves a policy_edit record (who, what, revisions, a unified diff), readable on either replica."""
    db_user = replicas.first.db.accounts["reader"].user
    with replicas.first.client("admin") as http:
        reply = edit(http, "POST", "/v1/grants", json=_grant("audited", "nobody@example.com", db_user))
        assert reply.status_code == 201
        request_id = reply.headers["x-request-id"]
        assert edit(http, "DELETE", "/v1/grants/audited").status_code == 200
    with replicas.second.client("admin") as auditor:  # admin@example.com is also an auditor in the test policy
        page = auditor.get("/v1/audit", params={"request_id": request_id, "event": "policy_edit"}).json()
    (record,) = page["entries"]
    assert record["user"] == "admin@example.com"
    assert record["action"] == "grant_add"
    assert record["new_revision"] == reply.json()["revision"]
    assert '+  - name: "audited"' in record["diff"]


def test_revoke_and_lift_through_the_api(replicas: Replicas) -> None:
    """A revocation answers 403 revoked on both replicas (within 2 s); lifting it restores access."""
    with replicas.first.client("admin") as http:
        reply = edit(
            http,
            "POST",
            "/v1/revocations",
            json={"subject": "user:writer@example.com", "target": "shop", "reason": "incident 42"},
        )
        assert reply.status_code == 201, reply.text
        try:
            for gateway in (replicas.first, replicas.second):
                with gateway.client("writer") as writer:
                    assert _wait_for(functools.partial(_is_revoked, writer))
        finally:
            lifted = edit(http, "DELETE", "/v1/revocations/user:writer@example.com", params={"target": "shop"})
        assert lifted.status_code == 200, lifted.text
        missing = edit(http, "DELETE", "/v1/revocations/user:writer@example.com")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    with replicas.first.client("writer") as writer:
        assert _code(writer) == "ok"


@dataclass
class StoppedClock:
    """The gateway's injected clock: it reads ``now``, which only the test moves."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


def test_time_boxed_grant_expires_on_the_dot(tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase) -> None:
    """A time-boxed grant works up to its instant and is refused from it on, with no reload.

    The gateway's clock is injected and moved by the test, so the instant is
    exact and nothing waits on the wall clock.
    """
    clock = StoppedClock(datetime.now(UTC).replace(microsecond=0))
    expires = clock.now + timedelta(hours=1)
    gateway = start_gateway(gateway_settings(tmp_path, idp, test_db), idp, test_db, clock=clock)
    body = _grant("short-lived", "nobody@example.com", test_db.accounts["reader"].user, expires=expires.isoformat())
    try:
        with gateway.client("admin") as http, gateway.client("nobody") as nobody:
            assert _code(nobody) == "forbidden"
            assert edit(http, "POST", "/v1/grants", json=body).status_code == 201
            revision = etag(http)
            assert _code(nobody) == "ok"
            clock.now = expires - timedelta(microseconds=1)
            assert _code(nobody) == "ok"
            clock.now = expires
            reply = nobody.post("/v1/query", json={"target": "shop", "sql": "SELECT 1 FROM items WHERE id = 1"})
            assert (reply.status_code, reply.json()["code"]) == (403, "forbidden")
            assert "your grant short-lived expired at" in reply.json()["detail"]
            assert etag(http) == revision
    finally:
        stop_gateway(gateway)


def _code(http: httpx.Client) -> str:
    reply = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1 FROM items WHERE id = 1"})
    return "ok" if reply.status_code == 200 else str(reply.json()["code"])


def _is_revoked(http: httpx.Client) -> bool:
    return _code(http) == "revoked"


def _wait_for(check: Callable[[], bool], within: float = 2.5) -> bool:
    """Poll ``check`` until true or ``within`` seconds pass (replicas poll the files every second)."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
