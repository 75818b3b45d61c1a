"""Streamed results (``Accept: application/x-ndjson``) through a running gateway."""

from __future__ import annotations

import asyncio
import secrets
import time
import tracemalloc
from collections.abc import AsyncGenerator
from typing import Any

import asyncmy
import httpx
import orjson
from conftest import DB_HOST, DB_PORT, RunningGateway, ScratchDatabase, aroot_query, root_query
from streamfixture import audit_records, reader_pool, stream_gateway

from gateway.db import execution, streaming
from gateway.db.pools import ConnectionPool
from gateway.policy.decide import Decision
from gateway.settings import LimitSettings, PoolSettings
from gateway.sql.statements import analyze

__all__ = ["stream_gateway"]

NDJSON = {"Accept": "application/x-ndjson"}
WAIT = 15.0  # seconds a test waits for the gateway or MariaDB to catch up, at most
# MariaDB's processlist states of a statement blocked writing its result to a client that does not read.
NETWORK_WRITE = frozenset({"Writing to net", "Sending to client"})
HELD_BYTES = 4 * 1024 * 1024  # what a paused stream may allocate while its consumer holds a batch


def stream(gateway: RunningGateway, user: str, sql: str, **body: object) -> tuple[httpx.Response, list[Any]]:
    """POST a streamed query; return (response, parsed lines)."""
    with gateway.client(user) as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": sql, **body}, headers=NDJSON)
    lines = [orjson.loads(line) for line in reply.content.splitlines()]
    return reply, lines


def test_large_result_streams_header_rows_and_trailer(stream_gateway: RunningGateway) -> None:
    """50,000 rows arrive as one header line, one JSON array per row and a trailer with the counts."""
    reply, lines = stream(
        stream_gateway, "writer", "SELECT seq, seq * 2 AS twice, 'x' AS tag FROM seq_1_to_50000 ORDER BY seq"
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/x-ndjson")
    header, *rows, trailer = lines
    assert header["type"] == "header"
    assert header["grant"] == "engineers-stream-read"
    assert header["kind"] == "read"
    assert header["request_id"] == reply.headers["x-request-id"]
    assert [c["name"] for c in header["columns"]] == ["seq", "twice", "tag"]
    assert len(rows) == 50_000
    assert rows[0] == [1, 2, "x"]
    assert rows[-1] == [50_000, 100_000, "x"]
    assert trailer["type"] == "trailer"
    assert trailer["row_count"] == 50_000
    assert trailer["truncated"] is False
    outcome = audit_records(stream_gateway, header["request_id"])[-1]
    assert outcome["event"] == "outcome"
    assert outcome["code"] == "ok"
    assert outcome["rows"] == 50_000
    # Both durations run from the request's start; the outcome is recorded before the trailer is written.
    assert isinstance(trailer["duration_ms"], float)
    assert outcome["duration_ms"] <= trailer["duration_ms"]


def test_values_are_encoded_as_in_buffered_replies(stream_gateway: RunningGateway) -> None:
    """DECIMAL, dates and binary values stream in the same JSON encoding as a buffered reply."""
    sql = "SELECT id, name, price, sku, added FROM items ORDER BY id LIMIT 3"
    _, lines = stream(stream_gateway, "writer", sql)
    with stream_gateway.client("writer") as http:
        buffered = http.post("/v1/query", json={"target": "shop", "sql": sql}).json()
    assert lines[1:-1] == buffered["rows"]
    assert lines[0]["columns"] == buffered["columns"]


def test_grant_row_cap_truncates_the_stream(stream_gateway: RunningGateway) -> None:
    """The analysts' grant caps rows at 500: the stream stops there and says it was truncated."""
    reply, lines = stream(stream_gateway, "reader", "SELECT seq FROM seq_1_to_5000")
    assert reply.status_code == 200, reply.text
    rows, trailer = lines[1:-1], lines[-1]
    assert len(rows) == 500
    assert trailer == {**trailer, "type": "trailer", "row_count": 500, "truncated": True}
    outcome = audit_records(stream_gateway, lines[0]["request_id"])[-1]
    assert outcome["rows"] == 500
    assert outcome["truncated"] is True


def test_requested_max_rows_caps_the_stream(stream_gateway: RunningGateway) -> None:
    """The request's own ``max_rows`` caps the stream below the grant's cap."""
    _, lines = stream(stream_gateway, "writer", "SELECT seq FROM seq_1_to_5000", max_rows=1234)
    assert len(lines) == 1234 + 2
    assert lines[-1]["row_count"] == 1234
    assert lines[-1]["truncated"] is True


def _stream_cap(limits: LimitSettings, grant_max_rows: int | None, requested: int | None) -> int:
    decision = Decision(allowed=True, code="allowed", reason="", target="shop", max_rows=grant_max_rows)
    return execution.limits_for(limits, decision, requested, stream=True).max_rows


def test_stream_cap_is_separate_from_the_buffered_cap() -> None:
    """Streams are capped by limits.max_stream_rows, the grant and the request, not limits.max_rows."""
    limits = LimitSettings(max_rows=100, max_stream_rows=5_000_000)
    assert _stream_cap(limits, None, None) == 5_000_000
    assert _stream_cap(limits, 2_000_000, None) == 2_000_000
    assert _stream_cap(limits, 2_000_000, 10) == 10
    assert _stream_cap(LimitSettings(max_stream_rows=7), 2_000_000, None) == 7


def test_statement_timeout_ends_the_stream_with_an_error(stream_gateway: RunningGateway) -> None:
    """A statement over the grant's 3 s timeout is stopped by MariaDB; the caller learns it was a timeout."""
    sql = "SELECT a.seq FROM seq_1_to_100000 a JOIN seq_1_to_100000 b ON a.seq + b.seq = 0"
    reply, lines = stream(stream_gateway, "writer", sql)
    if reply.status_code == 200:
        assert lines[0]["type"] == "header"
        error = lines[-1]
        assert error["type"] == "error"
        assert error["code"] == "statement_timeout"
        assert error["request_id"] == lines[0]["request_id"]
    else:
        assert reply.status_code == 504
        assert reply.json()["code"] == "statement_timeout"
    assert reader_pool(stream_gateway).in_use == 0


def test_denials_are_problem_json_before_any_stream(stream_gateway: RunningGateway) -> None:
    """A refused streamed query gets the ordinary problem+json reply, not a 200 stream."""
    reply, _ = stream(stream_gateway, "reader", "SELECT * FROM payment_cards")
    assert reply.status_code == 403
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["code"] == "forbidden"
    reply, _ = stream(stream_gateway, "writer", "SELECT nope FROM items")
    assert reply.status_code == 422
    assert reply.json()["code"] == "database_error"


def _running_statements(gateway: RunningGateway, request_id: str) -> list[tuple[object, ...]]:
    """The gateway account's statements of one request still running in MariaDB."""
    return root_query(
        "SELECT id FROM information_schema.processlist WHERE user = %s AND command = 'Query' AND info LIKE %s",
        (gateway.db.accounts["reader"].user, f"%request_id={request_id} %"),
    )


def test_client_disconnect_frees_the_connection_and_stops_the_statement(stream_gateway: RunningGateway) -> None:
    """A client that hangs up mid-stream: the pool gets its slot back, MariaDB stops, the audit says so."""
    pool = reader_pool(stream_gateway)
    sql = "SELECT a.seq, b.seq FROM seq_1_to_2000 a JOIN seq_1_to_1000 b"  # 2,000,000 rows
    with (
        stream_gateway.client("writer") as http,
        http.stream(
            "POST",
            "/v1/query",
            json={"target": "shop", "sql": sql},
            headers=NDJSON,
        ) as reply,
    ):
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
        lines = reply.iter_lines()
        assert orjson.loads(next(lines))["type"] == "header"
        for _ in range(1000):
            assert isinstance(orjson.loads(next(lines)), list)
        assert pool.in_use == 1
        assert _running_statements(stream_gateway, request_id), "the statement should still be running"
    deadline = time.monotonic() + WAIT
    while (pool.in_use or _running_statements(stream_gateway, request_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.in_use == 0
    assert pool.size == pool.idle  # nothing leaked: every open connection is free
    assert _running_statements(stream_gateway, request_id) == []
    while time.monotonic() < deadline and audit_records(stream_gateway, request_id)[-1]["event"] != "outcome":
        time.sleep(0.05)
    outcome = audit_records(stream_gateway, request_id)[-1]
    assert outcome["code"] == "client_disconnected"
    assert 1000 <= outcome["rows"] < 2_000_000
    _, after = stream(stream_gateway, "writer", "SELECT seq FROM seq_1_to_10")
    assert after[-1]["row_count"] == 10  # the pool still serves


def test_slow_reader_makes_mariadb_wait_instead_of_filling_memory(test_db: ScratchDatabase) -> None:
    """While the consumer holds a chunk, the gateway reads no further: MariaDB itself waits to send.

    asyncmy alone would read the whole 2,000,000-row result into memory while
    the client dawdles (MariaDB would keep producing rows and finish); the
    stream pauses the socket between batches, so the socket's buffers fill and
    MariaDB blocks writing the result. The test waits (bounded) until
    MariaDB's processlist shows the statement in a network write state in two
    looks in a row (stalled on the client, not merely busy); meanwhile the
    process allocated at most HELD_BYTES (tracemalloc: a greedy reader would
    have taken tens of MB by then, or the statement would have ended). Then
    it closes the stream: the slot is freed and the statement killed.
    """
    reader = test_db.accounts["reader"]
    marker = f"gw test slow-reader {secrets.token_hex(4)}"

    async def connect() -> Any:
        return await asyncmy.connect(
            host=DB_HOST, port=DB_PORT, user=reader.user, password=reader.password, db=test_db.name, autocommit=True
        )

    async def running() -> list[tuple[str, int]]:
        rows = await aroot_query(
            "SELECT COALESCE(state, ''), examined_rows FROM information_schema.processlist"
            " WHERE command = 'Query' AND info LIKE %s AND id <> CONNECTION_ID()",
            (f"%{marker}%",),
        )
        return [(str(state), int(examined)) for state, examined in rows]

    async def scenario() -> tuple[list[list[tuple[str, int]]], int, int, bool, list[tuple[str, int]]]:
        pool = ConnectionPool("bp", connect, PoolSettings(max_size=1))
        statement = analyze(
            "SELECT a.seq, b.seq FROM seq_1_to_2000 a JOIN seq_1_to_1000 b", default_database=test_db.name
        )
        limits = execution.Limits(timeout=30, max_rows=5_000_000, max_bytes=1, read_only=True)
        conn = await pool.acquire()
        tracemalloc.start()
        try:
            stream = await streaming.start(pool, conn, statement, [], limits, f"/* {marker} */")
            batches = stream.lines()
            assert isinstance(batches, AsyncGenerator)  # closed (aclose) below, as a client going away does
            await anext(batches)  # the first batch; then the consumer holds on
            deadline = time.monotonic() + WAIT
            looks = [await running()]
            while not _stalled_writing(looks[-2:]):
                assert looks[-1], f"the statement ended while the consumer held a batch: read whole ({looks[-3:]})"
                assert time.monotonic() < deadline, f"MariaDB never waited on the client ({looks[-3:]})"
                await asyncio.sleep(0.05)
                looks.append(await running())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await batches.aclose()
        abandoned = stream.close()
        while await running():  # the close kills the statement (KILL QUERY)
            assert time.monotonic() < deadline, "the abandoned statement was not killed"
            await asyncio.sleep(0.05)
        return looks[-2:], peak, pool.in_use, abandoned, await running()

    stalled, peak, in_use, abandoned, after = asyncio.run(scenario())
    assert _stalled_writing(stalled)
    assert peak <= HELD_BYTES
    assert in_use == 0
    assert abandoned  # it had not finished: the slot was freed and the statement killed
    assert after == []


def _stalled_writing(looks: list[list[tuple[str, int]]]) -> bool:
    """Two looks at the statement, both in a network write state with the same examined-row count."""
    if len(looks) != 2 or any(len(look) != 1 for look in looks):
        return False
    (first,), (second,) = looks
    return first[0] in NETWORK_WRITE and first == second
