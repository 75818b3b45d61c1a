"""Statements running now, per user, so a revocation can cancel them at once.

The pipeline registers each statement (or transaction) with the MariaDB
thread id of the connection running it (``InFlight.admitted``). When a new policy takes a user's
access to a target away (a revocation, or no grant left), ``lost_access``
marks their entries cancelled and returns them; the pipeline then sends
``KILL QUERY`` (a statement) or ``KILL CONNECTION`` (a transaction, which
MariaDB rolls back) over a separate connection of the same database account,
which may kill its own threads without the PROCESS privilege.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import GatewayError, Revoked
from gateway.identity.tokens import Identity
from gateway.policy.decide import active_revocations, effective_grants
from gateway.policy.memo import PolicyMemo
from gateway.policy.types import PolicySet


@dataclass(eq=False)
class Running:
    """One statement or transaction on one connection."""

    identity: Identity
    target: str
    db_user: str
    thread_id: int
    transaction: bool
    request_id: str = "-"  # the request it serves, for the cancellation's audit record
    cancelled: bool = field(default=False)


def still_allowed(identity: Identity, target: str, policy: PolicySet, now: datetime) -> bool:
    """Whether ``identity`` keeps some unexpired, unrevoked grant on ``target``."""
    if any(r.target in {"*", target} for r in active_revocations(identity, policy, now)):
        return False
    return any(g.target == target for g in effective_grants(identity, policy, now))


class InFlight:
    """The running statements, grouped by user."""

    def __init__(self) -> None:
        self._by_user: dict[str, set[Running]] = {}
        # admitted's answers for the policy in force (gateway/policy/memo.py); used on the event loop only.
        self._allowed: PolicyMemo[bool] = PolicyMemo()

    def allows(self, identity: Identity, target: str, policy: PolicySet, now: datetime) -> bool:
        """``still_allowed(identity, target, policy, now)``, remembered for the policy in force."""
        key = (target, identity.subjects, identity.revocation_subjects)
        return self._allowed.get(policy, now, key, lambda: still_allowed(identity, target, policy, now))

    @contextlib.contextmanager
    def admitted(self, running: Running, policy: PolicySet, now: datetime) -> Iterator[Running]:
        """Register ``running`` for the block, once ``policy`` (the one in force now) still allows it.

        Closes the gap between the decision and the registration: a reload in
        between, which no revocation could have seen yet, is seen here.
        """
        with self.track(running):
            if not self.allows(running.identity, running.target, policy, now):
                running.cancelled = True
                raise Revoked(f"access to {running.target} was revoked")
            yield running

    @contextlib.contextmanager
    def track(self, running: Running) -> Iterator[Running]:
        """Register ``running`` for the block."""
        entries = self._by_user.setdefault(running.identity.user, set())
        entries.add(running)
        try:
            yield running
        finally:
            entries.discard(running)
            if not entries:
                self._by_user.pop(running.identity.user, None)

    def count(self) -> int:
        """How many statements are running now."""
        return sum(len(v) for v in self._by_user.values())

    def lost_access(self, policy: PolicySet, now: datetime) -> list[Running]:
        """Mark cancelled, and return, every running entry ``policy`` no longer allows."""
        victims = []
        for entries in list(self._by_user.values()):
            for running in list(entries):
                if not running.cancelled and not still_allowed(running.identity, running.target, policy, now):
                    running.cancelled = True
                    victims.append(running)
        return victims


def as_revoked(error: GatewayError, running: Running | None) -> GatewayError:
    """A statement a revocation cancelled fails as ``revoked``, whatever MariaDB said."""
    if running is not None and running.cancelled and not isinstance(error, Revoked):
        return Revoked(f"access to {running.target} was revoked; the running statement was cancelled")
    return error
