"""A private, throwaway mariadbd for the benchmark: own datadir, port, socket and TLS files.

Every app in the benchmark talks to this one server, so they share the same
MariaDB, and nothing the benchmark does (256 naive connections at once, a
write-heavy case) touches a server other people use. It is stopped and its
directory removed when the context exits (kept with ``BENCH_KEEP=1``). The
server itself is started by the tests' helper, ``tests/privatemariadb.py``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tests.privatemariadb import MariaDBServer, MariaDBStartError, free_port, running_mariadb

PrivateServer = MariaDBServer
__all__ = ["PrivateServer", "free_port", "private_mariadb"]


@contextlib.contextmanager
def private_mariadb(*, max_connections: int = 2000) -> Iterator[PrivateServer]:
    """Start a private mariadbd with TLS (RSA 2048, as most servers use) on a free loopback port."""
    try:
        with running_mariadb(
            "gwbench-db-",
            tls="rsa",
            args=(f"--max-connections={max_connections}", "--innodb-buffer-pool-size=256M"),
            keep=bool(os.environ.get("BENCH_KEEP")),
        ) as server:
            yield server
    except MariaDBStartError as exc:
        raise SystemExit(f"private mariadbd did not start: {exc}") from None
