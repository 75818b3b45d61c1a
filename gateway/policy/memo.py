"""Decisions remembered for one policy: the same question gets the answer :func:`decide` gave it.

:func:`~gateway.policy.decide.decide` is a pure function of the caller's
subjects and revocation subjects, the target, each statement's kind,
command, tables and functions, the policy, and the time only through
whether each grant has expired and each revocation is still active. Those
flip only at the policy's own instants (every grant's ``expires``, every
revocation's ``until``), so between two consecutive instants every answer
stays the same. :class:`DecisionMemo` keys an answer on all of those inputs,
with the time reduced to *which interval between the policy's instants it
falls in*; a clock that goes back lands in another interval, hence another
key. A new policy object (any reload or edit) forgets everything.

A hit skips the scan of every grant and revocation, whose cost grows with
the policy (``decide``: 7 µs with the demo policy, 137 µs with 204 grants and
51 revocations; a hit about 1-2 µs; ``docs/benchmarks.md``). Each memo is
bounded (``max_entries``, oldest first out) and used from one thread (the
event loop's).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Generic, TypeVar

from gateway.policy.decide import Decision, decide

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence
    from datetime import datetime

    from gateway.identity.tokens import Identity
    from gateway.policy.types import PolicySet
    from gateway.sql.statements import Statement

MAX_ENTRIES = 4096
T = TypeVar("T")


def instants(policy: PolicySet) -> tuple[datetime, ...]:
    """The sorted instants at which some grant expires or some revocation ends."""
    found = {g.expires for g in policy.grants if g.expires is not None}
    found |= {r.until for r in policy.revocations if r.until is not None}
    return tuple(sorted(found))


class PolicyMemo(Generic[T]):
    """Answers of a pure function of the policy, the time and ``key``, remembered for the policy in force.

    The function must read the time only through grants' expiry and
    revocations' end (see the module docstring); ``key`` must hold every
    other input it reads.
    """

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._max_entries = max_entries
        self._policy: PolicySet | None = None
        self._instants: tuple[datetime, ...] = ()
        self._answers: dict[tuple[Hashable, int], T] = {}
        self.hits = 0
        self.misses = 0

    def get(self, policy: PolicySet, now: datetime, key: Hashable, compute: Callable[[], T]) -> T:
        """The remembered answer for ``key`` at ``now`` under ``policy``, else ``compute()``'s (then remembered)."""
        if policy is not self._policy:
            self._policy = policy
            self._instants = instants(policy)
            self._answers.clear()
        # The interval between the policy's instants that ``now`` falls in: every grant's expiry and every
        # revocation's end reads the same anywhere inside it (expired: now >= expires; active: now < until;
        # bisect_right counts the instants <= now).
        full = (key, bisect.bisect_right(self._instants, now))
        if full in self._answers:
            self.hits += 1
            return self._answers[full]
        self.misses += 1
        answer = compute()
        if len(self._answers) >= self._max_entries:
            del self._answers[next(iter(self._answers))]  # the oldest
        self._answers[full] = answer
        return answer


class DecisionMemo:
    """``decide`` with its answers remembered per policy (see the module docstring)."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self._memo: PolicyMemo[Decision] = PolicyMemo(max_entries=max_entries)

    @property
    def hits(self) -> int:
        """Questions answered from memory."""
        return self._memo.hits

    @property
    def misses(self) -> int:
        """Questions decided."""
        return self._memo.misses

    def decide(
        self,
        identity: Identity,
        statements: Sequence[Statement],
        target: str,
        policy: PolicySet,
        now: datetime,
        *,
        safe_functions: frozenset[str],
    ) -> Decision:
        """What ``decide(identity, statements, target, policy, now, safe_functions=...)`` answers."""
        key = (
            target,
            identity.subjects,
            identity.revocation_subjects,
            tuple((s.kind, s.command, s.tables, s.functions) for s in statements),
            safe_functions,
        )
        return self._memo.get(
            policy, now, key, lambda: decide(identity, statements, target, policy, now, safe_functions=safe_functions)
        )
