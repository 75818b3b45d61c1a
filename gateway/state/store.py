"""The state store: its schema, its revision and the managed policy documents.

``StateStore.open`` connects, runs the migrations (``gateway.state.schema``)
and keeps one connection for reads (the revision poll, access requests,
aliases). A change to the managed documents is one transaction on a
connection of its own (:class:`DocumentWrite`)::

    BEGIN
    SELECT revision FROM state_revision WHERE id = 1      -- with the documents, one snapshot
    SELECT name, content FROM policy_documents
    ... build and check the edit, in the caller ...
    UPDATE state_revision SET revision = revision + 1 WHERE id = 1 AND revision = <read>
        -- 0 rows: another replica's edit committed first: 412, nothing written
    INSERT ... ON DUPLICATE KEY UPDATE content = ...      -- the edited document
    ... the caller's audit record (durable) ...
    COMMIT

The conditional ``UPDATE`` takes the revision row's lock, so a second
replica's edit waits for the first to commit or roll back and then finds
the revision moved: one success, one 412, never a lost edit. A replica that
dies mid-edit leaves an uncommitted transaction, which MariaDB rolls back
when the connection drops: no half-applied edit.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pymysql

from gateway.clock import utcnow
from gateway.errors import PreconditionFailed, StateUnavailable
from gateway.settings import StateDatabaseSettings
from gateway.state.connection import Connection, Cursor, Link, connect
from gateway.state.schema import migrate

Documents = dict[str, bytes]
DOCUMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.ya?ml")  # as admin.managed_file
T = TypeVar("T")


def iso(moment: datetime) -> str:
    """A UTC time as fixed-width ISO text (sorts as it compares)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read_documents(cur: Cursor) -> tuple[int, Documents]:
    cur.execute("SELECT revision FROM state_revision WHERE id = 1")
    row = cur.fetchone()
    if row is None:
        raise StateUnavailable("the state store's revision row is missing")
    cur.execute("SELECT name, content FROM policy_documents ORDER BY name")
    documents = {str(name): bytes(content) for name, content in cur.fetchall()}
    for name in documents:
        # Only the gateway writes names (admin.managed_file, checked imports); a name planted in the
        # database that could leave a directory (the edit check writes documents as files) is refused.
        if not DOCUMENT_NAME.fullmatch(name):
            raise StateUnavailable(f"the state store holds a document with an invalid name {name[:64]!r}")
    return int(row[0]), documents


class StateStore:
    """The shared state store (thread-safe; every method blocks: call it in a worker thread)."""

    def __init__(self, settings: StateDatabaseSettings) -> None:
        self.settings = settings
        self.reads = Link(settings)
        self.migrated: list[int] = []  # the versions this instance applied at open (empty: another had)

    @classmethod
    def open(cls, settings: StateDatabaseSettings) -> StateStore:
        """Connect and migrate (``StateUnavailable`` if unreachable, locked out or newer than this gateway)."""
        store = cls(settings)
        conn = connect(settings, create=True)
        try:
            with conn.cursor() as cur:
                store.migrated = migrate(cur, settings.database)
        except pymysql.Error as exc:
            raise StateUnavailable(f"cannot create or migrate the state schema ({exc})") from None
        finally:
            conn.close()
        return store

    def close(self) -> None:
        """Close the read connection."""
        self.reads.close()

    def revision(self) -> int:
        """The current revision (one primary-key read)."""

        def read(cur: Cursor) -> int:
            cur.execute("SELECT revision FROM state_revision WHERE id = 1")
            row = cur.fetchone()
            if row is None:
                raise StateUnavailable("the state store's revision row is missing")
            return int(row[0])

        return self.reads.run(read)

    def documents(self) -> tuple[int, Documents]:
        """The revision and every managed document, read in one snapshot."""
        return self.reads.transaction(_read_documents)

    def begin_write(self) -> DocumentWrite:
        """Start a change of the managed documents on a connection of its own (see the module docstring)."""
        return DocumentWrite(connect(self.settings))


class DocumentWrite:
    """One transaction changing the managed documents; ``close`` without ``commit`` rolls it back."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # A cancelled caller's thread may still be mid-statement when close() comes from another thread.
        self._lock = threading.Lock()
        self.cursor: Cursor = conn.cursor()
        self.revision: int | None = None  # the new revision, once claimed
        try:
            conn.begin()
        except pymysql.Error as exc:
            self.close()
            raise StateUnavailable(f"the state store failed ({exc})") from None

    def read(self) -> tuple[int, Documents]:
        """The revision and the documents, as this transaction's snapshot sees them."""
        return self._guard(lambda: _read_documents(self.cursor))

    def claim(self, read: int) -> int:
        """Move the revision on from ``read``: ``PreconditionFailed`` if another change committed since."""

        def bump() -> int:
            self.cursor.execute(
                "UPDATE state_revision SET revision = revision + 1 WHERE id = 1 AND revision = %s", (read,)
            )
            return int(self.cursor.rowcount)

        if self._guard(bump) != 1:
            raise PreconditionFailed(
                "the policy changed through another replica during the edit; nothing was written: "
                "fetch GET /v1/policy and retry"
            )
        self.revision = read + 1
        return self.revision

    def put(self, name: str, content: bytes, *, now: datetime | None = None) -> None:
        """Write document ``name`` (after :meth:`claim`)."""
        if self.revision is None:
            raise RuntimeError("claim the revision before writing")
        if not DOCUMENT_NAME.fullmatch(name):
            raise ValueError(f"invalid document name {name[:64]!r}")
        args = (name, content, self.revision, iso(now or utcnow()))
        self._guard(
            lambda: self.cursor.execute(
                "INSERT INTO policy_documents (name, content, revision, updated_at) VALUES (%s, %s, %s, %s) "
                "ON DUPLICATE KEY UPDATE content = VALUES(content), revision = VALUES(revision), "
                "updated_at = VALUES(updated_at)",
                args,
            )
        )

    def clear(self) -> None:
        """Delete every document (after :meth:`claim`), to write a whole new set."""
        if self.revision is None:
            raise RuntimeError("claim the revision before writing")
        self._guard(lambda: self.cursor.execute("DELETE FROM policy_documents"))

    def commit(self) -> int:
        """Commit; the new revision."""
        if self.revision is None:
            raise RuntimeError("nothing claimed")
        # A link lost during COMMIT leaves the outcome unknown (the server may have committed): say so,
        # rather than "nothing was written"; the revision tells (the edit's If-Match is then stale).
        self._guard(self._conn.commit, lost="the edit may have been written: fetch GET /v1/policy before retrying")
        return self.revision

    def close(self) -> None:
        """Close the connection (an uncommitted transaction is rolled back by the server)."""
        with self._lock, contextlib.suppress(Exception):
            self._conn.close()

    def _guard(self, work: Callable[[], T], *, lost: str = "nothing was written") -> T:
        with self._lock:
            try:
                return work()
            except pymysql.Error as exc:
                with contextlib.suppress(Exception):
                    self._conn.close()
                raise StateUnavailable(f"the state store failed ({exc}); {lost}") from None
