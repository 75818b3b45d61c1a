"""Console sessions: kept on the server, named in the browser by an unguessable cookie, timed out twice.

The browser holds only the session id, in a cookie that is ``HttpOnly``,
``SameSite=Lax`` (sent on the IdP's redirect back, never on a cross-site
POST) and ``Secure`` off loopback. Everything else stays here: the access
token (which never reaches the browser), the CSRF token, the sign-ins in
progress (their ``state`` and PKCE verifier). The store is keyed by the
SHA-256 of the id, so whoever reads a store never holds a usable cookie.

A session ends at its **idle** timeout (no request for ``idle`` seconds), its
**absolute** timeout (``absolute`` seconds after sign-in, however busy), when
its access token expires (the person signs in again, at once if the IdP
still knows them), or at logout. Signing in always makes a new session id
(no fixation). ``SessionStore`` is the swap point: :class:`MemorySessionStore`
(one process, bounded) here, or, with ``state.store: mariadb``, the shared
state store's ``console_sessions`` table (``gateway.console.sharedsessions``),
so a person signed in through one replica carries on through any other. A
shared store is handed the session's **seal**, a key derived from the cookie
(never stored), to encrypt what it keeps: whoever reads the table holds
neither a usable cookie nor an access token. A store that blocks (a database)
says so (``blocking = True``) and is called in a worker thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ParamSpec, Protocol, TypeVar

MAX_PENDING_LOGINS = 5  # sign-ins started in other tabs of one browser
LOGIN_TIMEOUT = 600.0  # seconds a sign-in may take at the IdP
MAX_COOKIE = 128  # characters; ours are 43
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """A sign-in sent to the IdP: what its answer must match, and where to go after."""

    state: str
    verifier: str  # PKCE code_verifier (RFC 7636), never sent to the browser
    next: str
    started: float


@dataclass(slots=True)
class Session:
    """One browser's session; ``user`` is None until the sign-in completes."""

    key: str  # SHA-256 of the cookie value
    csrf: str
    created: float
    seen: float
    user: str | None = None
    access_token: str | None = None
    token_expires: float = 0.0
    logins: dict[str, PendingLogin] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # shown once, on the next page (after a redirect)
    seal: bytes = field(default=b"", repr=False)  # a key derived from the cookie: never stored, never logged
    dirty: bool = field(default=False, repr=False)  # changed since read (notices shown): save it again

    @property
    def signed_in(self) -> bool:
        """Whether the sign-in completed (an access token is held)."""
        return self.access_token is not None


class SessionStore(Protocol):
    """Where sessions live, by key (the SHA-256 of the cookie value)."""

    blocking: bool  # True: every call blocks (a database), so the console calls it in a worker thread

    def get(self, key: str, seal: bytes) -> Session | None:
        """The session stored under ``key``, if any (``seal``: the cookie's key, to open what a shared store sealed)."""
        ...

    def put(self, session: Session) -> None:
        """Store (or replace) ``session``."""
        ...

    def delete(self, key: str) -> None:
        """Forget the session under ``key`` (no error if absent)."""
        ...


class MemorySessionStore:
    """Sessions of one process, at most ``limit`` (the least recently used go first past it)."""

    blocking = False

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def get(self, key: str, seal: bytes = b"") -> Session | None:
        """The session under ``key`` (and, given one, ``seal``), now the most recently used."""
        session = self._sessions.get(key)
        if session is not None and seal and not hmac.compare_digest(session.seal, seal):
            return None
        if session is not None:
            self._sessions.move_to_end(key)
        return session

    def put(self, session: Session) -> None:
        """Store ``session``, evicting the least recently used past the limit."""
        self._sessions[session.key] = session
        self._sessions.move_to_end(session.key)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)

    def delete(self, key: str) -> None:
        """Forget the session under ``key``."""
        self._sessions.pop(key, None)

    def __len__(self) -> int:
        return len(self._sessions)


def key_of(cookie: str) -> str:
    """The store key of a cookie value."""
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


def seal_of(cookie: str) -> bytes:
    """The key a shared store seals a session with: derived from the cookie, independent of ``key_of``."""
    return hashlib.sha256(b"gateway console session seal\x00" + cookie.encode("utf-8", "surrogateescape")).digest()


def session_end(session: Session, *, idle: float, absolute: float) -> float:
    """When ``session`` ends if nothing more happens: the soonest of its timeouts (as ``Sessions.expired``)."""
    ends = session.seen + idle
    if session.signed_in:
        return min(ends, session.created + absolute, session.token_expires)
    return min(ends, session.created + LOGIN_TIMEOUT)


class Sessions:
    """Session rules over a store: creation, the timeouts, sign-in, logout (``now`` in epoch seconds)."""

    def __init__(self, store: SessionStore, *, idle: float, absolute: float) -> None:
        self.store = store
        self.idle = idle
        self.absolute = absolute

    async def _call(self, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.store.blocking:
            return await asyncio.to_thread(work, *args, **kwargs)
        return work(*args, **kwargs)

    async def save(self, session: Session) -> None:
        """Store ``session`` as it is now."""
        session.dirty = False
        await self._call(self.store.put, session)

    async def new(self, now: float) -> tuple[str, Session]:
        """A fresh, signed-out session and its cookie value."""
        cookie = secrets.token_urlsafe(32)
        session = Session(
            key=key_of(cookie), csrf=secrets.token_urlsafe(32), created=now, seen=now, seal=seal_of(cookie)
        )
        await self.save(session)
        return cookie, session

    async def current(self, cookie: str | None, now: float) -> Session | None:
        """The live session named by ``cookie``; an expired one is deleted and ``None`` returned."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        session = await self._call(self.store.get, key_of(cookie), seal_of(cookie))
        if session is None:
            return None
        if self.expired(session, now):
            await self._call(self.store.delete, session.key)
            return None
        session.seen = now
        await self.save(session)
        return session

    def expired(self, session: Session, now: float) -> bool:
        """Idle too long, past the absolute timeout, or (signed in) past the token's expiry."""
        if now - session.seen > self.idle:
            return True
        if session.signed_in:
            return now - session.created > self.absolute or now >= session.token_expires
        return now - session.created > LOGIN_TIMEOUT

    async def start_login(self, session: Session, login: PendingLogin) -> None:
        """Remember a sign-in sent to the IdP (a few per browser, the oldest dropped)."""
        session.logins[login.state] = login
        while len(session.logins) > MAX_PENDING_LOGINS:
            del session.logins[next(iter(session.logins))]
        await self.save(session)

    async def take_login(self, session: Session, state: str, now: float) -> PendingLogin | None:
        """The sign-in this IdP answer belongs to, once; ``None`` if unknown or too old."""
        login = session.logins.pop(state, None)
        await self.save(session)
        if login is None or now - login.started > LOGIN_TIMEOUT:
            return None
        return login

    async def signed_in(
        self, old: Session, user: str, access_token: str, token_expires: float, now: float
    ) -> tuple[str, Session]:
        """Replace the signed-out session ``old`` by a new, signed-in one (a new id: no fixation)."""
        await self._call(self.store.delete, old.key)
        cookie, session = await self.new(now)
        session.user = user
        session.access_token = access_token
        session.token_expires = token_expires
        await self.save(session)
        return cookie, session

    async def end(self, session: Session) -> None:
        """Log out: the session is gone, its cookie worthless."""
        await self._call(self.store.delete, session.key)
