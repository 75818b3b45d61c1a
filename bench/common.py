"""What the baseline and the naive app share: settings from the environment, the body, the reply.

Both apps answer ``POST /v1/query`` with the gateway's request body
(``{"target", "sql", "params"}``, ``?`` placeholders), so one wrk script
drives all three. They encode rows with orjson, as a team that cares would.
"""

from __future__ import annotations

import base64
import os
import ssl
from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import Response
from pydantic import BaseModel


class QueryBody(BaseModel):
    """The gateway's request body (target ignored: one database)."""

    target: str = ""
    sql: str
    params: list[Any] = []


def db_args() -> dict[str, Any]:
    """The asyncmy connect arguments from ``BENCH_DB_*`` (TLS with ``BENCH_DB_CA``)."""
    args: dict[str, Any] = {
        "host": os.environ.get("BENCH_DB_HOST", "127.0.0.1"),
        "port": int(os.environ["BENCH_DB_PORT"]),
        "user": os.environ["BENCH_DB_USER"],
        "password": os.environ["BENCH_DB_PASSWORD"],
        "db": os.environ["BENCH_DB_NAME"],
        "autocommit": True,
        "charset": "utf8mb4",
    }
    ca = os.environ.get("BENCH_DB_CA")
    if ca:
        args["ssl"] = ssl.create_default_context(cafile=ca)
    return args


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


class JSONResponse(Response):
    """orjson-encoded JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:  # noqa: ANN401 - orjson serialises whatever the endpoint returns
        """Encode with orjson."""
        return orjson.dumps(content, default=_default)


async def run(conn: Any, body: QueryBody) -> JSONResponse:  # noqa: ANN401 - an asyncmy connection (untyped)
    """Run the statement as sent (``?`` -> ``%s``), no checks at all."""
    async with conn.cursor() as cur:
        await cur.execute(body.sql.replace("?", "%s"), body.params or None)
        if cur.description is None:
            return JSONResponse({"rows_affected": cur.rowcount, "last_insert_id": cur.lastrowid})
        rows = await cur.fetchall()
        columns = [d[0] for d in cur.description]
        return JSONResponse({"columns": columns, "rows": [list(r) for r in rows], "row_count": len(rows)})
