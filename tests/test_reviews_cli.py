"""Statement review from the command line (issue 16): `gateway query`, `reviews`, `review ...`, the shell.

The same review gateway as ``test_reviews.py`` (``reviewfixture``): real MariaDB,
the real OIDC provider; the CLI runs in-process with ``GATEWAY_TOKEN``.
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest
from reviewfixture import Env, env, verdict
from rich.console import Console

from gateway.cli.main import main
from gateway.client.http import GatewayClient, HeldForReview, QueryRequest
from gateway.client.reviews import after_hold
from gateway.client.shell import Shell

__all__ = ["env"]  # the module-scoped fixture


def test_the_cli_holds_lists_approves_and_executes(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`gateway query --no-wait` prints the review; `reviews`, `review approve`, `review execute` finish it."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    url = ["--url", env.gateway.url]

    def as_user(user: str, argv: list[str]) -> tuple[int, str, str]:
        monkeypatch.setenv("GATEWAY_TOKEN", env.idp.token(user))
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    before = env.amounts()
    code, _, err = as_user(
        "ann", ["query", *url, "-t", "shop", "UPDATE ledger SET amount = amount + 3 WHERE id = 5", "--no-wait"]
    )
    assert code == 0
    review = err.split("Held for review: ", 1)[1].split()[0]
    assert "dry run: 1 rows (rolled back)" in err
    assert env.amounts() == before
    code, out, _ = as_user("rex", ["reviews", *url, "--json"])
    assert review in {r["id"] for r in orjson.loads(out[out.index("{") :])["to_review"]}
    for reviewer in ("rex", "rae"):
        assert as_user(reviewer, ["review", "approve", review, *url, "-m", "ok"])[0] == 0
    code, out, _ = as_user("ann", ["review", "execute", review, *url, "--json"])
    assert code == 0
    assert orjson.loads(out[out.index("{") :])["results"][0]["rows_affected"] == 1
    assert env.amounts() == {**before, 5: before[5] + 3}
    assert as_user("ann", ["review", "execute", review, *url])[0] == 1  # used: refused, exit status 1


def test_query_waits_for_the_approval_then_executes(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    """The waiting `gateway query` polls (its sleep is where the reviewers act here) and runs the work once."""
    before = env.amounts()
    with GatewayClient(env.gateway.url, env.idp.token("ann")) as client:
        try:
            list(client.stream(QueryRequest("shop", "UPDATE ledger SET amount = amount - 1 WHERE id = 10")))
        except HeldForReview as caught:
            held = caught.reply
        else:
            pytest.fail("the statement was not held for review")
        polls: list[float] = []

        def reviewers_act(seconds: float) -> None:
            polls.append(seconds)
            if len(polls) == 2:  # the first poll sees it pending; then both reviewers approve
                for reviewer in ("rex", "rae"):
                    assert verdict(env, reviewer, held["review"]["id"]).status_code == 200

        code = after_hold(client, held, wait=True, timeout=60, poll=0.01, sleep=reviewers_act)
    assert code == 0
    assert len(polls) == 2
    assert env.amounts() == {**before, 10: before[10] - 1}
    assert '"committed": true' in capsys.readouterr().out


def test_the_shell_prints_a_held_statement_and_carries_on(env: Env) -> None:
    """In the shell a held write prints its review and dry run; nothing ran; the next statement runs."""
    output = io.StringIO()
    before = env.amounts()
    with GatewayClient(env.gateway.url, env.idp.token("ann")) as client:
        shell = Shell(client, "shop", "json", console=Console(file=output, width=200))
        assert shell.execute("DELETE FROM ledger WHERE id = 1") is None
        trailer = shell.execute("SELECT COUNT(*) FROM ledger")
    text = output.getvalue()
    assert "held for review; `gateway review execute rv-" in text
    assert "dry run: 1 rows (rolled back)" in text
    assert trailer is not None
    assert env.amounts() == before


def test_review_show_prints_the_sample_as_a_table_diff(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`gateway review show ID`: the rows before (-) and after (+) and which columns changed; markup shown as text."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "160")
    before = env.amounts()
    with GatewayClient(env.gateway.url, env.idp.token("ann")) as client:
        try:
            list(client.stream(QueryRequest("shop", "UPDATE ledger SET amount = amount + 7 WHERE id IN (3, 4)")))
        except HeldForReview as caught:
            review = str(caught.reply["review"]["id"])
        else:
            pytest.fail("the statement was not held for review")
    monkeypatch.setenv("GATEWAY_TOKEN", env.idp.token("rex"))
    assert main(["review", "show", review, "--url", env.gateway.url]) == 0
    out = capsys.readouterr().out
    assert f"statement 1: UPDATE of {env.db.name}.ledger, 2 row(s); key id" in out
    lines = [" ".join(line.replace("│", " ").replace("┃", " ").split()) for line in out.splitlines()]
    assert "id amount changed" in lines
    assert f"- 3 {before[3]}" in lines
    assert f"+ 3 {before[3] + 7} amount" in lines
    assert f"- 4 {before[4]}" in lines
    assert f"+ 4 {before[4] + 7} amount" in lines
    assert env.amounts() == before
