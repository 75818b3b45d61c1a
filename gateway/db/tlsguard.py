"""TLS to the database, and a connection that never sends a password in cleartext without it.

asyncmy answers a server's switch to ``mysql_clear_password`` (or the PAM
``dialog`` plugin) by sending the password as it is, whether or not the
connection is encrypted. RDS IAM tokens and PAM logins use exactly that
plugin, so a server (or anything in the middle) that asks for it would get
the credential. ``GuardedConnection`` refuses those plugins unless the
connection is TLS with certificate and hostname verification (SECURITY rule 19).
"""

from __future__ import annotations

import ssl
from typing import Any

from asyncmy import errors as db_errors
from asyncmy.connection import Connection
from asyncmy.constants.CLIENT import MULTI_STATEMENTS

from gateway.settings import TargetSettings, TlsSettings

# Plugins that put the password itself on the wire.
CLEARTEXT_PLUGINS = frozenset({b"mysql_clear_password", b"dialog"})
# The client error MariaDB's own client uses for a plugin it will not load.
CR_AUTH_PLUGIN_CANNOT_LOAD = 2059


class CleartextRefused(db_errors.OperationalError):
    """The server asked for the password in cleartext over a connection that is not verified TLS."""


def ssl_context_for(tls: TlsSettings) -> ssl.SSLContext | None:
    """The client TLS context for a target: the CA bundle, certificate checks always on."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.verify_hostname
    return context


def is_verified(context: ssl.SSLContext | None) -> bool:
    """True when a context checks both the certificate chain and the host name."""
    return context is not None and context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


class GuardedConnection(Connection):
    """An asyncmy connection that sends cleartext passwords only over verified TLS."""

    async def _process_auth(self, plugin_name: bytes, auth_packet: Any) -> Any:  # noqa: ANN401 - asyncmy internals
        if plugin_name in CLEARTEXT_PLUGINS and not self.sends_cleartext_safely():
            raise CleartextRefused(
                CR_AUTH_PLUGIN_CANNOT_LOAD,
                f"refused to send the password with {plugin_name.decode('ascii', 'replace')}: "
                "the connection is not TLS with certificate and hostname verification",
            )
        return await super()._process_auth(plugin_name, auth_packet)  # type: ignore[misc]  # asyncmy is untyped: the base method is untyped

    def close(self) -> None:
        """Close the link at once, as asyncmy's ``close`` promises, TLS included.

        asyncmy closes a TLS transport politely: the socket stays open until the
        server's ``close_notify`` arrives (or 30 s pass). A refused handshake or a
        discarded connection needs no goodbye, and an event loop that ends first
        (a CLI command, ``asyncio.run``) would leave that socket behind. A
        graceful end is :meth:`ensure_closed` (``COM_QUIT``, then this).
        """
        state: Any = self  # asyncmy's stub declares neither field
        transport = state._transport  # noqa: SLF001 - asyncmy's own field, reset here as its close() does
        state._transport, state._connected = None, False  # noqa: SLF001 - asyncmy's own fields, as its close() does
        if transport is not None:
            transport.abort()

    def sends_cleartext_safely(self) -> bool:
        """True when this connection is encrypted with a verifying TLS context."""
        return bool(getattr(self, "_secure", False)) and is_verified(getattr(self, "_ssl_context", None))


def guarded_connection(
    target: TargetSettings,
    user: str,
    password: str,
    *,
    database: str | None,
    init_command: str,
    ssl: ssl.SSLContext | None,
) -> Any:  # noqa: ANN401 - asyncmy is untyped
    """An unconnected connection to ``target``'s server, hardened as every gateway connection is.

    utf8mb4, autocommit, no ``LOAD DATA LOCAL``, ``init_command`` run first,
    the password in cleartext only over verified TLS (``GuardedConnection``),
    and one statement per call: asyncmy always asks for multi-statements, so
    the flag is taken back and MariaDB itself refuses a second statement
    (SECURITY rule 8).
    """
    conn: Any = GuardedConnection(  # type: ignore[no-untyped-call]  # asyncmy is untyped
        host=target.host,
        port=target.port,
        user=user,
        password=password,
        database=database,
        charset="utf8mb4",
        init_command=init_command,
        autocommit=True,
        local_infile=False,
        ssl=ssl,
        connect_timeout=target.pool.connect_timeout,
    )
    conn._client_flag &= ~MULTI_STATEMENTS  # noqa: SLF001 - asyncmy offers no way to drop the flag but its own field
    return conn
