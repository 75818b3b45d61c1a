"""The naive app: the baseline's endpoint, opening a connection per request.

What every FastAPI-and-MariaDB guide warns against; with ``BENCH_DB_CA`` set
each connection is TLS, where a connection per request really hurts.
``uvicorn bench.naive_app:create_app --factory``.
"""

from __future__ import annotations

import asyncmy
from fastapi import FastAPI

from bench.common import JSONResponse, QueryBody, db_args, run


def create_app() -> FastAPI:
    """The app: no pool, one connection per request."""
    args = db_args()
    app = FastAPI()

    @app.post("/v1/query")
    async def query(body: QueryBody) -> JSONResponse:
        conn = await asyncmy.connect(**args)
        try:
            return await run(conn, body)
        finally:
            await conn.ensure_closed()

    return app
