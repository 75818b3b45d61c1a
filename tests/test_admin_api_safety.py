"""Admin edits through HTTP change exactly the intended entry (SECURITY rule 27), on a gateway of this module's own.

The regression for the attack of issue 11 (a requester name holding U+2028,
approved into the policy, after which lifting bob's revocation lifted
someone else's), and the editor's property test replayed through the real
API: random valid files (odd line breaks, quoting, styles) as the managed
file, random edits by HTTP, every outcome judged by ``policyoracle``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from adminfixture import edit, etag
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from fuzzprofile import budget
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from oidcfixture import OidcProvider
from policygen import PolicyFile, policy_files
from policyoracle import Edit, check_bytes, check_typed, edits, expected_refusal

from gateway.errors import GatewayError, InvalidRequest, NotFound, PolicyInvalid
from gateway.policy.files import load_policies
from gateway.policy.requests import AccessRequestStore

EVIL = "eve\u2028#"  # after U+2028 ruamel reads "#..." as a comment: the file stays valid, its lines shift
PEOPLE = ("alice@example.com", "bob@example.com", "carol@example.com")
CODES: dict[type[GatewayError], tuple[int, str]] = {
    InvalidRequest: (422, "invalid_request"),
    PolicyInvalid: (422, "policy_invalid"),
    NotFound: (404, "not_found"),
}


@pytest.fixture(scope="module")
def edit_gateway(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """A gateway whose policies directory only this module edits."""
    tmp = tmp_path_factory.mktemp("policyedit-api")
    running = start_gateway(gateway_settings(tmp, idp, test_db, admin={"state_dir": tmp / "state"}), idp, test_db)
    yield running
    stop_gateway(running)


def _files(gateway: RunningGateway) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(gateway.settings.policies_dir.glob("*.yaml"))}


def _revoked(http: httpx.Client) -> list[str]:
    return [r["subject"] for r in http.get("/v1/policy").json()["revocations"]]


def _reset(gateway: RunningGateway) -> None:
    (gateway.settings.policies_dir / "managed.yaml").unlink(missing_ok=True)


def test_approving_a_name_with_a_line_separator_is_refused_and_lifting_bob_lifts_only_bob(
    edit_gateway: RunningGateway, idp: OidcProvider
) -> None:
    """The attack: EVIL's request is not approved into the file (422, nothing written); bob's lift takes only bob's."""
    gateway = edit_gateway
    _reset(gateway)
    with gateway.client("admin") as admin:
        for person in PEOPLE:
            reply = edit(admin, "POST", "/v1/revocations", json={"subject": f"user:{person}", "target": "*"})
            assert reply.status_code == 201, reply.text
        before = _files(gateway)
        claims = idp.claims(sub="eve-sub", email=EVIL, email_verified=True, client_id="eve")
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {idp.forge(claims)}"}) as eve:
            asked = eve.post(
                "/v1/access-requests", json={"target": "shop", "access": "read", "duration": "1h", "reason": "x"}
            )
        # The identity layer may refuse such a name outright (401); if it lets it through, the approval must not.
        requests = AccessRequestStore(gateway.settings.admin.state_dir / "access-requests.db", ttl=3600)
        try:
            stored = requests.create(
                EVIL, "shop", "read", 3600, f"ticket\u2028# {EVIL}", person=(idp.issuer, "eve-sub")
            )
        finally:
            requests.close()
        ids = [stored["id"]] + ([asked.json()["id"]] if asked.status_code == 201 else [])
        assert asked.status_code in {201, 401}, asked.text
        for request_id in ids:
            db_user = gateway.db.accounts["reader"].user
            reply = admin.post(f"/v1/access-requests/{request_id}/approve", json={"db_user": db_user})
            assert (reply.status_code, reply.json()["code"]) == (422, "invalid_request"), reply.text
            assert "U+2028" in reply.json()["detail"]
        assert _files(gateway) == before
        lifted = edit(admin, "DELETE", "/v1/revocations/user:bob@example.com")
        assert lifted.status_code == 200, lifted.text
        assert sorted(_revoked(admin)) == [
            "user:alice@example.com",
            "user:carol@example.com",
            "user:mallory@example.com",
        ]
        for person in ("alice@example.com", "carol@example.com"):
            assert edit(admin, "DELETE", f"/v1/revocations/user:{person}").status_code == 200
    _reset(gateway)


def test_the_file_the_old_editor_left_is_edited_exactly(edit_gateway: RunningGateway) -> None:
    """A managed file holding raw U+2028 in a comment and a value: lifting bob through the API removes only bob's."""
    gateway = edit_gateway
    managed = gateway.settings.policies_dir / "managed.yaml"
    text = (
        "version: 1\nrevocations:\n"
        f"  # revoked at the request of {EVIL}, approved by admin@example.com\n"
        '  - subject: "user:alice@example.com"\n    target: "*"\n    reason: "left\u2028# the team"\n'
        '  - subject: "user:bob@example.com"\n    target: "*"\n'
        '  - subject: "user:carol@example.com"\n    target: "*"\n'
    )
    managed.write_text(text, encoding="utf-8")
    with gateway.client("admin") as admin:
        reply = edit(admin, "DELETE", "/v1/revocations/user:BOB@example.com")
        assert reply.status_code == 200, reply.text
        assert reply.json()["detail"] == {"subject": "user:bob@example.com", "target": None}
        assert sorted(_revoked(admin)) == [
            "user:alice@example.com",
            "user:carol@example.com",
            "user:mallory@example.com",
        ]
    assert managed.read_text(encoding="utf-8") == text.replace(
        '  - subject: "user:bob@example.com"\n    target: "*"\n', ""
    )
    _reset(gateway)


def _send(http: httpx.Client, change: Edit) -> httpx.Response:
    args: dict[str, Any] = change.args
    if change.op == "add_grant":
        return edit(http, "POST", "/v1/grants", json=args["entry"])
    if change.op == "delete_grant":
        return edit(http, "DELETE", f"/v1/grants/{quote(args['name'], safe='')}")
    if change.op == "add_revocation":
        return edit(http, "POST", "/v1/revocations", json=args["entry"])
    params = {"target": args["target"]} if args["target"] else {}
    return edit(http, "DELETE", f"/v1/revocations/{quote(args['subject'], safe='')}", params=params)


@settings(max_examples=budget(40))
@given(data=st.data(), policy=policy_files(name_prefix="fz"))
def test_random_edits_through_the_api_are_exact_or_refused(
    edit_gateway: RunningGateway, data: st.DataObject, policy: PolicyFile
) -> None:
    """A random valid managed file, a random edit by HTTP: exactly the intended change, or a 4xx and no byte changed."""
    gateway = edit_gateway
    directory: Path = gateway.settings.policies_dir
    change = data.draw(edits(policy, db_user=gateway.db.accounts["reader"].user))
    note(f"file: {policy.text!a}\nedit: {change!a}")
    (directory / "managed.yaml").write_bytes(policy.text.encode("utf-8"))
    try:
        before_files = _files(gateway)
        before = load_policies(directory, known_targets={"shop"})
        with gateway.client("admin") as admin:
            etag(admin)  # the gateway reads the new file before the edit
            reply = _send(admin, change)
        expected = expected_refusal(change, policy, appends_here=True)
        event(f"{change.op}: {expected.__name__ if expected else 'applied'}")
        note(f"reply: {reply.status_code} {reply.text}")
        if expected is not None:
            assert (reply.status_code, reply.json()["code"]) == CODES[expected]
            assert _files(gateway) == before_files
            return
        assert reply.status_code in {200, 201}
        check_typed(before, load_policies(directory, known_targets={"shop"}), change, "managed.yaml")
        check_bytes(before_files["managed.yaml"], _files(gateway)["managed.yaml"], change.op)
    finally:
        _reset(gateway)
