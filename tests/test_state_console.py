"""Console sessions in the shared state store: signed in through one replica, used and ended through another.

Two gateways with the console share one MariaDB state store and nothing else
(each its own process state, audit log and ``admin.state_dir``). A person
signs in at the real OIDC provider's own login and consent pages through
replica 1; the cookie (cookies ignore ports, as in a browser) then works on
replica 2, and signing out there ends the session on replica 1 too. The table
holds the cookie's SHA-256 only, and neither the cookie nor the access token
in any form a reader could use.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import urljoin

import httpx
import pytest
from conftest import RunningGateway, ScratchDatabase, free_port, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider
from statefixture import lock_account, scratch_state_db, state_root_query, unlock_account

from gateway import console
from gateway.console.sessions import PendingLogin, Session, key_of, seal_of
from gateway.console.sharedsessions import open_session, seal_session
from gateway.settings import ListenSettings, StateDatabaseSettings

_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.DOTALL)
_INPUT = re.compile(r"<input[^>]*>")
_ATTR = re.compile(r'([a-z]+)="([^"]*)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
COOKIE = "gateway-console"


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[tuple[list[RunningGateway], StateDatabaseSettings]]:
    """Two console gateways on one state store."""
    tmp = tmp_path_factory.mktemp("state-console")
    with scratch_state_db() as store:
        state = {"store": "mariadb", "mariadb": store.model_dump(), "poll_interval": 0.2}
        settings = gateway_settings(tmp, idp, test_db, state=state)
        running: list[RunningGateway] = []
        try:
            for index in range(2):
                replica = settings.model_copy(
                    update={
                        "listen": ListenSettings(host="127.0.0.1", port=free_port()),
                        "audit": settings.audit.model_copy(update={"path": tmp / f"audit-{index}.db"}),
                        "admin": settings.admin.model_copy(update={"state_dir": tmp / f"state-{index}"}),
                    }
                )
                running.append(start_gateway(replica, idp, test_db, pages=console.install))
            yield running, store
        finally:
            for gateway in reversed(running):
                stop_gateway(gateway)
        # Every state-store connection (the console's sessions' too) is closed at shutdown.
        deadline = time.monotonic() + 10
        while _sessions_of(store.user):
            assert time.monotonic() < deadline, "a gateway left state-store connections open"
            time.sleep(0.1)


def _sessions_of(account: str) -> int:
    rows = state_root_query("SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s", (account,))
    return int(rows[0][0])


def _sign_in(http: httpx.Client, gateway: RunningGateway, account: str) -> None:
    """The authorization code flow through the provider's own login and consent forms, as a browser walks it."""
    reply = http.get(f"{gateway.url}/console/login")
    for _ in range(20):
        if reply.status_code in {302, 303}:
            location = urljoin(str(reply.url), reply.headers["location"])
            if location.startswith(f"{gateway.url}/console/") and "/callback" not in location:
                return
            reply = http.get(location)
            continue
        assert reply.status_code == 200, reply.text
        found = _FORM.search(reply.text)
        assert found is not None, reply.text
        inputs = [dict(_ATTR.findall(tag)) for tag in _INPUT.findall(found.group(2))]
        fields = {i["name"]: html.unescape(i.get("value", "")) for i in inputs if "name" in i}
        if "login" in fields:
            fields |= {"login": account, "password": "any"}
        reply = http.post(urljoin(str(reply.url), html.unescape(found.group(1))), data=fields)
    pytest.fail("the sign-in did not come back to the console")


def test_signed_in_on_1_used_on_2_ended_on_2_is_gone_on_1(
    pair: tuple[list[RunningGateway], StateDatabaseSettings],
) -> None:
    """One sign-in, both replicas; logout through 2 ends it on 1; the store holds no cookie and no token."""
    (one, two), store = pair
    with httpx.Client(follow_redirects=False, timeout=30) as http:
        assert http.get(f"{two.url}/console/").status_code == 303  # nobody signed in yet
        _sign_in(http, one, "reader")
        cookie = http.cookies[COOKIE]
        home = http.get(f"{two.url}/console/")
        assert home.status_code == 200, home.text
        assert "reader@example.com" in home.text
        assert http.get(f"{one.url}/console/").status_code == 200
        rows = state_root_query(f"SELECT id_hash, sealed FROM `{store.database}`.console_sessions")
        assert [r[0] for r in rows] == [key_of(cookie)]
        sealed = bytes(rows[0][1])
        assert cookie.encode() not in sealed
        assert b"reader" not in sealed  # sealed, not merely encoded
        csrf = _CSRF.search(home.text)
        assert csrf is not None
        out = http.post(f"{two.url}/console/logout", data={"csrf": csrf.group(1)})
        assert (out.status_code, out.headers["location"]) == (303, "/console/signed-out")
        http.cookies.set(COOKIE, cookie)  # the browser kept it (or a thief copied it): worthless now
        again = http.get(f"{one.url}/console/")
        assert again.status_code == 303
        assert again.headers["location"].startswith("/console/login")
        assert state_root_query(f"SELECT COUNT(*) FROM `{store.database}`.console_sessions")[0][0] == 0


def test_the_store_down_console_pages_fail_closed_and_the_session_survives(
    pair: tuple[list[RunningGateway], StateDatabaseSettings],
) -> None:
    """State store locked: a signed-in page is a 503 state_unavailable page, never a guess; back: signed in still."""
    (one, two), store = pair
    with httpx.Client(follow_redirects=False, timeout=30) as http:
        _sign_in(http, one, "reader")
        assert http.get(f"{two.url}/console/").status_code == 200
        lock_account(store)
        try:
            down = http.get(f"{two.url}/console/")
            assert down.status_code == 503, down.text
            assert "state_unavailable" in down.text
        finally:
            unlock_account(store)
        deadline = time.monotonic() + 10
        while http.get(f"{two.url}/console/").status_code != 200:  # the link retries after its 1 s back-off
            assert time.monotonic() < deadline, "the session did not come back with the store"
            time.sleep(0.1)


def test_a_sealed_session_opens_only_under_its_own_key_and_seal() -> None:
    """Round trip (logins, notices, token); another cookie's seal or key, or one flipped byte: no session."""
    cookie, other = "c" * 43, "d" * 43
    session = Session(key=key_of(cookie), csrf="x", created=1.0, seen=2.0, seal=seal_of(cookie))
    session.user, session.access_token, session.token_expires = "reader@example.com", "tok.en.value", 99.0
    session.logins["st"] = PendingLogin(state="st", verifier="v", next="/console/", started=1.5)
    session.notices.append("Done.")
    sealed = seal_session(session)
    assert b"tok.en.value" not in sealed
    opened = open_session(session.key, session.seal, sealed)
    assert opened is not None
    assert (opened.user, opened.access_token, opened.logins, opened.notices) == (
        session.user,
        session.access_token,
        session.logins,
        ["Done."],
    )
    assert open_session(session.key, seal_of(other), sealed) is None
    assert open_session(key_of(other), session.seal, sealed) is None  # moved under another key
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert open_session(session.key, session.seal, flipped) is None
