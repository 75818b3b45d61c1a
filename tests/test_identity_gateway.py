"""One person, one identity (SECURITY rule 26) through a running gateway: real provider, real MariaDB.

Refusals are the gateway's own (its validator's 401 with the audited reason,
its policy's 403 ``revoked``, its access-request rule's 403), and every
audit record names the person (issuer, sub) and the name used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from adminfixture import edit
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from identityfixture import bearer, person_idp
from oidcfixture import GATEWAY_AUDIENCE, OidcProvider

from gateway.audit.sqlite import SQLiteAuditStore

__all__ = ["person_idp"]
QUERY = {"target": "shop", "sql": "SELECT id FROM items WHERE id = 1"}
ASK = {"target": "shop", "access": "read", "duration": "1h", "reason": "ticket 9"}


def _serve(tmp: Path, idp: OidcProvider, db: ScratchDatabase, **issuer: Any) -> RunningGateway:
    settings = gateway_settings(
        tmp, idp, db, issuers=[{"issuer": idp.issuer, "audience": GATEWAY_AUDIENCE, **issuer}], env_prefix="GWID"
    )
    (settings.policies_dir / "people.yaml").write_text(
        'version: 1\nrevocations:\n  - {subject: "user:bob@example.com", target: "*", reason: "left"}\n',
        encoding="utf-8",
    )
    return start_gateway(settings, idp, db)


@pytest.fixture(scope="module")
def strict(
    tmp_path_factory: pytest.TempPathFactory, person_idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """A gateway with the default rules: no fallback claim."""
    running = _serve(tmp_path_factory.mktemp("strict"), person_idp, test_db)
    yield running
    stop_gateway(running)


@pytest.fixture(scope="module")
def lenient(
    tmp_path_factory: pytest.TempPathFactory, person_idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """A gateway whose issuer names tokens without email by ``sub`` (qualified: sub:<sub>@<issuer>)."""
    running = _serve(tmp_path_factory.mktemp("lenient"), person_idp, test_db, fallback_claim="sub")
    yield running
    stop_gateway(running)


def client(gateway: RunningGateway, user: str, *, email: bool = False) -> httpx.Client:
    """A client with a real token of ``user`` (asked for with scope ``email`` when ``email``)."""
    return bearer(gateway.url, gateway.idp.token(user, scope="email" if email else None))


def records(gateway: RunningGateway, request_id: str) -> list[dict[str, Any]]:
    """The audit records of one request, read from the gateway's store once the writer settled."""
    gateway.audit_settled()
    store = SQLiteAuditStore(gateway.settings.audit.path)
    try:
        return [r for r in store.iter_entries() if r.get("request_id") == request_id]
    finally:
        store.close()


def test_token_without_email_is_refused_and_audited(strict: RunningGateway) -> None:
    """A real token lacking email: 401 from the gateway's validator, audited with its reason and the token's sub."""
    with client(strict, "noemail") as http:
        reply = http.post("/v1/query", json=QUERY)
    assert (reply.status_code, reply.json()["code"]) == (401, "unauthenticated")
    (record,) = records(strict, reply.json()["request_id"])
    assert (record["event"], record["decision"], record["user_verified"]) == ("auth", "deny", False)
    assert record["reason"] == "token has no 'email' claim (and the issuer has no fallback_claim)"
    assert record["user"] == "noemail"  # the unverified sub, for the auditor; never a name used


def test_unasserted_email_is_refused_and_audited(strict: RunningGateway) -> None:
    """``email_verified: false``: 401, audited with the reason, although the email and the grant would fit."""
    with client(strict, "unverified") as http:
        reply = http.post("/v1/query", json=QUERY)
    assert (reply.status_code, reply.json()["code"]) == (401, "unauthenticated")
    (record,) = records(strict, reply.json()["request_id"])
    assert record["reason"] == "claim 'email': the issuer does not assert it (email_verified is not true)"


@pytest.mark.parametrize("user", ["bob", "bob-spaced", "bob-upper"])
def test_every_spelling_of_a_revoked_email_is_revoked(strict: RunningGateway, user: str) -> None:
    """' Bob@Example.com' and 'BOB@example.com' hit bob's revocation (403 revoked), audited by person and name."""
    with client(strict, user) as http:
        assert http.get("/v1/me").json()["user"] == "bob@example.com"
        reply = http.post("/v1/query", json=QUERY)
    assert (reply.status_code, reply.json()["code"]) == (403, "revoked")
    (decision,) = records(strict, reply.json()["request_id"])
    expected = ("deny", "revoked", strict.idp.issuer, user, "bob@example.com")
    assert (decision["decision"], decision["code"], decision["issuer"], decision["sub"], decision["user"]) == expected


def test_the_control_person_is_allowed_and_audited_by_person(strict: RunningGateway) -> None:
    """The same grant without a revocation runs; its decision record carries issuer, sub and the name used."""
    with client(strict, "nora") as http:
        reply = http.post("/v1/query", json=QUERY)
    assert reply.status_code == 200, reply.text
    found = {r["event"]: r for r in records(strict, reply.json()["request_id"])}
    for event in ("decision", "outcome"):
        assert (found[event]["issuer"], found[event]["sub"], found[event]["user"]) == (
            strict.idp.issuer,
            "nora",
            "nora@example.com",
        )


def test_lifting_finds_a_revocation_under_any_spelling(strict: RunningGateway) -> None:
    """A revocation added as 'user: Nina@Example.COM' is in force for nina and lifted as 'user:nina@example.com'."""
    with client(strict, "dave") as admin:
        added = edit(admin, "POST", "/v1/revocations", json={"subject": "user:Nina@Example.COM", "target": "shop"})
        assert added.status_code == 201, added.text
        shown = [r["subject"] for r in admin.get("/v1/policy").json()["revocations"]]
        assert "user:nina@example.com" in shown  # GET /v1/policy shows the canonical subject
        with client(strict, "nina", email=True) as nina:
            assert nina.post("/v1/query", json=QUERY).json()["code"] == "revoked"
        lifted = edit(admin, "DELETE", "/v1/revocations/user:nina@example.com")
        assert lifted.status_code == 200, lifted.text
    assert "user:nina@example.com" not in {r["subject"] for r in dave_policy(strict)["revocations"]}


def test_a_revocation_of_an_old_email_follows_the_person(strict: RunningGateway) -> None:
    """Seen once as ren.old, renamed at the IdP, then ren.old is revoked: the token saying ren.new is revoked too."""
    idp = strict.idp
    with client(strict, "renamed") as before:
        assert before.get("/v1/me").json()["user"] == "ren.old@example.com"
    idp.update_user("renamed", email="ren.new@example.com", groups=["analysts"])
    try:
        with client(strict, "renamed") as after:
            assert after.post("/v1/query", json=QUERY).status_code == 200  # the control: not revoked yet
            with client(strict, "dave") as admin:
                revoke = {"subject": "user:ren.old@example.com", "target": "shop", "reason": "left"}
                assert edit(admin, "POST", "/v1/revocations", json=revoke).status_code == 201
            reply = after.post("/v1/query", json=QUERY)
            assert after.get("/v1/me").json()["user"] == "ren.new@example.com"
    finally:
        idp.update_user("renamed", email="ren.old@example.com", groups=["analysts"])
    assert (reply.status_code, reply.json()["code"]) == (403, "revoked")
    (decision,) = records(strict, reply.json()["request_id"])
    assert (decision["user"], decision["sub"], decision["code"]) == ("ren.new@example.com", "renamed", "revoked")


def dave_policy(gateway: RunningGateway) -> dict[str, Any]:
    """The merged policy, read by the admin dave."""
    with client(gateway, "dave") as admin:
        body: dict[str, Any] = admin.get("/v1/policy").json()
    return body


def _ask(http: httpx.Client) -> dict[str, Any]:
    reply = http.post("/v1/access-requests", json=ASK)
    assert reply.status_code == 201, reply.text
    item: dict[str, Any] = reply.json()
    return item


def test_an_admin_without_email_cannot_approve_his_own_request(lenient: RunningGateway) -> None:
    """Asked with an email token, approved with his email-less token (fallback name): the same person, 403."""
    with client(lenient, "admin", email=True) as named:
        item = _ask(named)
    assert (item["requester"], item["requester_issuer"], item["requester_sub"]) == (
        "admin@example.com",
        lenient.idp.issuer,
        "admin",
    )
    with client(lenient, "admin") as nameless:
        assert nameless.get("/v1/me").json()["user"] == f"sub:admin@{lenient.idp.issuer}"
        for action in ("approve", "deny"):
            reply = nameless.post(f"/v1/access-requests/{item['id']}/{action}", json={"reason": "mine"})
            assert (reply.status_code, reply.json()["code"]) == (403, "forbidden"), reply.text
            assert "own access request" in reply.json()["detail"]
    with client(lenient, "dave") as other:
        assert other.post(f"/v1/access-requests/{item['id']}/deny", json={"reason": "not needed"}).status_code == 200


def test_an_admin_under_another_spelling_cannot_approve_his_own_request(lenient: RunningGateway) -> None:
    """Another client (another sub) asserting ' ADMIN@Example.COM' is the same name: 403."""
    with client(lenient, "admin", email=True) as named:
        item = _ask(named)
    with client(lenient, "admin-alias") as alias:
        reply = alias.post(f"/v1/access-requests/{item['id']}/approve", json={})
    assert (reply.status_code, reply.json()["code"]) == (403, "forbidden")


def test_an_old_name_of_the_requester_counts_as_his(lenient: RunningGateway) -> None:
    """Carl asks after his email changed; whoever now carries carl's old email is refused (the alias registry)."""
    idp = lenient.idp
    with client(lenient, "carl") as old:
        assert old.get("/v1/me").json()["user"] == "carl@example.com"  # the gateway sees carl under his old name
    idp.update_user("carl", email="carl.new@example.com", groups=["db-admins"])
    try:
        with client(lenient, "carl") as renamed:
            item = _ask(renamed)
        idp.update_user("carlos", email="Carl@Example.com", groups=["db-admins"])
        with client(lenient, "carlos") as other:
            reply = other.post(f"/v1/access-requests/{item['id']}/approve", json={})
    finally:
        idp.update_user("carl", email="carl@example.com", groups=["db-admins"])
        idp.update_user("carlos", email="carlos@example.com", groups=["db-admins"])
    assert item["requester"] == "carl.new@example.com"
    assert (reply.status_code, reply.json()["code"]) == (403, "forbidden")


def test_my_requests_follow_the_person(lenient: RunningGateway) -> None:
    """A request made under one name is listed for the same person under another (email-less) token."""
    with client(lenient, "nina", email=True) as named:
        item = _ask(named)
    with client(lenient, "nina") as nameless:
        listed = nameless.get("/v1/access-requests").json()["requests"]
    assert item["id"] in {r["id"] for r in listed}
    with client(lenient, "nora") as stranger:
        assert item["id"] not in {r["id"] for r in stranger.get("/v1/access-requests").json()["requests"]}
