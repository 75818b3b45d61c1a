"""Access requests: an engineer asks for time-boxed access; an admin approves or denies.

Stored in SQLite (``access-requests.db`` in ``admin.state_dir``, never in the
policies directory) so replicas sharing that directory share the requests;
every state change is one conditional ``UPDATE ... WHERE state = 'pending'``,
so two admins (or two replicas) can never both decide one request. A pending
request past its ``expires_at`` is ``expired`` and can no longer be decided.

States: ``pending`` -> ``approved`` | ``denied`` | ``expired``.

Each request stores the requester as a person (SECURITY rule 26): the
canonical name used (``requester``, what an approval grants) and the
token's issuer and ``sub`` (``requester_issuer``, ``requester_sub``), so
the no-self-approval rule and "my requests" follow the person whatever name
their token carries. A database made before these columns existed gains
them on open (its old rows have no person: they compare by name only).
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from gateway.clock import utcnow
from gateway.errors import Conflict, NotFound

STATES = ("pending", "approved", "denied", "expired")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS access_requests (
  id TEXT PRIMARY KEY,
  requester TEXT NOT NULL,
  target TEXT NOT NULL,
  access TEXT NOT NULL,
  duration_s REAL NOT NULL,
  reason TEXT NOT NULL,
  state TEXT NOT NULL,
  created_at TEXT NOT NULL,
  expires_at TEXT NOT NULL,
  decided_by TEXT,
  decided_at TEXT,
  decision_reason TEXT,
  grant_name TEXT,
  requester_issuer TEXT,
  requester_sub TEXT
)
"""
# Added after the first release: ALTER TABLE on a database that lacks them.
_PERSON_COLUMNS = ("requester_issuer", "requester_sub")
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
    *_PERSON_COLUMNS,
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AccessRequestStore:
    """The shared table of access requests (thread-safe; call it off the event loop)."""

    def __init__(self, path: Path, *, ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._conn.execute(_SCHEMA)
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(access_requests)")}
        for column in _PERSON_COLUMNS:
            if column not in present:
                self._conn.execute(f"ALTER TABLE access_requests ADD COLUMN {column} TEXT")
        self._lock = threading.Lock()
        self._ttl = ttl
        self._clock = clock

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def _row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        item = dict(zip(_COLUMNS, row, strict=True))
        if item["state"] == "pending" and item["expires_at"] <= _iso(self._clock()):
            item["state"] = "expired"
        return item

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
            _iso(now),
            _iso(now + timedelta(seconds=self._ttl)),
            *person,
        )
        with self._lock:
            self._conn.execute(
                "INSERT INTO access_requests (id, requester, target, access, duration_s, reason, state, "
                "created_at, expires_at, requester_issuer, requester_sub) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return self.get(values[0])

    def get(self, request_id: str) -> dict[str, Any]:
        """One request; ``NotFound`` when there is none."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM access_requests WHERE id = ?",  # noqa: S608 - fixed columns
                (request_id,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no access request {request_id!r}")
        return self._row(row)

    def list(
        self,
        requester: str | None = None,
        state: str | None = None,
        limit: int = 500,
        *,
        person: tuple[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Requests, newest first, filtered by (computed) state; with ``requester`` and/or ``person``, only theirs.

        A request is someone's when it carries their name or their (issuer, sub).
        """
        sql = f"SELECT {', '.join(_COLUMNS)} FROM access_requests"  # noqa: S608 - fixed columns
        args: list[Any] = []
        mine = []
        if requester is not None:
            mine.append("requester = ?")
            args.append(requester)
        if person is not None:
            mine.append("(requester_issuer = ? AND requester_sub = ?)")
            args += person
        if mine:
            sql += f" WHERE {' OR '.join(mine)}"
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        items = [self._row(r) for r in rows]
        return [i for i in items if state is None or i["state"] == state]

    def decide(self, request_id: str, *, by: str, state: str, reason: str | None, grant_name: str | None) -> None:
        """Move a pending, unexpired request to ``state``; ``Conflict`` if it is no longer pending."""
        now = _iso(self._clock())
        with self._lock:
            changed = self._conn.execute(
                "UPDATE access_requests SET state = ?, decided_by = ?, decided_at = ?, decision_reason = ?, "
                "grant_name = ? WHERE id = ? AND state = 'pending' AND expires_at > ?",
                (state, by, now, reason, grant_name, request_id, now),
            ).rowcount
        if changed != 1:
            current = self.get(request_id)
            raise Conflict(f"access request {request_id} is {current['state']}, not pending")

    def undo(self, request_id: str) -> None:
        """Put a request claimed for approval back to pending (the grant could not be written)."""
        with self._lock:
            self._conn.execute(
                "UPDATE access_requests SET state = 'pending', decided_by = NULL, decided_at = NULL, "
                "decision_reason = NULL, grant_name = NULL WHERE id = ? AND state = 'approved'",
                (request_id,),
            )


class AccessRequests(Protocol):
    """What the routes use of an access-request store (this SQLite one, or the shared state store's)."""

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
        """Store a new pending request."""
        ...

    def get(self, request_id: str) -> dict[str, Any]:
        """One request; ``NotFound`` when there is none."""
        ...

    def list(
        self,
        requester: str | None = None,
        state: str | None = None,
        limit: int = 500,
        *,
        person: tuple[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Requests, newest first."""
        ...

    def decide(self, request_id: str, *, by: str, state: str, reason: str | None, grant_name: str | None) -> None:
        """Move a pending, unexpired request to ``state``; ``Conflict`` if it is no longer pending."""
        ...

    def undo(self, request_id: str) -> None:
        """Put a request claimed for approval back to pending."""
        ...

    def close(self) -> None:
        """Release what the store holds."""
        ...
