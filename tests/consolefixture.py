"""Console test helpers: a gateway serving the console, sign-in through the dev issuer, forms' CSRF tokens.

``console_gateway`` serves ``create_app(settings, pages=console.install)`` on
loopback in dev mode (the dev issuer signs people in, through its login
page's form), on the real MariaDB and the session's real provider, with a
clock the tests move. ``sign_in`` walks the authorization code flow as a
browser would (cookies kept by the client), and returns the signed-in client
(closed when ``console_gateway`` stops its gateway).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider

from gateway import console
from gateway.audit.query import AuditFilter
from gateway.audit.store import Entry

AUTHORIZE_FIELDS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# The clients ``sign_in`` made, by gateway URL: closed when ``console_gateway`` stops that gateway.
_SIGNED_IN: dict[str, list[httpx.Client]] = {}


class MovableClock:
    """The app's clock (``create_app(clock=...)``): real time plus an offset the test moves."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        """Move the app's time forward."""
        self.offset += timedelta(seconds=seconds)


def console_gateway(
    tmp: Path, idp: OidcProvider, db: ScratchDatabase, clock: MovableClock, **console_settings: Any
) -> Iterator[RunningGateway]:
    """A dev-mode gateway with the console (``console_settings`` override the console section)."""
    settings = gateway_settings(
        tmp,
        idp,
        db,
        dev_mode=True,
        dev={"key_file": tmp / "dev-key.pem"},
        console={"idle_timeout": 600, "absolute_timeout": 3000, **console_settings},
    )
    running = start_gateway(settings, idp, db, clock=clock, pages=console.install)
    try:
        yield running
    finally:
        stop_gateway(running)
        for http in _SIGNED_IN.pop(running.url, []):
            http.close()


def sign_in(url: str, user: str, groups: tuple[str, ...] = (), **client: Any) -> httpx.Client:
    """A client signed in to the console as ``user`` (with ``groups``) through the dev issuer's login page."""
    http = httpx.Client(base_url=url, follow_redirects=False, timeout=30, **client)
    _SIGNED_IN.setdefault(url, []).append(http)  # closed with the gateway (console_gateway)
    reply = http.get("/console/login")
    assert reply.status_code == 303, reply.text
    authorize = reply.headers["location"]
    params = dict(parse_qsl(urlsplit(authorize).query))
    page = http.get(authorize)
    assert page.status_code == 200, page.text
    form = {name: params.get(name, "") for name in AUTHORIZE_FIELDS} | {"user": user, "groups": " ".join(groups)}
    back = http.post("/dev-issuer/authorize", data=form)
    assert back.status_code == 303, back.text
    done = http.get(back.headers["location"])
    assert done.status_code == 303, done.text
    return http


def csrf_of(http: httpx.Client, path: str = "/console/") -> str:
    """The session's CSRF token, as a page's forms carry it."""
    page = http.get(path)
    found = _CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def records(gateway: RunningGateway, **filters: Any) -> list[Entry]:
    """Audit entries matching ``filters``, newest first (after the writer has committed)."""
    gateway.audit_settled()
    store = app_state(gateway).services.audit_reader
    entries: list[Entry] = store.query(AuditFilter(**filters), None, 500).entries
    return entries


def app_state(gateway: RunningGateway) -> Any:
    """The running app's state (``services``, ``console``)."""
    app: Any = gateway.server.config.app
    return app.state


def wait_for(check: Any, seconds: float = 10.0) -> None:
    """Wait until ``check()`` is true (bounded)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
