"""The baseline: a bare FastAPI + asyncmy pool endpoint that runs the statement with no checks.

What a team would build without the gateway. ``uvicorn bench.baseline_app:create_app --factory``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncmy
from fastapi import FastAPI, Request

from bench.common import JSONResponse, QueryBody, db_args, run


def create_app() -> FastAPI:
    """The app; the pool (asyncmy's own, ``BENCH_POOL_SIZE`` connections) opens in the lifespan."""
    size = int(os.environ.get("BENCH_POOL_SIZE", "10"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncmy.create_pool(minsize=size, maxsize=size, **db_args())
        yield
        app.state.pool.close()
        await app.state.pool.wait_closed()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/query")
    async def query(body: QueryBody, request: Request) -> JSONResponse:
        async with request.app.state.pool.acquire() as conn:
            return await run(conn, body)

    return app
