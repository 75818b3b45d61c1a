"""Statement reviews in the shared state store: the ``ReviewStore`` protocol, shared by every replica.

Same rows, states and rules as the embedded store (``gateway.policy.reviews``),
in the ``reviews`` and ``review_verdicts`` tables (schema version 2). Every
state change is one conditional ``UPDATE`` that names the state it leaves::

    claim:   UPDATE reviews SET state = 'executing' ... WHERE id = ? AND state = 'approved' AND expires_at > now
    finish:  UPDATE reviews SET state = 'executed' | 'failed' ... WHERE id = ? AND state = 'executing'
    expire:  UPDATE reviews SET state = 'expired' WHERE id = ? AND state IN ('pending', 'approved')
             AND expires_at <= now

so two replicas claiming one approved review at the same moment get one
success and one refusal (InnoDB's row lock orders them; the second finds the
state moved): an approval is used once across the whole deployment. A verdict
is one transaction: the review's row locked (``SELECT ... FOR UPDATE``), the
verdict inserted (its primary key is the review and the person, so a person
speaks once, whichever replica they use), the approvals counted, and the
conditional ``UPDATE`` out of ``pending``. Times are the gateway's injected
clock as fixed-width ISO text. Every call blocks: call it off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import pymysql

from gateway.clock import utcnow
from gateway.errors import Conflict, NotFound
from gateway.policy.reviews import COLUMNS, LIVE, NewReview, Review, Verdict, dump, iso, review_of_row
from gateway.state.connection import Cursor, Link
from gateway.state.store import StateStore

_DUPLICATE_KEY = 1062
_SELECT = f"SELECT {COLUMNS} FROM reviews"  # noqa: S608 - fixed columns


class StateReviewStore:
    """``ReviewStore`` in the state store (thread-safe; call it off the event loop)."""

    def __init__(self, store: StateStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        # Its own connection: a verdict may wait on another replica's row lock, never holding up the revision poll.
        self._link = Link(store.settings)
        self._clock = clock

    def close(self) -> None:
        """Close the store's connection."""
        self._link.close()

    def create(self, new: NewReview) -> Review:
        """Store a new pending review (see ``ReviewStore.create``)."""
        now = self._clock()
        values = (
            new.id,
            new.digest,
            new.author,
            *new.author_person,
            new.target,
            new.grant,
            int(new.transaction),
            dump(list(new.statements)),
            new.reason,
            dump(new.dry_run),
            dump(list(new.reviewers)),
            new.min_approvals,
            "pending",
            iso(now),
            iso(now + timedelta(seconds=new.valid_for)),
        )
        self._link.run(
            lambda cur: cur.execute(
                "INSERT INTO reviews (id, digest, author, author_issuer, author_sub, target, grant_name, transaction_, "
                "statements, reason, dry_run, reviewers, min_approvals, state, created_at, expires_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                values,
            )
        )
        return self.get(new.id)

    def get(self, review_id: str) -> Review:
        """One review (see ``ReviewStore.get``)."""
        found = self._link.run(lambda cur: _load(cur, f"{_SELECT} WHERE id = %s", (review_id,)))
        if not found:
            raise NotFound(f"no review {review_id!r}")
        return self._review(*found[0])

    def list(self, *, state: str | None = None, limit: int = 500) -> list[Review]:
        """Reviews, newest first (see ``ReviewStore.list``)."""
        found = self._link.run(lambda cur: _load(cur, f"{_SELECT} ORDER BY created_at DESC, id LIMIT %s", (limit,)))
        reviews = [self._review(*item) for item in found]
        return [r for r in reviews if state is None or r.state == state]

    def decide(self, review_id: str, verdict: Verdict) -> Review:
        """Add a verdict (see ``ReviewStore.decide``): one rejection rejects; ``min_approvals`` persons approve."""
        now = iso(self._clock())

        def work(cur: Cursor) -> None:
            cur.execute("SELECT state, expires_at, min_approvals FROM reviews WHERE id = %s FOR UPDATE", (review_id,))
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"no review {review_id!r}")
            state = "expired" if row[0] in LIVE and row[1] <= now else row[0]
            if state != "pending":
                raise Conflict(f"review {review_id} is {state}, not pending")
            try:
                cur.execute(
                    "INSERT INTO review_verdicts (review_id, issuer, sub, name, verdict, comment, at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (review_id, verdict.issuer, verdict.sub, verdict.name, verdict.verdict, verdict.comment, now),
                )
            except pymysql.err.IntegrityError as exc:
                if exc.args and exc.args[0] == _DUPLICATE_KEY:
                    raise Conflict(f"you have already given your verdict on review {review_id}") from None
                raise
            cur.execute(
                "SELECT COUNT(*) FROM review_verdicts WHERE review_id = %s AND verdict = 'approve'", (review_id,)
            )
            (approvals,) = cur.fetchone()
            moved = "rejected" if verdict.verdict == "reject" else "approved" if approvals >= row[2] else "pending"
            cur.execute(
                "UPDATE reviews SET state = %s WHERE id = %s AND state = 'pending' AND expires_at > %s",
                (moved, review_id, now),
            )
            if cur.rowcount != 1 and moved != "pending":  # MariaDB counts changed rows: pending -> pending is 0
                raise Conflict(f"review {review_id} changed while the verdict was recorded; nothing was written")

        # A Conflict or NotFound raised inside drops the connection, which rolls the transaction back.
        self._link.transaction(work)
        return self.get(review_id)

    def claim(self, review_id: str) -> bool:
        """Approved -> executing, once across every replica (see ``ReviewStore.claim``)."""
        now = iso(self._clock())
        return self._update(
            "UPDATE reviews SET state = 'executing', executed_at = %s "
            "WHERE id = %s AND state = 'approved' AND expires_at > %s",
            (now, review_id, now),
        )

    def finish(self, review_id: str, *, state: str, result: dict[str, Any]) -> None:
        """Executing -> executed | failed (see ``ReviewStore.finish``)."""
        if state not in {"executed", "failed"}:
            raise ValueError(f"a review finishes executed or failed, not {state!r}")
        self._update(
            "UPDATE reviews SET state = %s, result = %s WHERE id = %s AND state = 'executing'",
            (state, dump(result), review_id),
        )

    def expire(self, review_id: str) -> bool:
        """Live and past its expiry -> expired (see ``ReviewStore.expire``)."""
        return self._update(
            "UPDATE reviews SET state = 'expired' WHERE id = %s AND state IN ('pending', 'approved') "
            "AND expires_at <= %s",
            (review_id, iso(self._clock())),
        )

    def _update(self, sql: str, args: tuple[Any, ...]) -> bool:
        def work(cur: Cursor) -> int:
            cur.execute(sql, args)
            return int(cur.rowcount)

        return self._link.run(work) == 1

    def _review(self, row: Sequence[Any], verdicts: tuple[Verdict, ...]) -> Review:
        return review_of_row(row, verdicts, iso(self._clock()))


def _load(cur: Cursor, sql: str, args: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], tuple[Verdict, ...]]]:
    """The review rows ``sql`` selects, each with its verdicts in the order they were given."""
    cur.execute(sql, args)
    rows = [tuple(r) for r in cur.fetchall()]
    if not rows:
        return []
    marks = ", ".join("%s" for _ in rows)
    cur.execute(
        "SELECT review_id, issuer, sub, name, verdict, comment, at FROM review_verdicts "  # noqa: S608 - placeholders
        f"WHERE review_id IN ({marks}) ORDER BY seq",
        tuple(r[0] for r in rows),
    )
    verdicts: dict[str, list[Verdict]] = {}
    for v in cur.fetchall():
        verdicts.setdefault(v[0], []).append(Verdict(*v[1:]))
    return [(row, tuple(verdicts.get(row[0], ()))) for row in rows]
