"""Access requests in the shared state store: the SQLite store's protocol, shared by every replica.

Same rows, same states and the same rule (``gateway.policy.requests``): every
decision is one conditional ``UPDATE ... WHERE state = 'pending' AND
expires_at > now``, so two admins on two replicas can never both decide one
request, and a request past its ``expires_at`` reads ``expired`` everywhere
(times are the gateway's clock, as fixed-width ISO text that sorts as it
compares). Every call blocks: the routes call it in a worker thread.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from gateway.clock import utcnow
from gateway.errors import Conflict, NotFound
from gateway.state.connection import Cursor, Link
from gateway.state.store import StateStore, iso

_COLUMNS = (
    "id",
    "requester",
    "target",
    "access",
    "duration_s",
    "reason",
    "state",
    "created_at",
    "expires_at",
    "decided_by",
    "decided_at",
    "decision_reason",
    "grant_name",
    "requester_issuer",
    "requester_sub",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM access_requests"  # noqa: S608 - fixed columns


class StateAccessRequests:
    """The access requests of a state store (thread-safe; call it off the event loop)."""

    def __init__(self, store: StateStore, *, ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        self._link: Link = store.reads
        self._ttl = ttl
        self._clock = clock

    def close(self) -> None:
        """Nothing of its own to close: the store's connection is the store's."""

    def _row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        item = dict(zip(_COLUMNS, row, strict=True))
        item["duration_s"] = float(item["duration_s"])
        if item["state"] == "pending" and item["expires_at"] <= iso(self._clock()):
            item["state"] = "expired"
        return item

    def _select(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def read(cur: Cursor) -> list[tuple[Any, ...]]:
            cur.execute(sql, args)
            return list(cur.fetchall())

        return self._link.run(read)

    def create(
        self,
        requester: str,
        target: str,
        access: str,
        duration_s: float,
        reason: str,
        *,
        person: tuple[str, str],
    ) -> dict[str, Any]:
        """Store a new pending request by ``requester`` (the name used), ``person`` (issuer, sub); TTL applies."""
        now = self._clock()
        values = (
            f"ar-{secrets.token_hex(5)}",
            requester,
            target,
            access,
            duration_s,
            reason,
            "pending",
            iso(now),
            iso(now + timedelta(seconds=self._ttl)),
            *person,
        )
        self._link.run(
            lambda cur: cur.execute(
                "INSERT INTO access_requests (id, requester, target, access, duration_s, reason, state, created_at, "
                "expires_at, requester_issuer, requester_sub) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                values,
            )
        )
        return self.get(values[0])

    def get(self, request_id: str) -> dict[str, Any]:
        """One request; ``NotFound`` when there is none."""
        rows = self._select(f"{_SELECT} WHERE id = %s", (request_id,))
        if not rows:
            raise NotFound(f"no access request {request_id!r}")
        return self._row(rows[0])

    def list(
        self,
        requester: str | None = None,
        state: str | None = None,
        limit: int = 500,
        *,
        person: tuple[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Requests, newest first, filtered by (computed) state; with ``requester`` and/or ``person``, only theirs."""
        sql = _SELECT
        args: list[Any] = []
        mine = []
        if requester is not None:
            mine.append("requester = %s")
            args.append(requester)
        if person is not None:
            mine.append("(requester_issuer = %s AND requester_sub = %s)")
            args += person
        if mine:
            sql += f" WHERE {' OR '.join(mine)}"
        sql += " ORDER BY created_at DESC, id LIMIT %s"
        args.append(limit)
        items = [self._row(r) for r in self._select(sql, tuple(args))]
        return [i for i in items if state is None or i["state"] == state]

    def decide(self, request_id: str, *, by: str, state: str, reason: str | None, grant_name: str | None) -> None:
        """Move a pending, unexpired request to ``state``; ``Conflict`` if it is no longer pending."""
        now = iso(self._clock())

        def update(cur: Cursor) -> int:
            cur.execute(
                "UPDATE access_requests SET state = %s, decided_by = %s, decided_at = %s, decision_reason = %s, "
                "grant_name = %s WHERE id = %s AND state = 'pending' AND expires_at > %s",
                (state, by, now, reason, grant_name, request_id, now),
            )
            return int(cur.rowcount)

        if self._link.run(update) != 1:
            current = self.get(request_id)
            raise Conflict(f"access request {request_id} is {current['state']}, not pending")

    def undo(self, request_id: str) -> None:
        """Put a request claimed for approval back to pending (the grant could not be written)."""
        self._link.run(
            lambda cur: cur.execute(
                "UPDATE access_requests SET state = 'pending', decided_by = NULL, decided_at = NULL, "
                "decision_reason = NULL, grant_name = NULL WHERE id = %s AND state = 'approved'",
                (request_id,),
            )
        )
