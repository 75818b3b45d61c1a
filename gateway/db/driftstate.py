"""The latest privilege check of each pool's account: written by ``dbdrift``, read by the pools, /readyz and metrics.

Each ``(target, db_user)`` is ``pending`` until its first check, then
``clean``, ``drift`` (holds rights beyond what the policies need) or
``error`` (the check could not run). With ``drift: refuse`` for its target, an
account that is not ``clean`` is not served: ``refusal`` gives the error the
pool raises instead of a connection (``privilege_drift`` for drift;
``database_unavailable`` while it is unverified, as the database is then
either unreachable or not checked yet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.errors import DatabaseUnavailable, GatewayError, PrivilegeDrift

Status = Literal["pending", "clean", "drift", "error"]
Mode = Literal["warn", "refuse"]
SHOWN_EXCESS = 50  # privileges listed per account in /readyz and log events (the count is always whole)


@dataclass(frozen=True, slots=True)
class AccountState:
    """One account's last check."""

    status: Status
    excess: tuple[str, ...] = ()
    detail: str | None = None
    checked_at: datetime | None = None
    policy_revision: str | None = None


PENDING = AccountState("pending")


class DriftState:
    """Every pool account's last check, and the mode (``warn``/``refuse``) of each target."""

    def __init__(self, modes: Mapping[str, Mode] | None = None, default: Mode = "warn") -> None:
        self._modes = dict(modes or {})
        self._default = default
        self._accounts: dict[tuple[str, str], AccountState] = {}

    def mode(self, target: str) -> Mode:
        """``refuse`` or ``warn`` for ``target``."""
        return self._modes.get(target, self._default)

    def record(self, target: str, db_user: str, state: AccountState) -> AccountState:
        """Keep ``state`` as the account's latest; return the one it replaces."""
        previous = self._accounts.get((target, db_user), PENDING)
        self._accounts[(target, db_user)] = state
        return previous

    def get(self, target: str, db_user: str) -> AccountState:
        """The account's latest state (``pending`` before its first check)."""
        return self._accounts.get((target, db_user), PENDING)

    def accounts(self) -> dict[tuple[str, str], AccountState]:
        """A copy of every known account's latest state."""
        return dict(self._accounts)

    def refusal(self, target: str, db_user: str) -> GatewayError | None:
        """The error to answer instead of serving this account, or None to serve it."""
        if self.mode(target) != "refuse":
            return None
        state = self.get(target, db_user)
        if state.status == "clean":
            return None
        if state.status == "drift":
            return PrivilegeDrift(
                f"db_user {db_user} on target {target} holds {len(state.excess)} privileges beyond what the "
                "policies need (privileges.drift: refuse); `gateway db check` lists them"
            )
        why = f": {state.detail}" if state.detail else " yet"
        return DatabaseUnavailable(
            f"the privileges of db_user {db_user} on target {target} are not verified{why} (privileges.drift: refuse)"
        )

    def report(self) -> dict[str, Any]:
        """The ``/readyz`` entry: not gating (``required: false``); ``ok`` when every account is clean."""
        accounts = {
            f"{target}/{db_user}": _view(state, self.mode(target))
            for (target, db_user), state in sorted(self._accounts.items())
        }
        ok = all(a["status"] == "clean" for a in accounts.values())
        return {"ok": ok, "required": False, "accounts": accounts}


def _view(state: AccountState, mode: Mode) -> dict[str, Any]:
    return {
        "status": state.status,
        "mode": mode,
        "excess_count": len(state.excess),
        "excess": list(state.excess[:SHOWN_EXCESS]),
        "detail": state.detail,
        "checked_at": state.checked_at.astimezone(UTC).isoformat() if state.checked_at else None,
        "policy_revision": state.policy_revision[:12] if state.policy_revision else None,
    }
