"""A blocking PyMySQL connection to a store the gateway keeps its own data in (the audit and state stores).

Both stores run their SQL in worker threads with PyMySQL; this is the one way
they connect: verified TLS when enabled (the gateway's own context, so
"enabled" never means a silent fallback), autocommit, the settings' timeouts,
the database created when asked (an account without the privilege still
works if it exists), then each session setting. Every failure is raised as
the caller's own error class, naming the store.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from typing import Any

import pymysql

from gateway.errors import GatewayError
from gateway.settings.shared import SharedDatabaseSettings


def connect_store(
    cfg: SharedDatabaseSettings,
    password: str,
    *,
    what: str,
    error: type[GatewayError],
    session: Sequence[str] = (),
    create: bool = False,
) -> pymysql.connections.Connection[Any]:
    """Open an autocommit connection to ``cfg.database`` (``what``, e.g. ``"audit"``, names the store in errors)."""
    tls: dict[str, Any] = {}
    if cfg.tls.enabled:
        context = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
        context.check_hostname = cfg.tls.verify_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        tls["ssl"] = context
    try:
        conn = pymysql.connect(
            host=cfg.host,
            port=cfg.port,
            user=cfg.user,
            password=password,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.query_timeout + 5,
            write_timeout=cfg.query_timeout + 5,
            **tls,
        )
    except pymysql.Error as exc:
        raise error(f"cannot connect to the {what} store at {cfg.host}:{cfg.port} ({exc})") from None
    try:
        with conn.cursor() as cur:
            if create:
                with contextlib.suppress(pymysql.err.OperationalError):
                    cur.execute(f"CREATE DATABASE IF NOT EXISTS `{cfg.database}`")
            conn.select_db(cfg.database)
            for setting in session:
                cur.execute(f"SET SESSION {setting}")
    except pymysql.Error as exc:
        conn.close()
        raise error(f"cannot use {what} database {cfg.database!r} ({exc})") from None
    return conn
