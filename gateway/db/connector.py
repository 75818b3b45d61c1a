"""Open one hardened connection for ``(target, db_user)``, with fresh credentials each time.

The pool calls a ``Connector`` for every new connection, so the credential
provider is asked every time (asyncmy's own pool would reuse the password
fixed at its creation, and connections opened after an IAM token's 15
minutes would fail). On the way:

- new connections are spaced by the target's ``ConnectRate`` (SECURITY rule 20);
- the password goes only over a ``GuardedConnection``, which refuses to send
  it in cleartext unless the connection is verified TLS (SECURITY rule 19);
- a refused password is retried once after ``invalidate()``, when the
  provider then has a different one (a rotated secret, a fresh token);
- every failure is a ``DatabaseUnavailable`` whose detail names the cause,
  never the secret, and is counted by cause in ``stats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncmy import errors as db_errors

from gateway.db.connectrate import ConnectRate
from gateway.db.credentials import CredentialProvider
from gateway.db.tlsguard import CleartextRefused, guarded_connection, ssl_context_for
from gateway.errors import DatabaseUnavailable
from gateway.settings import TargetSettings

# MariaDB refused the account's credentials (wrong password, expired or bad token).
ACCESS_DENIED = frozenset({1045, 1698})
# asyncmy's own client errors: their messages name the cause (TLS, refused port), never a secret.
_CLIENT_ERRORS = range(2000, 3000)


@dataclass
class ConnectStats:
    """Results of opening new connections, by cause (for metrics and /readyz)."""

    results: dict[str, int] = field(default_factory=dict)
    last_failure: str | None = None

    def count(self, result: str, detail: str | None = None) -> None:
        """Count one attempt's result; remember the last failure's detail."""
        self.results[result] = self.results.get(result, 0) + 1
        if detail is not None:
            self.last_failure = detail


class _Failed(Exception):
    """One connect attempt failed for ``cause``; ``detail`` is safe to show."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


class _Refused(Exception):
    """MariaDB refused the credentials (the connector may retry once)."""

    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


class Connector:
    """A coroutine factory for the pool: ``await connector()`` opens one connection."""

    def __init__(
        self,
        target: TargetSettings,
        db_user: str,
        credentials: CredentialProvider,
        init_command: str,
        rate: ConnectRate | None = None,
    ) -> None:
        self.target = target
        self.db_user = db_user
        self.credentials = credentials
        self.rate = rate
        self.stats = ConnectStats()
        self._init_command = init_command
        self._ssl = ssl_context_for(target.tls)

    async def __call__(self) -> Any:  # noqa: ANN401 - asyncmy is untyped
        """Open, authenticate and pin the session of one new connection."""
        try:
            if self.rate is not None:
                try:
                    await self.rate.wait(max_wait=self.target.pool.connect_timeout / 2)
                except DatabaseUnavailable as exc:
                    raise _Failed("rate_limited", exc.detail) from None
            password = await self._password()
            try:
                conn = await self._open(password)
            except _Refused:
                self.credentials.invalidate()
                fresh = await self._password()
                if fresh == password:
                    raise
                conn = await self._open(fresh)
        except _Refused as exc:
            detail = (
                f"MariaDB at {self.target.host}:{self.target.port} refused the credentials for {self.db_user} "
                f"(MariaDB error {exc.errno}, access denied; credentials from {self.credentials.describe()})"
            )
            self.stats.count("auth_refused", detail)
            raise DatabaseUnavailable(detail) from None
        except _Failed as exc:
            self.stats.count(exc.cause, exc.detail)
            raise DatabaseUnavailable(exc.detail) from None
        self.stats.count("ok")
        return conn

    async def _password(self) -> str:
        try:
            return await self.credentials.password()
        except DatabaseUnavailable as exc:
            raise _Failed("credential_error", exc.detail) from None

    async def _open(self, password: str) -> Any:  # noqa: ANN401 - asyncmy is untyped
        target, db_user = self.target, self.db_user
        conn = guarded_connection(
            target, db_user, password, database=target.database, init_command=self._init_command, ssl=self._ssl
        )
        try:
            await conn.connect()
        except CleartextRefused:
            raise _Failed(
                "cleartext_refused",
                f"refused to send the credentials for {db_user} to {target.host}:{target.port}: the server asked "
                "for a cleartext password and the connection is not TLS with certificate and hostname verification",
            ) from None
        except db_errors.MySQLError as exc:
            errno = exc.args[0] if exc.args else 0
            if errno in ACCESS_DENIED:
                raise _Refused(errno) from None
            why = f": {exc.args[1]}" if errno in _CLIENT_ERRORS and len(exc.args) > 1 else ""
            raise _Failed(
                "connect_error",
                f"cannot connect to {target.host}:{target.port} as {db_user} "
                f"(MariaDB error {errno}{why}; credentials from {self.credentials.describe()})",
            ) from None
        except OSError as exc:
            raise _Failed(
                "connect_error", f"cannot connect to {target.host}:{target.port} ({exc.strerror or exc})"
            ) from None
        except (RuntimeError, EOFError) as exc:
            # asyncmy's words for a link that dropped mid-handshake ("Transport does not expose
            # socket instance", an incomplete read): the server is unreachable, not a gateway bug.
            raise _Failed("connect_error", f"cannot connect to {target.host}:{target.port} ({exc})") from None
        return conn
