"""Statement review end to end (issue 16): real MariaDB, the real OIDC provider, a real gateway.

The author's write does not run: the reply is 202 with the review and its dry
run (checked in MariaDB: nothing changed). Reviewers the rule names approve
(never the author person, under any name); the author executes once; replays,
changed statements or params, expiry (the app's injected clock) and
revocations are refused with their own codes; a reviewed transaction is
all-or-nothing; the audit log links the story by review id.
"""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta
from typing import Any

import httpx
from conftest import (
    root_query,
)
from reviewfixture import Env, approved, ask, audit, env, execute, problem, verdict

__all__ = ["env"]  # the module-scoped fixture


def test_a_write_needing_review_does_not_run_and_its_dry_run_counts(env: Env) -> None:
    """202 with the analysis and per-statement counts; MariaDB unchanged; listed as mine and to review."""
    before = env.amounts()
    body = ask(env, "UPDATE ledger SET amount = amount + 1 WHERE id <= ?", [3])
    assert env.amounts() == before
    review = body["review"]
    assert body["status"] == "review_required"
    assert body["analysis"] == {"kind": "write", "tables": [f"{env.db.name}.ledger"], "grant": "eng-write"}
    assert body["dry_run"]["executed"] is True
    assert body["dry_run"]["rolled_back"] is True
    assert [s["rows_affected"] for s in body["dry_run"]["statements"]] == [3]
    assert (review["state"], review["author"], review["reason"], review["min_approvals"]) == (
        "pending",
        "ann@example.com",
        "ticket 42",
        2,
    )
    assert review["statements"][0]["params"] == [3]
    with env.client("ann") as http:
        mine = http.get("/v1/reviews").json()
    with env.client("rex") as http:
        theirs = http.get("/v1/reviews").json()
        shown = http.get(f"/v1/reviews/{review['id']}")
    with env.client("olga") as http:
        hidden = http.get(f"/v1/reviews/{review['id']}")
    assert review["id"] in {r["id"] for r in mine["mine"]}
    assert review["id"] not in {r["id"] for r in mine["to_review"]}  # ann is a reviewer, but not of her own
    assert review["id"] in {r["id"] for r in theirs["to_review"]}
    assert shown.json()["review"]["dry_run"] == body["dry_run"]
    assert problem(hidden) == (404, "not_found")  # neither author nor reviewer: as if it did not exist


def test_reads_run_and_a_stream_request_gets_the_review(env: Env) -> None:
    """The rule holds writes only: a read runs (200); a write asked as an NDJSON stream is held the same way."""
    with env.client("ann") as http:
        read = http.post("/v1/query", json={"target": "shop", "sql": "SELECT COUNT(*) AS n FROM ledger"})
        streamed = http.post(
            "/v1/query",
            json={"target": "shop", "sql": "DELETE FROM ledger WHERE id = 9"},
            headers={"Accept": "application/x-ndjson"},
        )
    assert read.status_code == 200, read.text
    assert streamed.status_code == 202, streamed.text
    assert streamed.json()["dry_run"]["statements"][0]["rows_affected"] == 1
    assert 9 in env.amounts()


def test_nobody_approves_their_own_review_under_any_name(env: Env) -> None:
    """The author (a reviewer by group), her second client with the same email, and her renamed self: all 403."""
    review = str(ask(env, "UPDATE ledger SET amount = 0 WHERE id = 10")["review"]["id"])
    assert problem(verdict(env, "ann", review)) == (403, "forbidden")
    assert problem(verdict(env, "ann-laptop", review)) == (403, "forbidden")  # another sub, the same name
    env.idp.update_user("ann", email="ann.renamed@example.com", groups=["engineers", "reviewers"])
    try:
        renamed = verdict(env, "ann", review)  # the same person (issuer, sub) under a new name
    finally:
        env.idp.update_user("ann", email="ann@example.com", groups=["engineers", "reviewers"])
    assert problem(renamed) == (403, "forbidden")
    assert "own" in renamed.json()["detail"]
    assert problem(verdict(env, "audra", review)) == (403, "forbidden")  # sees it (auditor), is no reviewer
    assert problem(verdict(env, "olga", review)) == (404, "not_found")  # neither: it does not exist for her
    with env.client("rex") as http:
        state = http.get(f"/v1/reviews/{review}").json()["review"]
    assert (state["state"], state["verdicts"]) == ("pending", [])
    refusals = [
        e
        for e in audit(env, "decision")
        if e.get("review") == review and e.get("route", "").startswith(f"POST /v1/reviews/{review}/approve")
    ]
    assert sorted(e["user"] for e in refusals) == [
        "ann.renamed@example.com",
        "ann@example.com",
        "ann@example.com",
        "audra@example.com",
    ]
    assert {(e["decision"], e["code"]) for e in refusals} == {("deny", "forbidden")}


def test_approve_then_execute_runs_exactly_once(env: Env) -> None:
    """Two distinct reviewers approve; only the author executes; it runs once; a replay is review_used."""
    before = env.amounts()
    review = str(ask(env, "UPDATE ledger SET amount = amount + 7 WHERE id IN (1, 2)")["review"]["id"])
    first = verdict(env, "rex", review)
    assert first.json()["review"]["state"] == "pending"  # 1 of 2
    assert problem(verdict(env, "rex", review)) == (409, "conflict")  # the same person twice counts once
    assert problem(execute(env, review)) == (409, "review_not_approved")
    assert verdict(env, "rae", review).json()["review"]["state"] == "approved"
    assert problem(execute(env, review, user="rex")) == (403, "forbidden")  # not the author
    done = execute(env, review)
    assert done.status_code == 200, done.text
    assert done.json()["results"][0]["rows_affected"] == 2
    after = env.amounts()
    assert after == {**before, 1: before[1] + 7, 2: before[2] + 7}
    assert problem(execute(env, review)) == (409, "review_used")
    assert env.amounts() == after
    with env.client("ann") as http:
        shown = http.get(f"/v1/reviews/{review}").json()["review"]
    assert (shown["state"], shown["result"]) == ("executed", {"rows_affected": [2]})


def test_one_changed_byte_or_param_is_another_review(env: Env) -> None:
    """The approval binds the exact text and params: a changed byte or param is a new, unapproved review."""
    sql = "UPDATE ledger SET amount = amount - ? WHERE id = 4"
    bound_id = approved(env, sql, [1])
    with env.client("ann") as http:
        bound = http.get(f"/v1/reviews/{bound_id}").json()["review"]
    for changed_sql, params in ((sql.replace("- ?", "+ ?"), [1]), (sql, [2]), (sql.replace("= 4", "= 5"), [1])):
        other = ask(env, changed_sql, params)["review"]
        assert other["id"] != bound_id
        assert other["digest"] != bound["digest"]
        assert problem(execute(env, other["id"])) == (409, "review_not_approved")
    before = env.amounts()
    assert execute(env, bound_id).status_code == 200
    assert env.amounts() == {**before, 4: before[4] - 1}


def test_an_expired_review_is_refused(env: Env) -> None:
    """Past valid_for (the app's clock moved on) an approved review is review_expired; an expired record is written."""
    review = approved(env, "UPDATE ledger SET amount = 1 WHERE id = 6")
    before = env.amounts()
    env.clock.shift += timedelta(hours=1, seconds=1)
    try:
        refused = execute(env, review)
    finally:
        env.clock.shift -= timedelta(hours=1, seconds=1)
    assert problem(refused) == (409, "review_expired")
    assert env.amounts() == before
    newest = [e["action"] for e in audit(env, "review") if e["review"] == review]
    assert newest[:2] == ["execute_refused", "expired"]


def test_a_revocation_stops_an_approved_review(env: Env) -> None:
    """A revocation of the author after approval: the execution is refused (403 revoked) by the policy decision."""
    review = approved(env, "UPDATE ledger SET amount = 2 WHERE id = 7")
    before = env.amounts()
    revocation = env.gateway.settings.policies_dir / "revoked.yaml"
    revocation.write_text(
        'version: 1\nrevocations:\n  - {subject: "user:ann@example.com", target: shop, reason: "incident"}\n',
        encoding="utf-8",
    )
    env.reload_policy()
    try:
        refused = execute(env, review)
    finally:
        revocation.unlink()
        env.reload_policy()
    assert problem(refused) == (403, "revoked")
    assert env.amounts() == before
    # The refusal came from the policy decision, before the approval was claimed: once lifted, it still runs once.
    assert execute(env, review).status_code == 200
    assert env.amounts()[7] == 2


def test_a_reviewed_transaction_is_all_or_nothing(env: Env) -> None:
    """A transaction is reviewed as a whole; if one count moved since the dry run, none of it commits."""
    statements = [
        {"sql": "UPDATE ledger SET amount = amount + 1000 WHERE id = 1"},
        {"sql": "UPDATE ledger SET amount = amount + 1000 WHERE id = 8"},
    ]
    with env.client("ann") as http:
        held = http.post("/v1/transaction", json={"target": "shop", "statements": statements, "reason": "month end"})
    assert held.status_code == 202, held.text
    assert [s["rows_affected"] for s in held.json()["dry_run"]["statements"]] == [1, 1]
    review = held.json()["review"]["id"]
    assert held.json()["review"]["transaction"] is True
    for reviewer in ("rex", "rae"):
        assert verdict(env, reviewer, review).status_code == 200
    root_query(f"DELETE FROM `{env.db.name}`.ledger WHERE id = 8")
    before = env.amounts()
    refused = execute(env, review)
    assert problem(refused) == (409, "review_rows_changed")
    assert env.amounts() == before  # the first UPDATE ran and was rolled back with the rest
    assert problem(execute(env, review)) == (409, "review_used")


def test_ddl_is_never_dry_run(env: Env) -> None:
    """DDL under review: the analysis stands in for a dry run; the table exists only after the execution."""
    table = f"t_{secrets.token_hex(3)}"
    body = ask(env, f"CREATE TABLE {table} (id INT PRIMARY KEY)", user="olga")
    assert body["dry_run"]["executed"] is False
    assert body["dry_run"]["statements"][0]["command"] == "CREATE TABLE"
    assert body["dry_run"]["statements"][0]["tables"] == [f"{env.db.name}.{table}"]
    exists = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = %s"
    assert root_query(exists, (env.db.name, table)) == [(0,)]
    assert verdict(env, "rex", body["review"]["id"]).json()["review"]["state"] == "approved"  # min_approvals 1
    assert execute(env, body["review"]["id"], user="olga").status_code == 200
    assert root_query(exists, (env.db.name, table)) == [(1,)]


def test_a_row_threshold_holds_only_big_writes(env: Env) -> None:
    """min_rows: 2 on the ledger: a one-row update commits at once (200); a five-row one is held, unchanged."""
    with env.client("bo") as http:
        small = http.post("/v1/query", json={"target": "shop", "sql": "UPDATE ledger SET amount = 5 WHERE id = 3"})
    assert small.status_code == 200, small.text
    assert env.amounts()[3] == 5
    before = env.amounts()
    body = ask(env, "UPDATE ledger SET amount = 0 WHERE id <= 5", user="bo")
    assert body["dry_run"]["statements"][0]["rows_affected"] == 5
    assert env.amounts() == before


def test_the_audit_log_links_the_story(env: Env) -> None:
    """requested, dry_run, approved twice, executed: one review id; the dry run's and execution's records too."""
    review = approved(env, "UPDATE ledger SET amount = amount * 2 WHERE id = 2")
    assert execute(env, review).status_code == 200
    env.gateway.audit_settled()
    steps = [e for e in reversed(audit(env, "review")) if e["review"] == review]
    assert [(e["action"], e["state"], e["user"]) for e in steps] == [
        ("requested", "pending", "ann@example.com"),
        ("dry_run", "pending", "ann@example.com"),
        ("approved", "pending", "rex@example.com"),
        ("approved", "approved", "rae@example.com"),
        ("executed", "executed", "ann@example.com"),
    ]
    assert len({e["digest"] for e in steps}) == 1
    assert steps[1]["rows_affected"] == [1]
    outcomes = [e for e in audit(env, "outcome") if e.get("review") == review]
    assert sorted((e["committed"], e["rows"]) for e in outcomes) == [(False, 1), (True, 1)]
    decisions = [e for e in reversed(audit(env, "decision")) if e.get("review") == review]
    # the dry run's two sample reads (before, after: test_review_samples.py), then the execution
    assert [(d["decision"], d["grant"], d["kind"]) for d in decisions] == [
        ("allow", "eng-write", "read"),
        ("allow", "eng-write", "read"),
        ("allow", "eng-write", "write"),
    ]
    dry_run_request = steps[0]["request_id"]
    assert any(e["request_id"] == dry_run_request and e["decision"] == "allow" for e in audit(env, "decision"))


def test_a_rejection_needs_a_comment_and_ends_the_review(env: Env) -> None:
    """Reject without a comment: 422; with one: rejected, no further verdicts, execute is review_rejected."""
    review = str(ask(env, "DELETE FROM ledger WHERE id = 1")["review"]["id"])
    with env.client("rex") as http:
        bare = http.post(f"/v1/reviews/{review}/reject", json={})
    assert problem(bare) == (422, "invalid_request")
    rejected = verdict(env, "rex", review, "reject")
    assert rejected.json()["review"]["state"] == "rejected"
    assert problem(verdict(env, "rae", review)) == (409, "conflict")
    assert problem(execute(env, review)) == (409, "review_rejected")
    assert 1 in env.amounts()


def test_a_pending_review_past_its_time_cannot_beapproved(env: Env) -> None:
    """valid_for counts from the request: an approval after it is review_expired, and the review reads expired."""
    review = str(ask(env, "DELETE FROM ledger WHERE id = 1")["review"]["id"])
    env.clock.shift += timedelta(hours=2)
    try:
        late = verdict(env, "rex", review)
        with env.client("ann") as http:
            state = http.get(f"/v1/reviews/{review}").json()["review"]["state"]
    finally:
        env.clock.shift -= timedelta(hours=2)
    assert problem(late) == (409, "review_expired")
    assert state == "expired"
    assert next(e["action"] for e in audit(env, "review") if e["review"] == review) == "expired"


def test_the_rule_shows_in_me_and_bad_filters_are_refused(env: Env) -> None:
    """/v1/me shows each grant's review rule; /v1/reviews refuses an unknown state; unknown ids are 404."""
    with env.client("ann") as http:
        grants = {g["name"]: g for g in http.get("/v1/me").json()["grants"]}
        bad_state = http.get("/v1/reviews", params={"state": "maybe"})
        unknown = http.get("/v1/reviews/rv-0000000000000000")
    assert grants["eng-write"]["review"] == {
        "writes": True,
        "ddl": False,
        "reviewers": ["group:reviewers"],
        "min_approvals": 2,
        "valid_for": 3600.0,
        "tables": None,
        "min_rows": None,
    }
    assert problem(bad_state) == (422, "invalid_request")
    assert problem(unknown) == (404, "not_found")


def test_two_racing_executions_run_once(env: Env) -> None:
    """Two executions of one approval at the same moment: exactly one runs, the other is review_used."""
    review = approved(env, "UPDATE ledger SET amount = amount + 50 WHERE id = 4")
    before = env.amounts()
    start = threading.Barrier(2)
    replies: list[httpx.Response] = []

    def execute() -> None:
        with env.client("ann") as http:
            start.wait()
            replies.append(http.post(f"/v1/reviews/{review}/execute"))

    threads = [threading.Thread(target=execute) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in replies) == [200, 409]
    assert next(r for r in replies if r.status_code == 409).json()["code"] == "review_used"
    assert env.amounts() == {**before, 4: before[4] + 50}


def test_another_deciding_grant_or_a_revoked_reviewer_is_refused(env: Env) -> None:
    """A new grant that now decides the work: review_policy_changed; a revoked reviewer cannot approve."""
    review = approved(env, "UPDATE ledger SET amount = 3 WHERE id = 3")
    pending = str(ask(env, "UPDATE ledger SET amount = 4 WHERE id = 3")["review"]["id"])
    before = env.amounts()
    extra = env.gateway.settings.policies_dir / "a-extra.yaml"  # read before policy.yaml: its grant decides first
    writer = env.db.accounts["writer"].user
    extra.write_text(
        "version: 1\ngrants:\n"
        f'  - {{name: eng-write-2, subjects: ["group:engineers"], target: shop, access: write, db_user: {writer}}}\n'
        'revocations:\n  - {subject: "user:rex@example.com", target: shop, reason: "on leave"}\n',
        encoding="utf-8",
    )
    env.reload_policy()
    try:
        changed = execute(env, review)
        revoked_reviewer = verdict(env, "rex", pending)
    finally:
        extra.unlink()
        env.reload_policy()
    assert problem(changed) == (409, "review_policy_changed")
    assert "eng-write-2" in changed.json()["detail"]
    assert problem(revoked_reviewer) == (403, "forbidden")
    assert "revoked" in revoked_reviewer.json()["detail"]
    assert env.amounts() == before


def test_a_dry_run_that_fails_makes_no_review(env: Env) -> None:
    """MariaDB refuses the write in the dry run (a duplicate key): the caller gets its error, no review is kept."""
    with env.client("ann") as http:
        mine_before = {r["id"] for r in http.get("/v1/reviews").json()["mine"]}
        failed = http.post("/v1/query", json={"target": "shop", "sql": "INSERT INTO ledger VALUES (1, 1)"})
        mine_after = {r["id"] for r in http.get("/v1/reviews").json()["mine"]}
    assert problem(failed) == (422, "database_error")
    assert mine_after == mine_before
    newest = audit(env, "review")[0]
    assert (newest["action"], newest["error"], newest["state"]) == ("dry_run_failed", "database_error", "failed")


def test_without_a_review_store_held_work_is_refused_not_run(env: Env) -> None:
    """Fail closed: a pipeline without its review store refuses reviewable work (400), streamed or not; reads run."""
    app: Any = env.gateway.server.config.app  # uvicorn types it as any ASGI app; it is create_app's FastAPI
    pipeline = app.state.services.pipeline
    holding, pipeline._holding = pipeline._holding, None
    before = env.amounts()
    try:
        with env.client("ann") as http:
            plain = http.post("/v1/query", json={"target": "shop", "sql": "DELETE FROM ledger WHERE id = 1"})
            streamed = http.post(
                "/v1/query",
                json={"target": "shop", "sql": "DELETE FROM ledger WHERE id = 1"},
                headers={"Accept": "application/x-ndjson"},
            )
            read = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
    finally:
        pipeline._holding = holding
    for reply in (plain, streamed):
        assert problem(reply) == (400, "statement_rejected")
        assert "needs review" in reply.json()["detail"]
    assert read.status_code == 200
    assert env.amounts() == before
