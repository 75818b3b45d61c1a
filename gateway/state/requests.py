"""Access requests in the shared state store: the SQLite store's protocol, shared by every replica.

Same rows, same states and the same rule (``gateway.policy.requests``): every
decision is one conditional ``UPDATE ... WHERE state = 'pending' AND
expires_at > now``, so two admins on two replicas can never both decide one
request, and a request past its ``expires_at`` reads ``expired`` everywhere
(times are the gateway's clock, as fixed-width ISO text that sorts as it
compares). Every call blocks: the routes call it in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from gateway.clock import utcnow
from gateway.policy.requests import RequestTable
from gateway.state.connection import Cursor, Link
from gateway.state.store import StateStore


class StateAccessRequests(RequestTable):
    """The access requests of a state store (thread-safe; call it off the event loop)."""

    mark = "%s"

    def __init__(self, store: StateStore, *, ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(ttl=ttl, clock=clock)
        self._link: Link = store.reads

    def close(self) -> None:
        """Nothing of its own to close: the store's connection is the store's."""

    def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def read(cur: Cursor) -> list[tuple[Any, ...]]:
            cur.execute(sql, args)
            return list(cur.fetchall())

        return self._link.run(read)

    def _change(self, sql: str, args: tuple[Any, ...]) -> int:
        def change(cur: Cursor) -> int:
            cur.execute(sql, args)
            return int(cur.rowcount)

        return self._link.run(change)
