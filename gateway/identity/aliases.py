"""Which names each person has been seen with: revocations follow the person (SECURITY rule 26).

A person is (issuer, ``sub``); the name a policy knows them by comes from a
claim that can change (an email renamed at the IdP). Every validated token
records (issuer, sub) -> its canonical name here, and the identity built from
it carries the person's *other* names as aliases, which revocations match
(grants and roles match only the name the token carries). So revoking
``user:bob@example.com`` also stops Bob's tokens that now say
``robert@example.com``, once the gateway has seen one of his tokens as bob.

Only a validated token adds a name, and only to its own person, so nobody can
add a name to someone else (the aliases only ever widen the revocations that
apply to their owner). Names are never removed: a revocation of an old name
keeps applying to the person who held it.

Two stores behind one protocol (the swap point, as httpx keeps its mock
transport beside the real ones): ``SqliteAliasRegistry`` in
``admin.state_dir/aliases.db`` (replicas sharing that directory share it;
SQLite runs in a worker thread, never on the event loop) and
``MemoryAliasRegistry`` for tests and tools. A store that cannot be read
fails the token's validation closed (``IdentityUnavailable``, 503).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from gateway.clock import utcnow
from gateway.errors import IdentityUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

ALIASES_FILE = "aliases.db"  # in admin.state_dir
_SCHEMA = """
CREATE TABLE IF NOT EXISTS aliases (
  issuer TEXT NOT NULL,
  sub TEXT NOT NULL,
  name TEXT NOT NULL,
  first_seen TEXT NOT NULL,
  PRIMARY KEY (issuer, sub, name)
) WITHOUT ROWID
"""


class AliasRegistry(Protocol):
    """Records the names each (issuer, sub) has been seen with."""

    async def observe(self, issuer: str, sub: str, name: str) -> frozenset[str]:
        """Record that (issuer, sub) carried ``name``; return every name it has been seen with (``name`` too)."""
        ...

    async def names(self, issuer: str, sub: str) -> frozenset[str]:
        """Every name (issuer, sub) has been seen with (empty for a person never seen)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class MemoryAliasRegistry:
    """The registry in a dict: for tests, and for a validator built without a state directory."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], frozenset[str]] = {}

    async def observe(self, issuer: str, sub: str, name: str) -> frozenset[str]:
        """Record ``name`` for (issuer, sub); return all of its names."""
        names = self._names.get((issuer, sub), frozenset()) | {name}
        self._names[issuer, sub] = names
        return names

    async def names(self, issuer: str, sub: str) -> frozenset[str]:
        """All names of (issuer, sub)."""
        return self._names.get((issuer, sub), frozenset())

    def close(self) -> None:
        """Nothing to release."""


class SqliteAliasRegistry:
    """The registry in SQLite (WAL), shared by the replicas that share ``admin.state_dir``."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        """Open (creating if needed) the database at ``path``; blocking, so call it in a thread."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(_SCHEMA)
        self._lock = threading.Lock()
        self._clock = clock

    async def observe(self, issuer: str, sub: str, name: str) -> frozenset[str]:
        """Record ``name`` for (issuer, sub) (written only when new); return all of its names."""
        return await asyncio.to_thread(self._run, self._observe, issuer, sub, name)

    async def names(self, issuer: str, sub: str) -> frozenset[str]:
        """All names of (issuer, sub)."""
        return await asyncio.to_thread(self._run, self._select, issuer, sub)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._conn.close()

    def _run(self, work: Callable[..., frozenset[str]], *args: str) -> frozenset[str]:
        try:
            with self._lock:
                return work(*args)
        except sqlite3.Error as error:
            raise IdentityUnavailable(f"the alias registry cannot be used: {error}") from None

    def _select(self, issuer: str, sub: str) -> frozenset[str]:
        rows = self._conn.execute("SELECT name FROM aliases WHERE issuer = ? AND sub = ?", (issuer, sub))
        return frozenset(name for (name,) in rows)

    def _observe(self, issuer: str, sub: str, name: str) -> frozenset[str]:
        # Read first: a name already known (nearly every token) costs no write and no write lock.
        names = self._select(issuer, sub)
        if name in names:
            return names
        self._conn.execute(
            "INSERT OR IGNORE INTO aliases (issuer, sub, name, first_seen) VALUES (?, ?, ?, ?)",
            (issuer, sub, name, self._clock().isoformat()),
        )
        return self._select(issuer, sub)
