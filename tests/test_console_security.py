"""The web console's defences over HTTP (SECURITY rule 33): headers, CSRF, escaping, sessions, self-approval.

One dev-mode gateway with the console for the module (real MariaDB, real
audit store); people sign in through the dev issuer's login page. Each test
asserts the refusal happened, who refused (the console, recorded in the
audit log as a console call), and that nothing leaked.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import RunningGateway, ScratchDatabase
from consolefixture import MovableClock, app_state, console_gateway, csrf_of, records, sign_in
from oidcfixture import OidcProvider

from gateway.audit.records import RouteDenied, Who
from gateway.policy.reviews import NewReview, new_review_id

ADMIN = ("admin@example.com", ("db-admins",))  # admin, and auditor by name in the test policies
READER = ("reader@example.com", ("analysts",))
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
PAGES = (
    "/console/",
    "/console/query",
    "/console/history",
    "/console/requests",
    "/console/reviews",
    "/console/admin/policy",
    "/console/admin/requests",
    "/console/admin/history",
    "/console/audit",
    "/console/audit/charts",
    "/console/audit/verify",
    "/console/audit/record/1",
)


@pytest.fixture(scope="module")
def clock() -> MovableClock:
    """The module gateway's clock."""
    return MovableClock()


@pytest.fixture(autouse=True)
def _real_time(clock: MovableClock) -> Iterator[None]:
    """Each test starts and ends on real time (tokens expire by real time, sessions by the app's clock)."""
    clock.offset = timedelta()
    yield
    clock.offset = timedelta()


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase, clock: MovableClock
) -> Iterator[RunningGateway]:
    """A dev-mode gateway serving the console."""
    yield from console_gateway(tmp_path_factory.mktemp("console"), idp, test_db, clock)


def _unescaped(html: str) -> list[str]:
    """Hostile markup that reached a page unescaped."""
    return [bad for bad in ("<script>alert", "<img src=x onerror", 'href="javascript:') if bad in html]


def test_every_page_carries_the_security_headers(gw: RunningGateway) -> None:
    """Every console page: a strict CSP (no script, no framing, forms and base to self), DENY, nosniff."""
    admin = sign_in(gw.url, *ADMIN)
    for path in (*PAGES, "/console/static/console.css", "/console/no-such-page"):
        reply = admin.get(path)
        assert reply.status_code in {200, 404}, (path, reply.status_code)
        csp = reply.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
            "base-uri 'none'",
        ):
            assert directive in csp, (path, directive)
        assert "unsafe-inline" not in csp
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "same-origin"
        if reply.headers["content-type"].startswith("text/html"):
            assert "<script" not in reply.text, path
            assert "style=" not in reply.text, path


def test_session_cookie_flags_and_no_token_anywhere(gw: RunningGateway) -> None:
    """The session cookie is HttpOnly and SameSite=Lax; the access token appears in no page, URL or header."""
    with httpx.Client(base_url=gw.url, follow_redirects=False, timeout=30) as http:
        start = http.get("/console/login")
    cookie = start.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    admin = sign_in(gw.url, *ADMIN)
    session = app_state(gw).console.sessions.store
    tokens = [s.access_token for s in session._sessions.values() if s.access_token]
    assert tokens
    for path in PAGES:
        reply = admin.get(path)
        seen = reply.text + str(reply.url) + str(reply.headers)
        assert not any(t in seen for t in tokens), path
        assert not any(t[:40] in seen for t in tokens), path


def test_state_changing_requests_need_the_csrf_token(gw: RunningGateway) -> None:
    """No token, a wrong one, or another origin: 403, recorded as a console refusal, and nothing runs or is written."""
    reader = sign_in(gw.url, *READER)
    token = csrf_of(reader)
    marker = "SELECT 4242 AS csrf_marker"
    cases = [
        ({"target": "shop", "sql": marker}, {}),
        ({"target": "shop", "sql": marker, "csrf": "wrong"}, {}),
        ({"target": "shop", "sql": marker, "csrf": token}, {"Origin": "https://evil.example"}),
        ({"target": "shop", "sql": marker, "csrf": token}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for form, headers in cases:
        reply = reader.post("/console/query", data=form, headers=headers)
        assert reply.status_code == 403, (form, headers, reply.text)
        assert "forbidden" in reply.text
    refusals = [e for e in records(gw, user=READER[0], decision="deny") if e.get("route") == "POST /console/query"]
    assert len(refusals) >= len(cases)
    assert all(e.get("via") == "console" and "CSRF" in str(e.get("reason")) for e in refusals)
    assert not [e for e in records(gw, user=READER[0], event="decision") if e.get("statement") == marker]
    ok = reader.post("/console/query", data={"target": "shop", "sql": marker, "csrf": token})
    assert ok.status_code == 200
    assert "4242" in ok.text


def test_console_calls_are_audited_as_console_calls(gw: RunningGateway) -> None:
    """A console query writes the API's decision and outcome records, marked ``via: console``; API ones are not."""
    reader = sign_in(gw.url, *READER)
    reply = reader.post(
        "/console/query", data={"target": "shop", "sql": "SELECT 7 AS via_marker", "csrf": csrf_of(reader)}
    )
    assert reply.status_code == 200
    rid = re.search(r"request id <code>([0-9a-f]+)</code></p>", reply.text)
    assert rid is not None
    mine = records(gw, request_id=rid.group(1))
    assert {e["event"] for e in mine} == {"decision", "outcome"}
    assert all(e.get("via") == "console" for e in mine)
    api = RouteDenied(who=Who.of("r1", None, "rev"), code="forbidden", route="GET /v1/policy").fields()
    assert "via" not in api  # API records keep their bytes (and so their hashes)
    marked = RouteDenied(who=Who.of("r1", None, "rev", via="console"), code="forbidden", route="GET /x").fields()
    assert marked["via"] == "console"


def test_hostile_values_are_escaped_everywhere(gw: RunningGateway) -> None:
    """Markup in statements, results, column names, user agents, reasons and grant fields renders as text."""
    reader = sign_in(gw.url, *READER, headers={"User-Agent": HOSTILE})
    token = csrf_of(reader)
    sql = f"SELECT '{HOSTILE}' AS `{HOSTILE[:20]}`, 'javascript:alert(3)' AS link"
    result = reader.post("/console/query", data={"target": "shop", "sql": sql, "csrf": token})
    assert result.status_code == 200
    assert not _unescaped(result.text)
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in result.text
    asked = reader.post(
        "/console/requests",
        data={"target": "shop", "access": "write", "duration": "1h", "reason": HOSTILE, "csrf": token},
    )
    assert asked.status_code == 303
    admin = sign_in(gw.url, *ADMIN, headers={"User-Agent": HOSTILE})
    for path in (*PAGES, "/console/admin/requests?state=all", f"/console/audit?q={HOSTILE[:40]}"):
        page = admin.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert not _unescaped(page.text), path
    newest = records(gw, user=READER[0], event="decision")[0]
    detail = admin.get(f"/console/audit/record/{newest['seq']}")
    assert HOSTILE not in detail.text
    assert "&lt;img src=x onerror" in detail.text


def test_hostile_values_are_escaped_on_the_review_page(gw: RunningGateway) -> None:
    """A held review's statement (highlighted), params, reason, author and sample rows and columns render as text."""
    statement = f"UPDATE t SET v = '{HOSTILE}' WHERE k = ?"
    sample = {
        "columns": ["k", HOSTILE],
        "primary_key": ["k"],
        "before": [[1, HOSTILE], [2, None]],
        "after": [[1, f"{HOSTILE}!"], None],
        "more": True,
    }
    step = {"kind": "write", "command": "UPDATE", "tables": [f"db.{HOSTILE}"], "rows_affected": 2, "sample_note": None}
    new = NewReview(
        id=new_review_id(),
        digest="0" * 64,
        author=f"{HOSTILE}@example.com",
        author_person=("https://elsewhere.example", HOSTILE),
        target="shop",
        grant=HOSTILE,
        transaction=False,
        statements=[{"sql": statement, "executed": statement, "params": [HOSTILE]}],
        reason=HOSTILE,
        dry_run={"executed": True, "rolled_back": True, "statements": [{**step, "sample": sample}]},
        reviewers=["group:db-admins"],
        min_approvals=1,
        valid_for=3600.0,
    )
    app_state(gw).services.reviews.create(new)
    admin = sign_in(gw.url, *ADMIN)
    page = admin.get("/console/reviews")
    assert page.status_code == 200
    assert new.id in page.text
    assert not _unescaped(page.text)
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.text  # the statement, highlighted: its text escaped
    assert '<th scope="col">&#34;&gt;&lt;img src=x onerror' in page.text  # a column name
    changed = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;!"
    assert f"<mark>{changed}</mark>" in page.text  # a changed cell, after
    assert "style=" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'; script-src 'none'")


def test_csv_cells_are_formula_safe(gw: RunningGateway) -> None:
    """Result CSV and audit export neutralise cells a spreadsheet would run (=, +, -, @)."""
    reader = sign_in(gw.url, *READER, headers={"User-Agent": '=HYPERLINK("http://evil.example")'})
    sql = "SELECT '=1+2' AS `=x`, '@SUM(A1)' AS b, '-3' AS c, '+cmd' AS d"
    reply = reader.post("/console/query.csv", data={"target": "shop", "sql": sql, "csrf": csrf_of(reader)})
    assert reply.status_code == 200
    assert reply.headers["content-disposition"].startswith("attachment")
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert rows == [["'=x", "b", "c", "d"], ["'=1+2", "'@SUM(A1)", "-3", "'+cmd"]]
    admin = sign_in(gw.url, *ADMIN)
    export = admin.get("/console/audit/export", params={"format": "csv", "user": READER[0]})
    assert export.status_code == 200
    cells = [cell for row in csv.reader(io.StringIO(export.text)) for cell in row]
    assert '\'=HYPERLINK("http://evil.example")' in cells
    assert not any(cell.startswith(("=", "@", "+")) for cell in cells)
    jsonl = admin.get("/console/audit/export", params={"format": "jsonl", "user": READER[0]})
    assert jsonl.status_code == 200
    assert jsonl.text.count("\n") >= 1


def test_idle_and_absolute_timeouts_and_logout(gw: RunningGateway, clock: MovableClock) -> None:
    """A session ends after the idle timeout, after the absolute timeout however busy, and at logout."""
    idle = sign_in(gw.url, *READER)
    assert idle.get("/console/").status_code == 200
    clock.advance(601)  # idle_timeout is 600 s
    assert idle.get("/console/").headers["location"].startswith("/console/login")
    busy = sign_in(gw.url, *READER)
    for _ in range(6):  # 6 x 500 s: never idle for 600 s, but past the 3000 s absolute timeout
        clock.advance(500)
        reply = busy.get("/console/")
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/console/login")
    clock.offset = timedelta()  # back to the token's time: a new session must not be past its token's expiry
    out = sign_in(gw.url, *READER)
    cookie = dict(out.cookies)
    assert out.post("/console/logout", data={"csrf": csrf_of(out)}).headers["location"] == "/console/signed-out"
    replay = httpx.get(f"{gw.url}/console/", cookies=cookie, follow_redirects=False)
    assert replay.status_code == 303
    assert replay.headers["location"].startswith("/console/login")


def test_nobody_approves_their_own_request_through_the_console(gw: RunningGateway) -> None:
    """An admin's own request gets no buttons, and a forged approve is refused (403) and recorded; another admin may."""
    admin = sign_in(gw.url, *ADMIN)
    token = csrf_of(admin)
    asked = admin.post(
        "/console/requests",
        data={"target": "shop", "access": "read", "duration": "1h", "reason": "mine", "csrf": token},
    )
    request_id = asked.headers["location"].split("created=")[1]
    page = admin.get("/console/admin/requests")
    assert "your own request" in page.text
    assert f"/console/admin/requests/{request_id}/approve" not in page.text
    forged = admin.post(f"/console/admin/requests/{request_id}/approve", data={"csrf": token})
    assert forged.status_code == 403
    assert "own access request" in forged.text
    refusal = [e for e in records(gw, user=ADMIN[0], decision="deny") if e.get("access_request") == request_id]
    assert refusal
    assert refusal[0]["via"] == "console"
    other = sign_in(gw.url, "second-admin@example.com", ("db-admins",))
    approved = other.post(
        f"/console/admin/requests/{request_id}/approve", data={"csrf": csrf_of(other), "duration": "30m"}
    )
    assert approved.status_code == 303
    edits = records(gw, event="policy_edit", user="second-admin@example.com")
    assert edits
    assert edits[0]["access_request"] == request_id
    assert edits[0]["via"] == "console"


def test_stale_policy_edits_are_refused_with_a_clear_message(gw: RunningGateway) -> None:
    """An edit carrying an old revision is refused (412), nothing is written, and the page says why."""
    admin = sign_in(gw.url, *ADMIN)
    token = csrf_of(admin, "/console/admin/policy")
    managed = Path(gw.settings.policies_dir) / "managed.yaml"
    before = managed.read_text() if managed.exists() else ""
    reply = admin.post(
        "/console/admin/revocations",
        data={"csrf": token, "revision": "0" * 64, "subject": "user:nobody@example.com", "target": "*"},
    )
    assert reply.status_code == 412
    assert "changed since this page was loaded" in reply.text
    assert (managed.read_text() if managed.exists() else "") == before


def test_dev_issuer_refuses_foreign_redirects_and_replayed_codes(gw: RunningGateway) -> None:
    """The dev login page never redirects off the gateway's console; a code works once and only with its verifier."""
    with httpx.Client(base_url=gw.url, follow_redirects=False, timeout=30) as http:
        foreign = http.get(
            "/dev-issuer/authorize",
            params={
                "client_id": "gateway-console",
                "redirect_uri": "https://evil.example/console/callback",
                "response_type": "code",
                "state": "s" * 16,
                "code_challenge": "a" * 43,
                "code_challenge_method": "S256",
            },
        )
        assert foreign.status_code == 422
        assert "location" not in foreign.headers
        token = http.post(
            "/dev-issuer/token",
            data={"grant_type": "authorization_code", "code": "made-up", "client_id": "gateway-console"},
        )
        assert token.status_code == 400
        assert token.json()["error"] == "invalid_grant"


def test_roles_are_enforced_on_console_pages(gw: RunningGateway) -> None:
    """An engineer gets 403 on admin and auditor pages (recorded), never their content."""
    reader = sign_in(gw.url, *READER)
    for path in ("/console/admin/policy", "/console/audit", "/console/audit/record/1"):
        reply = reader.get(path)
        assert reply.status_code == 403, path
        assert "role is required" in reply.text, path
    denied = [
        e for e in records(gw, user=READER[0], decision="deny") if str(e.get("route", "")).startswith("GET /console/")
    ]
    assert denied
    assert all(e["via"] == "console" for e in denied)
