"""The alias registry in the shared state store: names learned on one replica count on every replica.

Same protocol and rules as ``gateway.identity.aliases`` (only a validated
token adds a name, to its own person; names are never removed). A store that
cannot be used fails closed (``IdentityUnavailable``), with one exception so
that queries keep working on the last good policy while the store is down:
``observe`` of a name this replica already read for that person (in its last
successful read, kept for up to ``max_people`` people) answers from that read.
A new name or person, and every ``names`` call (the no-self-approval check),
still fail closed. The cost: a name another replica recorded after this
replica's last read, just before the outage, is not matched by revocations
here until the store is back (the outage stops new names being recorded
anywhere, so the window is what was learned between those two reads).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime

import structlog
from cachetools import LRUCache

from gateway.clock import utcnow
from gateway.errors import IdentityUnavailable, StateUnavailable
from gateway.state.connection import Cursor, Link
from gateway.state.store import StateStore, iso

log = structlog.get_logger("gateway.state.aliases")


class StateAliasRegistry:
    """The registry in the state store's ``aliases`` table."""

    def __init__(self, store: StateStore, *, clock: Callable[[], datetime] = utcnow, max_people: int = 10_000) -> None:
        # Its own connection: every token validation reads it. A token waits at most a second behind another
        # call for it, so a store that stops answering falls back to the last read instead of stalling requests.
        self._link = Link(store.settings, wait=1.0)
        self._clock = clock
        self._last: LRUCache[tuple[str, str], frozenset[str]] = LRUCache(max_people)
        self._last_lock = threading.Lock()

    async def observe(self, issuer: str, sub: str, name: str) -> frozenset[str]:
        """Record ``name`` for (issuer, sub) (written only when new); return all of its names."""
        try:
            names = await asyncio.to_thread(self._run, self._observe, issuer, sub, name)
        except IdentityUnavailable:
            with self._last_lock:
                known = self._last.get((issuer, sub))
            if known is None or name not in known:
                raise
            log.warning("alias_registry_unavailable_using_last_read", issuer=issuer)
            return known
        with self._last_lock:
            self._last[issuer, sub] = names
        return names

    async def names(self, issuer: str, sub: str) -> frozenset[str]:
        """All names of (issuer, sub)."""
        return await asyncio.to_thread(self._run, _select, issuer, sub)

    def close(self) -> None:
        """Close the registry's connection."""
        self._link.close()

    def _run(self, work: Callable[..., frozenset[str]], *args: str) -> frozenset[str]:
        try:
            return self._link.run(lambda cur: work(cur, *args))
        except StateUnavailable as error:
            raise IdentityUnavailable(f"the alias registry cannot be used: {error.detail}") from None

    def _observe(self, cur: Cursor, issuer: str, sub: str, name: str) -> frozenset[str]:
        # Read first: a name already known (nearly every token) costs no write.
        names = _select(cur, issuer, sub)
        if name in names:
            return names
        cur.execute(
            "INSERT IGNORE INTO aliases (issuer, sub, name, first_seen) VALUES (%s, %s, %s, %s)",
            (issuer, sub, name, iso(self._clock())),
        )
        return _select(cur, issuer, sub)


def _select(cur: Cursor, issuer: str, sub: str) -> frozenset[str]:
    cur.execute("SELECT name FROM aliases WHERE issuer = %s AND sub = %s", (issuer, sub))
    return frozenset(str(name) for (name,) in cur.fetchall())
