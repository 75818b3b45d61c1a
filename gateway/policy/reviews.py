"""Statement reviews (issue 16): the ``ReviewStore`` protocol and its embedded SQLite implementation.

A review holds one statement, or a transaction as a whole, that a grant's
``review:`` block kept from running: the author person (issuer, ``sub``) and
the name used, the target and deciding grant, the statements as sent and as
the gateway executes them with their params, the author's reason, the dry
run, the reviewers and approvals the rule asked for, and the digest that binds
them (``gateway.policy.review.review_digest``).

States::

    pending --(min_approvals distinct persons)--> approved --claim--> executing --> executed | failed
    pending --(one rejection)--> rejected
    pending | approved --(past expires_at)--> expired

Every change is one conditional statement in one SQLite transaction (``BEGIN
IMMEDIATE``), so two reviewers, two executions or two replicas sharing
``admin.state_dir`` can never both win: an approval is used at most once. A
review past ``expires_at`` reads as ``expired`` before anyone writes it so.

The protocol is small on purpose (create, get, list, decide, claim, finish,
expire): a MariaDB implementation for the shared state store (issue 14) needs
only these. Methods block: call them off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from gateway.clock import utcnow
from gateway.errors import Conflict, NotFound

REVIEWS_FILE = "reviews.db"  # in admin.state_dir
STATES = ("pending", "approved", "rejected", "executing", "executed", "failed", "expired")
LIVE = ("pending", "approved")  # the states that expire
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS reviews (
  id TEXT PRIMARY KEY, digest TEXT NOT NULL, author TEXT NOT NULL, author_issuer TEXT NOT NULL,
  author_sub TEXT NOT NULL, target TEXT NOT NULL, grant_name TEXT NOT NULL, transaction_ INTEGER NOT NULL,
  statements TEXT NOT NULL, reason TEXT, dry_run TEXT NOT NULL, reviewers TEXT NOT NULL,
  min_approvals INTEGER NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
  executed_at TEXT, result TEXT)""",
    """CREATE TABLE IF NOT EXISTS review_verdicts (
  review_id TEXT NOT NULL, issuer TEXT NOT NULL, sub TEXT NOT NULL, name TEXT NOT NULL, verdict TEXT NOT NULL,
  comment TEXT, at TEXT NOT NULL, PRIMARY KEY (review_id, issuer, sub))""",
)
COLUMNS = (
    "id, digest, author, author_issuer, author_sub, target, grant_name, transaction_, statements, reason, dry_run, "
    "reviewers, min_approvals, state, created_at, expires_at, executed_at, result"
)
_COLUMNS = COLUMNS


@dataclass(frozen=True, slots=True)
class Verdict:
    """One reviewer's approval or rejection: the person, the name used, the comment, when."""

    issuer: str
    sub: str
    name: str
    verdict: str  # "approve" or "reject"
    comment: str | None
    at: str


@dataclass(frozen=True, slots=True)
class Review:
    """One review as stored (``state`` as of the store's clock: a live review past its expiry reads ``expired``)."""

    id: str
    digest: str
    author: str
    author_person: tuple[str, str]
    target: str
    grant: str
    transaction: bool
    statements: tuple[dict[str, Any], ...]  # {"sql": as sent, "executed": as the gateway runs it, "params": [...]}
    reason: str | None
    dry_run: dict[str, Any]
    reviewers: tuple[str, ...]
    min_approvals: int
    state: str
    created_at: str
    expires_at: str
    executed_at: str | None
    result: dict[str, Any] | None
    verdicts: tuple[Verdict, ...]

    @property
    def approvals(self) -> tuple[Verdict, ...]:
        """The approving verdicts."""
        return tuple(v for v in self.verdicts if v.verdict == "approve")

    def view(self) -> dict[str, Any]:
        """The review as the API and the console show it (the author's person, never their token)."""
        return {
            "id": self.id,
            "state": self.state,
            "digest": self.digest,
            "author": self.author,
            "author_issuer": self.author_person[0],
            "target": self.target,
            "grant": self.grant,
            "transaction": self.transaction,
            "statements": [dict(s) for s in self.statements],
            "reason": self.reason,
            "dry_run": self.dry_run,
            "reviewers": list(self.reviewers),
            "min_approvals": self.min_approvals,
            "verdicts": [
                {"name": v.name, "verdict": v.verdict, "comment": v.comment, "at": v.at} for v in self.verdicts
            ],
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "executed_at": self.executed_at,
            "result": self.result,
        }


@dataclass(frozen=True, slots=True)
class NewReview:
    """What the pipeline hands the store for a new pending review (``id`` from ``new_review_id``)."""

    id: str
    digest: str
    author: str
    author_person: tuple[str, str]
    target: str
    grant: str
    transaction: bool
    statements: Sequence[dict[str, Any]]
    reason: str | None
    dry_run: dict[str, Any]
    reviewers: Sequence[str]
    min_approvals: int
    valid_for: float  # seconds


class ReviewStore(Protocol):
    """The shared table of reviews (thread-safe, blocking: call it off the event loop)."""

    def create(self, new: NewReview) -> Review:
        """Store a new pending review; it expires ``valid_for`` after now."""
        ...

    def get(self, review_id: str) -> Review:
        """One review; ``NotFound`` when there is none."""
        ...

    def list(self, *, state: str | None = None, limit: int = 500) -> list[Review]:
        """Reviews, newest first, optionally in one (computed) state."""
        ...

    def decide(self, review_id: str, verdict: Verdict) -> Review:
        """Add a verdict to a pending review and move it on; ``Conflict`` if not pending or the person already spoke."""
        ...

    def claim(self, review_id: str) -> bool:
        """Move an approved, unexpired review to ``executing``; False if another call (or the clock) got there first."""
        ...

    def finish(self, review_id: str, *, state: str, result: dict[str, Any]) -> None:
        """Record how an ``executing`` review ended: ``executed`` or ``failed``, with its result."""
        ...

    def expire(self, review_id: str) -> bool:
        """Write ``expired`` on a live review past its expiry; True only for the call that wrote it."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


def new_review_id() -> str:
    """A fresh, unpredictable review id."""
    return f"rv-{secrets.token_hex(8)}"


def iso(moment: datetime) -> str:
    """A UTC time as the stores keep it: fixed-width ISO text that sorts as it compares."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SqliteReviewStore:
    """``ReviewStore`` in SQLite (``reviews.db`` in ``admin.state_dir``); replicas sharing that directory share it."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._lock = threading.Lock()
        self._clock = clock

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def create(self, new: NewReview) -> Review:
        """Store a new pending review (see ``ReviewStore.create``)."""
        now = self._clock()
        review_id = new.id
        values = (
            review_id,
            new.digest,
            new.author,
            *new.author_person,
            new.target,
            new.grant,
            int(new.transaction),
            _dump(list(new.statements)),
            new.reason,
            _dump(new.dry_run),
            _dump(list(new.reviewers)),
            new.min_approvals,
            "pending",
            iso(now),
            iso(now + timedelta(seconds=new.valid_for)),
        )
        with self._lock:
            self._conn.execute(
                "INSERT INTO reviews (id, digest, author, author_issuer, author_sub, target, grant_name, transaction_, "
                "statements, reason, dry_run, reviewers, min_approvals, state, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return self.get(review_id)

    def get(self, review_id: str) -> Review:
        """One review (see ``ReviewStore.get``)."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM reviews WHERE id = ?",  # noqa: S608 - fixed columns
                (review_id,),
            ).fetchone()
            verdicts = self._verdicts([review_id]) if row else {}
        if row is None:
            raise NotFound(f"no review {review_id!r}")
        return self._review(row, verdicts.get(review_id, ()))

    def list(self, *, state: str | None = None, limit: int = 500) -> list[Review]:
        """Reviews, newest first (see ``ReviewStore.list``)."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM reviews ORDER BY created_at DESC LIMIT ?",  # noqa: S608 - fixed columns
                (limit,),
            ).fetchall()
            verdicts = self._verdicts([r[0] for r in rows])
        found = [self._review(r, verdicts.get(r[0], ())) for r in rows]
        return [r for r in found if state is None or r.state == state]

    def decide(self, review_id: str, verdict: Verdict) -> Review:
        """Add a verdict (see ``ReviewStore.decide``): one rejection rejects; ``min_approvals`` persons approve."""
        now = iso(self._clock())
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT state, expires_at, min_approvals FROM reviews WHERE id = ?", (review_id,)
                ).fetchone()
                if row is None or row[0] != "pending" or row[1] <= now:
                    self._conn.execute("ROLLBACK")
                    return self._refuse(review_id, "pending")
                try:
                    self._conn.execute(
                        "INSERT INTO review_verdicts (review_id, issuer, sub, name, verdict, comment, at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (review_id, verdict.issuer, verdict.sub, verdict.name, verdict.verdict, verdict.comment, now),
                    )
                except sqlite3.IntegrityError:
                    self._conn.execute("ROLLBACK")
                    raise Conflict(f"you have already given your verdict on review {review_id}") from None
                (approvals,) = self._conn.execute(
                    "SELECT COUNT(*) FROM review_verdicts WHERE review_id = ? AND verdict = 'approve'", (review_id,)
                ).fetchone()
                state = "rejected" if verdict.verdict == "reject" else "approved" if approvals >= row[2] else "pending"
                self._conn.execute("UPDATE reviews SET state = ? WHERE id = ?", (state, review_id))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        return self.get(review_id)

    def claim(self, review_id: str) -> bool:
        """Approved -> executing, once (see ``ReviewStore.claim``)."""
        now = iso(self._clock())
        with self._lock:
            changed = self._conn.execute(
                "UPDATE reviews SET state = 'executing', executed_at = ? "
                "WHERE id = ? AND state = 'approved' AND expires_at > ?",
                (now, review_id, now),
            ).rowcount
        return changed == 1

    def finish(self, review_id: str, *, state: str, result: dict[str, Any]) -> None:
        """Executing -> executed | failed (see ``ReviewStore.finish``)."""
        if state not in {"executed", "failed"}:
            raise ValueError(f"a review finishes executed or failed, not {state!r}")
        with self._lock:
            self._conn.execute(
                "UPDATE reviews SET state = ?, result = ? WHERE id = ? AND state = 'executing'",
                (state, _dump(result), review_id),
            )

    def expire(self, review_id: str) -> bool:
        """Live and past its expiry -> expired (see ``ReviewStore.expire``)."""
        now = iso(self._clock())
        with self._lock:
            changed = self._conn.execute(
                "UPDATE reviews SET state = 'expired' WHERE id = ? AND state IN ('pending', 'approved') "
                "AND expires_at <= ?",
                (review_id, now),
            ).rowcount
        return changed == 1

    def _refuse(self, review_id: str, wanted: str) -> Review:
        current = self._get_locked(review_id)
        raise Conflict(f"review {review_id} is {current.state}, not {wanted}")

    def _get_locked(self, review_id: str) -> Review:
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM reviews WHERE id = ?", (review_id,)).fetchone()  # noqa: S608 - fixed columns
        if row is None:
            raise NotFound(f"no review {review_id!r}")
        return self._review(row, self._verdicts([review_id]).get(review_id, ()))

    def _verdicts(self, ids: Sequence[str]) -> dict[str, tuple[Verdict, ...]]:
        out: dict[str, list[Verdict]] = {}
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = self._conn.execute(
            "SELECT review_id, issuer, sub, name, verdict, comment, at FROM review_verdicts "  # noqa: S608 - placeholders only
            f"WHERE review_id IN ({marks}) ORDER BY at",
            tuple(ids),
        ).fetchall()
        for row in rows:
            out.setdefault(row[0], []).append(Verdict(*row[1:]))
        return {k: tuple(v) for k, v in out.items()}

    def _review(self, row: tuple[Any, ...], verdicts: tuple[Verdict, ...]) -> Review:
        return review_of_row(row, verdicts, iso(self._clock()))


def review_of_row(row: Sequence[Any], verdicts: tuple[Verdict, ...], now: str) -> Review:
    """A review from its row (the columns of ``COLUMNS``, in order); a live one past ``now`` reads ``expired``."""
    state = row[13]
    if state in LIVE and row[15] <= now:
        state = "expired"
    return Review(
        id=row[0],
        digest=row[1],
        author=row[2],
        author_person=(row[3], row[4]),
        target=row[5],
        grant=row[6],
        transaction=bool(row[7]),
        statements=tuple(json.loads(row[8])),
        reason=row[9],
        dry_run=json.loads(row[10]),
        reviewers=tuple(json.loads(row[11])),
        min_approvals=int(row[12]),
        state=state,
        created_at=row[14],
        expires_at=row[15],
        executed_at=row[16],
        result=None if row[17] is None else json.loads(row[17]),
        verdicts=verdicts,
    )


def dump(value: object) -> str:
    """Compact JSON text of a review's column (no NaN)."""
    return _dump(value)


def _dump(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
