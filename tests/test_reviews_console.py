"""Statement review in the web console (issue 16): held from the query page, decided in the queue, executed once.

A dev-mode gateway with the console on the review policy (``reviewfixture``);
people sign in through the dev issuer's login page, as in the console's other
tests. The console calls the API's own route functions, so the checks are the
API's; these tests prove the pages reach them, escape what they show, carry
the CSRF token, and refuse the author as a reviewer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from conftest import RunningGateway, ScratchDatabase
from consolefixture import MovableClock, app_state, console_gateway, csrf_of, sign_in
from oidcfixture import OidcProvider
from reviewfixture import ledger, review_database, write_review_policy

AUTHOR = ("ann@example.com", ("engineers", "reviewers"))
REVIEWERS = (("rex@example.com", ("reviewers",)), ("rae@example.com", ("reviewers",)))
_REVIEW_ID = re.compile(r"review (rv-[0-9a-f]{16}) was requested")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider) -> Iterator[tuple[RunningGateway, ScratchDatabase]]:
    """A console gateway on the review policy and a database of its own."""
    with review_database() as db:
        tmp = tmp_path_factory.mktemp("review-console")
        for running in console_gateway(tmp, idp, db, MovableClock()):
            write_review_policy(tmp / "policies", db)  # gateway_settings wrote the shared test policy first
            app_state(running).services.policies.load()
            yield running, db


def _hold(author: httpx.Client, sql: str) -> str:
    reply = author.post(
        "/console/query", data={"target": "shop", "sql": sql, "csrf": csrf_of(author, "/console/query")}
    )
    assert reply.status_code == 202, reply.text
    found = _REVIEW_ID.search(reply.text)
    assert found is not None, reply.text
    return found.group(1)


def test_a_statement_held_from_the_query_page_is_reviewed_and_executed_in_the_console(
    gw: tuple[RunningGateway, ScratchDatabase],
) -> None:
    """Query page: held (202, nothing ran); the queue shows it escaped to both reviewers; the author executes it."""
    gateway, db = gw
    author = sign_in(gateway.url, *AUTHOR)
    before = ledger(db)
    review = _hold(author, "UPDATE ledger SET amount = amount + 11 WHERE id = 1 AND '<b>x</b>' = '<b>x</b>'")
    assert ledger(db) == before
    for name, groups in REVIEWERS:
        reviewer = sign_in(gateway.url, name, groups)
        page = reviewer.get("/console/reviews")
        assert page.status_code == 200
        assert review in page.text
        assert "&lt;b&gt;x&lt;/b&gt;" in page.text  # the statement is escaped
        assert "<b>x</b>" not in page.text
        assert "dry run: <strong>1</strong> rows affected, rolled back" in page.text
        assert '<span class="k">UPDATE</span>' in page.text  # highlighted on the server, CSS classes only
        assert 'style="' not in page.text
        amount, after = before[1], before[1] + 11
        assert f'<td class=" changed"><mark>{amount}</mark></td>' in page.text  # the row before, its changed cell
        assert f'<td class=" changed"><mark>{after}</mark></td>' in page.text  # and after
        done = reviewer.post(f"/console/reviews/{review}/approve", data={"csrf": csrf_of(reviewer), "comment": "ok"})
        assert done.status_code == 303, done.text
    mine = author.get("/console/reviews")
    assert f"/console/reviews/{review}/execute" in mine.text
    executed = author.post(f"/console/reviews/{review}/execute", data={"csrf": csrf_of(author)})
    assert executed.status_code == 303, executed.text
    assert ledger(db) == {**before, 1: before[1] + 11}
    again = author.post(f"/console/reviews/{review}/execute", data={"csrf": csrf_of(author)})
    assert again.status_code == 409
    assert "review_used" in again.text


def test_the_author_gets_no_buttons_and_a_forged_approval_is_refused(
    gw: tuple[RunningGateway, ScratchDatabase],
) -> None:
    """The author (a reviewer by group) sees no approve form for her own review; posting one anyway is a 403."""
    gateway, _ = gw
    author = sign_in(gateway.url, *AUTHOR)
    review = _hold(author, "DELETE FROM ledger WHERE id = 2")
    page = author.get("/console/reviews")
    assert f"/console/reviews/{review}/approve" not in page.text
    forged = author.post(f"/console/reviews/{review}/approve", data={"csrf": csrf_of(author)})
    assert forged.status_code == 403
    assert "own statements" in forged.text


def test_review_actions_need_the_csrf_token(gw: tuple[RunningGateway, ScratchDatabase]) -> None:
    """Approve without the CSRF token: 403 from the console's CSRF check, and the review stays pending."""
    gateway, _ = gw
    author = sign_in(gateway.url, *AUTHOR)
    review = _hold(author, "DELETE FROM ledger WHERE id = 3")
    reviewer = sign_in(gateway.url, *REVIEWERS[0])
    refused = reviewer.post(f"/console/reviews/{review}/approve", data={"comment": "no token"})
    assert refused.status_code == 403
    assert "CSRF" in refused.text or "forbidden" in refused.text
    assert review in reviewer.get("/console/reviews").text
    stored = app_state(gateway).services.reviews.get(review)
    assert (stored.state, stored.verdicts) == ("pending", ())
