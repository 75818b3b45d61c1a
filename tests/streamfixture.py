"""A gateway for the streaming and CLI tests: the shared test database, plus a high-cap grant.

Engineers (``writer@example.com``) get a second, read-only grant with a high
``max_rows``, so their SELECTs run on the reader account and may stream large
results; analysts keep their 500-row grant (the cap tests use it).
"""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RunningGateway, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider

from gateway.db.pools import ConnectionPool

STREAM_MAX_ROWS = 2_000_000
STREAM_TIMEOUT = "3s"


def write_stream_policy(directory: Path, db: ScratchDatabase) -> None:
    """Add the engineers' high-cap read grant beside conftest's policies."""
    (directory / "stream.yaml").write_text(
        textwrap.dedent(f"""\
        version: 1
        grants:
          - name: engineers-stream-read
            subjects: ["group:engineers"]
            target: shop
            access: read
            db_user: {db.accounts["reader"].user}
            tables: {{allow: ["{db.name}.*"]}}
            max_rows: {STREAM_MAX_ROWS}
            statement_timeout: {STREAM_TIMEOUT}
        """),
        encoding="utf-8",
    )


@pytest.fixture(scope="session")
def stream_gateway(
    tmp_path_factory: pytest.TempPathFactory, idp: OidcProvider, test_db: ScratchDatabase
) -> Iterator[RunningGateway]:
    """A gateway whose engineers may stream up to 2,000,000 rows (pool of 4 per account)."""
    tmp = tmp_path_factory.mktemp("stream-gateway")
    settings = gateway_settings(tmp, idp, test_db)
    write_stream_policy(tmp / "policies", test_db)
    running = start_gateway(settings, idp, test_db)
    yield running
    stop_gateway(running)


def reader_pool(gateway: RunningGateway) -> ConnectionPool:
    """The running gateway's pool for the reader account (the stream grants' account)."""
    return gateway.services.pools.pools()[("shop", gateway.db.accounts["reader"].user)]


def audit_records(gateway: RunningGateway, request_id: str) -> list[dict[str, Any]]:
    """The audit records of one request, in order (read straight from the SQLite store)."""
    gateway.audit_settled()
    conn = sqlite3.connect(f"file:{gateway.settings.audit.path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT record FROM audit ORDER BY seq").fetchall()
    finally:
        conn.close()
    records = [orjson.loads(row[0]) for row in rows]
    return [r for r in records if r.get("request_id") == request_id]
