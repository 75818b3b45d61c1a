"""The SQLite review store: states move only forward, approvals are per person, a claim wins once, time expires."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import Conflict, NotFound
from gateway.policy.reviews import NewReview, SqliteReviewStore, Verdict, new_review_id


class Clock:
    """A settable clock (the store takes it as a parameter)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _new(min_approvals: int = 1) -> NewReview:
    return NewReview(
        id=new_review_id(),
        digest="d" * 64,
        author="ann@example.com",
        author_person=("https://idp", "ann"),
        target="shop",
        grant="g",
        transaction=False,
        statements=[{"sql": "DELETE FROM t WHERE id = ?", "executed": "DELETE FROM t WHERE id = ?", "params": [1]}],
        reason="ticket 9",
        dry_run={"executed": True, "statements": [{"rows_affected": 1}]},
        reviewers=["group:db-admins"],
        min_approvals=min_approvals,
        valid_for=3600,
    )


def _verdict(sub: str, verdict: str = "approve") -> Verdict:
    return Verdict("https://idp", sub, f"{sub}@example.com", verdict, "looks right", "")


@pytest.fixture
def clock() -> Clock:
    """A clock at 2026-01-01."""
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[SqliteReviewStore]:
    """A fresh store on ``clock``."""
    opened = SqliteReviewStore(tmp_path / "reviews.db", clock=clock)
    yield opened
    opened.close()


def test_min_approvals_counts_distinct_persons(store: SqliteReviewStore) -> None:
    """Two approvals are needed; the same person twice is a conflict, a second person approves it."""
    review = store.create(_new(min_approvals=2))
    assert (review.state, review.reviewers, review.statements[0]["params"]) == ("pending", ("group:db-admins",), [1])
    assert store.decide(review.id, _verdict("bob")).state == "pending"
    with pytest.raises(Conflict, match="already"):
        store.decide(review.id, _verdict("bob"))
    approved = store.decide(review.id, _verdict("cat"))
    assert approved.state == "approved"
    assert [v.sub for v in approved.approvals] == ["bob", "cat"]
    with pytest.raises(Conflict, match="approved, not pending"):
        store.decide(review.id, _verdict("dan"))


def test_one_rejection_rejects(store: SqliteReviewStore) -> None:
    """A rejection ends a pending review; it can no longer be approved or claimed."""
    review = store.create(_new(min_approvals=2))
    assert store.decide(review.id, _verdict("bob", "reject")).state == "rejected"
    with pytest.raises(Conflict):
        store.decide(review.id, _verdict("cat"))
    assert not store.claim(review.id)


def test_a_claim_wins_once_even_when_raced(store: SqliteReviewStore) -> None:
    """Eight threads claim one approved review: exactly one wins; finishing records the result."""
    review = store.create(_new())
    assert not store.claim(review.id)  # pending: nothing to claim
    store.decide(review.id, _verdict("bob"))
    wins: list[bool] = []
    threads = [threading.Thread(target=lambda: wins.append(store.claim(review.id))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert store.get(review.id).state == "executing"
    store.finish(review.id, state="executed", result={"rows_affected": [1]})
    done = store.get(review.id)
    assert (done.state, done.result) == ("executed", {"rows_affected": [1]})
    store.finish(review.id, state="failed", result={})  # only an executing review finishes
    assert store.get(review.id).state == "executed"


def test_reviews_expire_pending_or_approved(store: SqliteReviewStore, clock: Clock) -> None:
    """Past valid_for a review reads expired, cannot be approved or claimed; expire() writes it once."""
    pending, approved = store.create(_new()), store.create(_new())
    store.decide(approved.id, _verdict("bob"))
    clock.now += timedelta(seconds=3599)
    assert store.get(approved.id).state == "approved"
    assert not store.expire(approved.id)
    clock.now += timedelta(seconds=1)
    assert {store.get(pending.id).state, store.get(approved.id).state} == {"expired"}
    with pytest.raises(Conflict, match="expired"):
        store.decide(pending.id, _verdict("bob"))
    assert not store.claim(approved.id)
    assert store.expire(approved.id)
    assert not store.expire(approved.id)
    assert {r.id for r in store.list(state="expired")} == {approved.id, pending.id}


def test_unknown_review(store: SqliteReviewStore) -> None:
    """An unknown id is NotFound for get and decide."""
    with pytest.raises(NotFound):
        store.get("rv-nope")
    with pytest.raises(NotFound):
        store.decide("rv-nope", _verdict("bob"))
