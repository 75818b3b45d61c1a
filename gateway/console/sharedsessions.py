"""Console sessions in the shared state store (``state.store: mariadb``): one sign-in, every replica.

One row per session in ``console_sessions`` (schema version 3), keyed by the
SHA-256 of the cookie (as :class:`~gateway.console.sessions.MemorySessionStore`
keys its map), so the table holds no usable cookie. Everything else (the
access token, the CSRF token, sign-ins in progress, notices) is one JSON
document sealed with AES-256-GCM under the session's *seal*, a key derived
from the cookie that is never stored: reading the table (a backup, a DBA, an
SQL injection elsewhere) yields neither a cookie nor a token, and a sealed
document moved under another key does not open (the key is the associated
data). A row that does not open is no session (the browser signs in again).

``expires_at`` (the soonest of the session's timeouts, by the gateway's clock)
lets a replica delete the sessions nobody will use again: at most once a
minute, a ``put`` also deletes up to 500 rows past it. Logout deletes the row,
so the session ends on every replica at once. Every call blocks
(``blocking = True``): the console calls it in a worker thread.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.console.sessions import PendingLogin, Session, session_end
from gateway.settings import StateDatabaseSettings
from gateway.state.connection import Cursor, Link

PURGE_EVERY = 60.0  # seconds (monotonic) between two purges by one replica
PURGE_BATCH = 500
_NONCE = 12


def seal_session(session: Session) -> bytes:
    """The session's secret parts as nonce + AES-GCM ciphertext under its seal (the key is the associated data)."""
    document = {
        "csrf": session.csrf,
        "created": session.created,
        "seen": session.seen,
        "user": session.user,
        "access_token": session.access_token,
        "token_expires": session.token_expires,
        "logins": [asdict(login) for login in session.logins.values()],
        "notices": session.notices,
    }
    nonce = os.urandom(_NONCE)
    plain = json.dumps(document, separators=(",", ":")).encode()
    return nonce + AESGCM(session.seal).encrypt(nonce, plain, session.key.encode())


def open_session(key: str, seal: bytes, sealed: bytes) -> Session | None:
    """The session sealed in ``sealed``; None if it does not open under ``seal`` and ``key``."""
    try:
        plain = AESGCM(seal).decrypt(sealed[:_NONCE], sealed[_NONCE:], key.encode())
        document: dict[str, Any] = json.loads(plain)
        logins = [PendingLogin(**login) for login in document["logins"]]
        return Session(
            key=key,
            csrf=str(document["csrf"]),
            created=float(document["created"]),
            seen=float(document["seen"]),
            user=document["user"],
            access_token=document["access_token"],
            token_expires=float(document["token_expires"]),
            logins={login.state: login for login in logins},
            notices=[str(n) for n in document["notices"]],
            seal=seal,
        )
    except (InvalidTag, ValueError, KeyError, TypeError):
        return None


class StateSessionStore:
    """``SessionStore`` in the state store's ``console_sessions`` table (blocking: call it in a worker thread)."""

    blocking = True

    def __init__(self, settings: StateDatabaseSettings, *, idle: float, absolute: float) -> None:
        # Its own connection, opened on first use (the console is installed before the lifespan migrates).
        self._link = Link(settings)
        self._idle = idle
        self._absolute = absolute
        self._purged = 0.0
        self._purge_lock = threading.Lock()

    def get(self, key: str, seal: bytes) -> Session | None:
        """The session under ``key``, opened with ``seal`` (None if absent or it does not open)."""

        def read(cur: Cursor) -> bytes | None:
            cur.execute("SELECT sealed FROM console_sessions WHERE id_hash = %s", (key,))
            row = cur.fetchone()
            return None if row is None else bytes(row[0])

        sealed = self._link.run(read)
        return None if sealed is None or not seal else open_session(key, seal, sealed)

    def put(self, session: Session) -> None:
        """Store (or replace) ``session``, sealed; now and then delete the sessions past their end."""
        if not session.seal:
            raise ValueError("a shared session store needs the session's seal")
        args = (session.key, seal_session(session), session_end(session, idle=self._idle, absolute=self._absolute))
        purge = self._due()

        def write(cur: Cursor) -> None:
            cur.execute(
                "INSERT INTO console_sessions (id_hash, sealed, expires_at) VALUES (%s, %s, %s) "
                "ON DUPLICATE KEY UPDATE sealed = VALUES(sealed), expires_at = VALUES(expires_at)",
                args,
            )
            if purge:
                cur.execute("DELETE FROM console_sessions WHERE expires_at < %s LIMIT %s", (session.seen, PURGE_BATCH))

        self._link.run(write)

    def delete(self, key: str) -> None:
        """Forget the session under ``key`` on every replica."""
        self._link.run(lambda cur: cur.execute("DELETE FROM console_sessions WHERE id_hash = %s", (key,)))

    def close(self) -> None:
        """Close the store's connection."""
        self._link.close()

    def _due(self) -> bool:
        with self._purge_lock:
            now = time.monotonic()
            if now - self._purged < PURGE_EVERY:
                return False
            self._purged = now
            return True
