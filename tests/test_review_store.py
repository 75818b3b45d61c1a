"""The review stores' contract, run against both: the embedded SQLite store and the shared state store (MariaDB).

States move only forward, approvals are per person, a claim wins once (also
raced from several instances, as replicas do: several SQLite connections to one
file, several state-store instances on one MariaDB database), time expires.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from statefixture import scratch_state_db, state_root_query

from gateway.errors import Conflict, NotFound
from gateway.policy.reviews import NewReview, ReviewStore, SqliteReviewStore, Verdict, new_review_id
from gateway.state.reviews import StateReviewStore
from gateway.state.store import StateStore

Opener = Callable[[], ReviewStore]


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


@pytest.fixture(params=["sqlite", "mariadb"])
def opener(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Opener]:
    """Opens store instances on one fresh store (``clock``): each a replica's view of the same reviews."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":

            def one() -> ReviewStore:
                return SqliteReviewStore(tmp_path / "reviews.db", clock=clock)

        else:
            settings = stack.enter_context(scratch_state_db())

            def one() -> ReviewStore:
                state = StateStore.open(settings)  # each instance migrates (once: then it finds version 2)
                stack.callback(state.close)
                return StateReviewStore(state, clock=clock)

        def opened() -> ReviewStore:
            instance = one()
            stack.callback(instance.close)
            return instance

        yield opened


@pytest.fixture
def store(opener: Opener) -> ReviewStore:
    """A fresh store on ``clock``."""
    return opener()


def test_min_approvals_counts_distinct_persons(store: ReviewStore) -> None:
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


def test_one_rejection_rejects(store: ReviewStore) -> None:
    """A rejection ends a pending review; it can no longer be approved or claimed."""
    review = store.create(_new(min_approvals=2))
    assert store.decide(review.id, _verdict("bob", "reject")).state == "rejected"
    with pytest.raises(Conflict):
        store.decide(review.id, _verdict("cat"))
    assert not store.claim(review.id)


def test_a_claim_wins_once_even_when_raced(store: ReviewStore, opener: Opener) -> None:
    """Eight threads on four instances (replicas) claim one approved review at once: exactly one wins."""
    review = store.create(_new())
    assert not store.claim(review.id)  # pending: nothing to claim
    store.decide(review.id, _verdict("bob"))
    instances = [store, opener(), opener(), opener()]
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def claim(instance: ReviewStore) -> None:
        barrier.wait()
        wins.append(instance.claim(review.id))

    threads = [threading.Thread(target=claim, args=(instances[i % 4],)) for i in range(8)]
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


def test_reviews_expire_pending_or_approved(store: ReviewStore, clock: Clock) -> None:
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


def test_unknown_review(store: ReviewStore) -> None:
    """An unknown id is NotFound for get and decide."""
    with pytest.raises(NotFound):
        store.get("rv-nope")
    with pytest.raises(NotFound):
        store.decide("rv-nope", _verdict("bob"))


def test_a_verdict_on_one_instance_counts_on_another(store: ReviewStore, opener: Opener) -> None:
    """Requested through one instance, approved through two others by two persons; one person twice is refused."""
    other, third = opener(), opener()
    review = store.create(_new(min_approvals=2))
    assert other.get(review.id).state == "pending"
    assert other.decide(review.id, _verdict("bob")).state == "pending"
    with pytest.raises(Conflict, match="already"):
        third.decide(review.id, _verdict("bob"))
    assert third.decide(review.id, _verdict("cat")).state == "approved"
    assert [v.name for v in store.get(review.id).verdicts] == ["bob@example.com", "cat@example.com"]
    assert [r.id for r in other.list(state="approved")] == [review.id]


def test_a_version_1_state_store_is_upgraded_to_version_2() -> None:
    """A store as a version-1 gateway left it (no review tables) gets migration 2 alone at the next open."""
    with scratch_state_db() as settings:
        StateStore.open(settings).close()
        db = settings.database
        state_root_query(f"DROP TABLE `{db}`.review_verdicts, `{db}`.reviews")
        state_root_query(f"DELETE FROM `{db}`.state_schema_version WHERE version = 2")
        upgraded = StateStore.open(settings)
        try:
            assert upgraded.migrated == [2]
            reviews = StateReviewStore(upgraded)
            created = reviews.create(_new())
            assert reviews.get(created.id).state == "pending"
            reviews.close()
        finally:
            upgraded.close()
