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
from typing import Any, ClassVar, Protocol

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
COLUMNS = (
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
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM access_requests"  # noqa: S608 - fixed columns


def iso(moment: datetime) -> str:
    """A UTC time as fixed-width ISO text (sorts as it compares): how every store keeps request times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RequestTable:
    """The access-request rules over one SQL table, whatever database holds it.

    Subclasses say how one statement runs (``_fetch``, ``_change``) and which
    placeholder their driver takes (``mark``); the statements, the states and
    the expiry rule are written once, here.
    """

    mark: ClassVar[str] = "?"

    def __init__(self, *, ttl: float, clock: Callable[[], datetime]) -> None:
        self._ttl = ttl
        self._clock = clock

    def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _change(self, sql: str, args: tuple[Any, ...]) -> int:
        raise NotImplementedError

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.mark)

    def _row(self, row: tuple[Any, ...]) -> dict[str, Any]:
        item = dict(zip(COLUMNS, row, strict=True))
        item["duration_s"] = float(item["duration_s"])
        if item["state"] == "pending" and item["expires_at"] <= iso(self._clock()):
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
        request_id = f"ar-{secrets.token_hex(5)}"
        expires = iso(now + timedelta(seconds=self._ttl))
        values = (request_id, requester, target, access, duration_s, reason, "pending", iso(now), expires, *person)
        self._change(
            self._sql(
                "INSERT INTO access_requests (id, requester, target, access, duration_s, reason, state, created_at, "
                "expires_at, requester_issuer, requester_sub) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            values,
        )
        return self.get(request_id)

    def get(self, request_id: str) -> dict[str, Any]:
        """One request; ``NotFound`` when there is none."""
        rows = self._fetch(self._sql(f"{_SELECT} WHERE id = ?"), (request_id,))
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
        """Requests, newest first, filtered by (computed) state; with ``requester`` and/or ``person``, only theirs.

        A request is someone's when it carries their name or their (issuer, sub).
        """
        sql = _SELECT
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
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        args.append(limit)
        items = [self._row(r) for r in self._fetch(self._sql(sql), tuple(args))]
        return [i for i in items if state is None or i["state"] == state]

    def decide(self, request_id: str, *, by: str, state: str, reason: str | None, grant_name: str | None) -> None:
        """Move a pending, unexpired request to ``state``; ``Conflict`` if it is no longer pending."""
        now = iso(self._clock())
        changed = self._change(
            self._sql(
                "UPDATE access_requests SET state = ?, decided_by = ?, decided_at = ?, decision_reason = ?, "
                "grant_name = ? WHERE id = ? AND state = 'pending' AND expires_at > ?"
            ),
            (state, by, now, reason, grant_name, request_id, now),
        )
        if changed != 1:
            current = self.get(request_id)
            raise Conflict(f"access request {request_id} is {current['state']}, not pending")

    def undo(self, request_id: str) -> None:
        """Put a request claimed for approval back to pending (the grant could not be written)."""
        self._change(
            self._sql(
                "UPDATE access_requests SET state = 'pending', decided_by = NULL, decided_at = NULL, "
                "decision_reason = NULL, grant_name = NULL WHERE id = ? AND state = 'approved'"
            ),
            (request_id,),
        )


class AccessRequestStore(RequestTable):
    """The access requests in SQLite (thread-safe; call it off the event loop)."""

    def __init__(self, path: Path, *, ttl: float, clock: Callable[[], datetime] = utcnow) -> None:
        super().__init__(ttl=ttl, clock=clock)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._conn.execute(_SCHEMA)
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(access_requests)")}
        for column in _PERSON_COLUMNS:
            if column not in present:
                self._conn.execute(f"ALTER TABLE access_requests ADD COLUMN {column} TEXT")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def _fetch(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _change(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount


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
