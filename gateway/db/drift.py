"""The gateway's own privilege check: ``gateway db check`` for each pool's account, run by the account itself.

At start-up, after every policy change and every ``privileges.recheck_interval``
(sooner, ``retry_interval``, after a check that could not run), a background
task (never a request) reads each pool account's ``SHOW GRANTS`` over a side
connection and judges it with the same rules as ``gateway db check``
(``dbprivileges.Needs``). The verdict goes to the ``DriftState`` (``/readyz``,
the metrics and, under ``drift: refuse``, the pools) and to a log event:
``db_privilege_drift`` (warning, every check that finds drift),
``db_privileges_clean`` and ``db_privilege_check_failed`` (on a change).

Is the account's own view enough? For excess, yes: plain ``SHOW GRANTS`` lists
what the account holds directly, what ``PUBLIC`` holds and what its active
role holds, and ``Needs`` judges each held right by its name alone (the
policy's patterns against ``db.table``; whether the table exists does not
matter), so it needs no catalog the account might not see. A role granted
but not active does not list its rights, but its grant line is itself
counted as excess. What the account cannot see is what it *lacks* on tables
it has no right on (``information_schema`` hides them): missing privileges
are reported only by ``gateway db check`` with an administrator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime

import structlog
from asyncmy import errors as db_errors

from gateway.db.driftstate import SHOWN_EXCESS, AccountState, DriftState
from gateway.db.grants import parse_grants
from gateway.db.pools import ConnectionPool, PoolRegistry
from gateway.db.privileges import Needs, account_grants
from gateway.errors import GatewayError
from gateway.policy.store import PolicyStore
from gateway.policy.types import PolicySet
from gateway.settings import PrivilegeSettings, Settings, TargetSettings

log = structlog.get_logger("gateway.privileges")

CHECK_SECONDS = 10.0  # one account's whole check, connecting included


def drift_state(settings: Settings) -> DriftState:
    """Each target's mode: its own ``privilege_drift``, else ``privileges.drift``."""
    modes = {name: t.privilege_drift for name, t in settings.targets.items() if t.privilege_drift is not None}
    return DriftState(modes, default=settings.privileges.drift)


def judge(
    lines: list[str],
    *,
    policy: PolicySet,
    targets: Mapping[str, TargetSettings],
    target: str,
    db_user: str,
    now: datetime,
) -> AccountState:
    """The verdict on one account from its ``SHOW GRANTS`` lines."""
    needs = Needs(account_grants(policy, targets, target, db_user, now))
    excess = tuple(str(e) for e in needs.excess(parse_grants(lines)))
    return AccountState("drift" if excess else "clean", excess, checked_at=now, policy_revision=policy.revision)


class PrivilegeMonitor:
    """Checks every pool's account in the background; woken by policy changes."""

    def __init__(
        self,
        targets: Mapping[str, TargetSettings],
        policies: PolicyStore,
        pools: PoolRegistry,
        *,
        clock: Callable[[], datetime],
        settings: PrivilegeSettings,
    ) -> None:
        self._targets = targets
        self._policies = policies
        self._pools = pools
        self._state: DriftState = pools.drift
        self._clock = clock
        self._settings = settings
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        policies.listeners.append(self.policy_changed)

    def policy_changed(self, _policy: PolicySet) -> None:
        """A policy listener: check again now (safe from any thread)."""
        self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        """Check, then wait for a policy change or the next interval; until cancelled."""
        while True:
            self._wake.clear()
            checked = await self.check_all()
            interval = self._settings.recheck_interval if checked else self._settings.retry_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def check_all(self) -> bool:
        """Check every pool's account once; False when some check could not run."""
        policy = self._policies.current
        pools = self._pools.pools()
        states = await asyncio.gather(*(self._check(t, u, pool, policy) for (t, u), pool in pools.items()))
        return all(s.status != "error" for s in states)

    async def _check(self, target: str, db_user: str, pool: ConnectionPool, policy: PolicySet) -> AccountState:
        try:
            async with asyncio.timeout(CHECK_SECONDS):
                lines = await pool.show_grants()
        except GatewayError as exc:
            state = self._failed(policy, exc.detail)
        except TimeoutError:
            state = self._failed(policy, f"no answer within {CHECK_SECONDS:g}s")
        except db_errors.MySQLError as exc:
            state = self._failed(policy, f"MariaDB error {exc.args[0] if exc.args else '?'} reading SHOW GRANTS")
        else:
            state = judge(
                lines, policy=policy, targets=self._targets, target=target, db_user=db_user, now=self._clock()
            )
        previous = self._state.record(target, db_user, state)
        self._log(target, db_user, state, previous)
        return state

    def _failed(self, policy: PolicySet, detail: str) -> AccountState:
        return AccountState("error", detail=detail, checked_at=self._clock(), policy_revision=policy.revision)

    def _log(self, target: str, db_user: str, state: AccountState, previous: AccountState) -> None:
        fields = {"target": target, "db_user": db_user, "mode": self._state.mode(target)}
        if state.status == "drift":
            log.warning(
                "db_privilege_drift",
                **fields,
                excess_count=len(state.excess),
                excess=list(state.excess[:SHOWN_EXCESS]),
                policy_revision=state.policy_revision,
            )
        elif state.status != previous.status:
            if state.status == "clean":
                log.info("db_privileges_clean", **fields, policy_revision=state.policy_revision)
            else:
                log.error("db_privilege_check_failed", **fields, detail=state.detail)
