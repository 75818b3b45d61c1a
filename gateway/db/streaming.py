"""Stream one statement's rows as NDJSON from an unbuffered cursor, with back-pressure.

``open_stream`` takes a connection from the decision's pool, runs the statement
with the same ``SET STATEMENT ... FOR`` limits as a buffered query and reads
the result-set header; errors up to there are ordinary gateway errors (and so
ordinary problem+json replies). ``RowStream.chunks()`` then yields NDJSON::

    {"type": "header", "request_id": ..., "target": ..., "kind": ..., "grant": ..., "columns": [...]}
    [1, "pen", "1.50"]                       <- one JSON array per row
    ...
    {"type": "trailer", "row_count": N, "truncated": false, "duration_ms": ...}

or, when something goes wrong after the header went out, a last line
``{"type": "error", "code": ..., "detail": ..., "row_count": N, ...}``.

Back-pressure: the next batch is fetched from MariaDB only when the consumer
(the HTTP response) asks for the next chunk, which it does once the previous
one was sent, so at most one batch is held in memory whatever the result's
size. The connection is held for the stream's lifetime; ``close()`` (called
by the HTTP layer when the response ends, however it ends) frees it at once
if the stream did not finish: the session is discarded, the pool slot
released, and the statement is stopped in MariaDB with ``KILL QUERY`` over a
side connection of the same account.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import orjson
import structlog
from asyncmy import errors as db_errors
from asyncmy.cursors import SSCursor

from gateway.db import execution
from gateway.db.encoding import TYPE_NAMES, JSONValue, dump_row_line
from gateway.db.pools import ConnectionPool, Pooled
from gateway.errors import GatewayError, InvalidRequest, StatementTimeout
from gateway.settings import LimitSettings
from gateway.sql.statements import Statement

log = structlog.get_logger("gateway.db.streaming")

NDJSON = "application/x-ndjson"
FIRST_BATCH = 256  # rows in the first fetch: the first bytes reach the client early
MAX_BATCH = 2000  # rows per fetch at most
CHUNK_BYTES = 256 * 1024  # aim for chunks around this size (wide rows shrink the batch)
RECEIVE_BUFFER = 256 * 1024  # bytes of kernel receive buffer on a streaming connection
KILL_TIMEOUT = 5.0  # seconds for the side connection that stops an abandoned statement
DISCONNECTED = "client_disconnected"

Outcome = Callable[..., Awaitable[None]]

# Strong references to clean-up tasks started when a client goes away (asyncio
# keeps only weak ones); each removes itself when done.
_CLEANUPS: set[asyncio.Task[None]] = set()


def stream_limits(limits: LimitSettings, grant_max_rows: int | None, requested: int | None) -> int:
    """The row cap of a stream: ``limits.max_stream_rows``, the grant's ``max_rows``, the request's."""
    caps = [limits.max_stream_rows]
    caps.extend(cap for cap in (grant_max_rows, requested) if cap is not None)
    return min(caps)


def _translate(exc: db_errors.MySQLError) -> GatewayError:
    return execution.classify(exc)  # one classification for buffered and streamed statements


class _ReadGate:
    """Reads from MariaDB's socket only while a fetch needs bytes, through a small kernel buffer.

    asyncmy 0.2.18's protocol never pauses its transport: it reads the whole
    result into its buffer (and parses every complete row there) as fast as
    MariaDB sends it, however slowly rows are taken: 1,000,000 rows held up
    to ~470 MB when measured. So the socket is paused between fetches and
    resumed for each one, and its receive buffer is capped: uvloop reads until
    the kernel buffer is empty, which with Linux's autotuning can be many MB.
    While the HTTP client is slow, the kernel buffers fill and MariaDB waits.
    """

    def __init__(self, raw: Any) -> None:  # noqa: ANN401 - asyncmy is untyped
        self._transport = getattr(raw, "_transport", None)
        if self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def pause(self) -> None:
        """Stop reading from the socket."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume(self) -> None:
        """Read from the socket again."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()


def _line(value: object) -> bytes:
    return orjson.dumps(value) + b"\n"


class RowStream:
    """One running statement whose rows are read as the client takes them."""

    def __init__(
        self,
        pool: ConnectionPool,
        conn: Pooled,
        cursor: Any,  # noqa: ANN401 - asyncmy is untyped
        *,
        header: dict[str, Any],
        max_rows: int,
        deadline: float,
        started: float,
        outcome: Outcome,
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._cursor = cursor
        self._header = header
        self._max_rows = max_rows
        self._deadline = deadline
        self._started = started
        self._outcome = outcome
        self._thread_id = conn.thread_id
        self._gate = _ReadGate(conn.raw)
        self._gate.pause()
        self._done = False
        self.sent = 0  # rows whose chunk the consumer has taken
        # Lets the pipeline say why a statement died (e.g. killed because access was revoked).
        self.on_error: Callable[[GatewayError], GatewayError] | None = None

    @property
    def thread_id(self) -> int:
        """MariaDB's id of the connection running the statement."""
        return self._thread_id

    @property
    def finished(self) -> bool:
        """The connection is back in (or gone from) the pool."""
        return self._done

    def _release(self, *, discard: bool) -> None:
        if self._done:
            return
        self._done = True
        self._conn.discard = self._conn.discard or discard
        self._pool.release(self._conn)

    def _elapsed_ms(self) -> float:
        return round((time.perf_counter() - self._started) * 1000, 3)

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the header line, rows in batches, then a trailer (or an error line)."""
        try:
            description = self._cursor.description
            columns = [{"name": d[0], "type": TYPE_NAMES.get(d[1], str(d[1]))} for d in description or ()]
            yield _line({"type": "header", **self._header, "columns": columns})
            if description is None:
                async for line in self._finish_without_rows():
                    yield line
                return
            truncated = False
            batch = FIRST_BATCH
            while True:
                rows = await self._fetch(batch)
                if isinstance(rows, GatewayError):
                    yield await self._fail(rows)
                    return
                if not rows:
                    break
                room = self._max_rows - self.sent
                if len(rows) > room:
                    rows, truncated = rows[:room], True
                chunk = b"".join([dump_row_line(raw) for raw in rows])
                if chunk:
                    yield chunk
                self.sent += len(rows)
                # asyncmy reads from its buffer and the server's send returns at once
                # while the socket has room, so without this a fast stream would never
                # give other requests (or a disconnect's cancellation) a turn.
                await asyncio.sleep(0)
                if truncated:
                    break
                batch = _next_batch(batch, len(rows), len(chunk))
            await self._close_cursor(truncated=truncated)
            await self._outcome(code="ok", rows=self.sent, truncated=truncated, streamed=True)
            yield _line(
                {
                    "type": "trailer",
                    "row_count": self.sent,
                    "truncated": truncated,
                    "duration_ms": self._elapsed_ms(),
                }
            )
        finally:
            self.close()

    async def _fetch(self, batch: int) -> Sequence[Any] | GatewayError:
        self._gate.resume()
        try:
            async with asyncio.timeout_at(self._deadline):
                rows = await self._cursor.fetchmany(batch)
        except TimeoutError:
            return StatementTimeout("the statement ran past its timeout")
        except db_errors.MySQLError as exc:
            return _translate(exc)
        self._gate.pause()
        return rows  # type: ignore[no-any-return]

    async def _fail(self, error: GatewayError) -> bytes:
        if self.on_error is not None:
            error = self.on_error(error)
        self._release(discard=True)
        await self._outcome(code=error.code, error=error.detail, rows=self.sent)
        return _line(
            {
                "type": "error",
                "code": error.code,
                "status": error.status,
                "title": error.title,
                "detail": error.detail,
                "request_id": self._header["request_id"],
                **{k: v for k, v in self._header.items() if k == "client_request_id"},
                "row_count": self.sent,
            }
        )

    async def _finish_without_rows(self) -> AsyncIterator[bytes]:
        affected = max(self._cursor.rowcount, 0)
        last_id = self._cursor.lastrowid or None
        await self._close_cursor(truncated=False)
        await self._outcome(code="ok", rows=affected, streamed=True)
        yield _line(
            {
                "type": "trailer",
                "row_count": 0,
                "truncated": False,
                "rows_affected": affected,
                "last_insert_id": last_id,
                "duration_ms": self._elapsed_ms(),
            }
        )

    async def _close_cursor(self, *, truncated: bool) -> None:
        if truncated:
            # Unread rows may remain on the wire: never hand this session to anyone else.
            self._release(discard=True)
            return
        self._gate.resume()  # the next user of this connection reads normally
        try:
            async with asyncio.timeout_at(self._deadline):
                await self._cursor.close()
        except (db_errors.MySQLError, TimeoutError):
            self._release(discard=True)
            return
        self._release(discard=False)

    def close(self) -> None:
        """End the stream now if it has not finished (the client went away); idempotent.

        Synchronous on purpose: it runs even inside a cancelled task. The pool
        slot is freed here; stopping the statement in MariaDB and the outcome
        record happen in a background task.
        """
        if self._done:
            return
        self._release(discard=True)
        log.info("stream_abandoned", rows_sent=self.sent, request_id=self._header["request_id"])
        task = asyncio.get_running_loop().create_task(self._after_disconnect(), name="stream-cleanup")
        _CLEANUPS.add(task)
        task.add_done_callback(_CLEANUPS.discard)

    async def _after_disconnect(self) -> None:
        try:
            async with asyncio.timeout(KILL_TIMEOUT):
                # False when it could not connect or the statement had already ended (both logged there).
                await self._pool.kill(self._thread_id, connection=False)
        except TimeoutError:
            log.warning("stream_kill_failed", error="TimeoutError")
        with contextlib.suppress(GatewayError):
            await self._outcome(code=DISCONNECTED, error="the client disconnected mid-stream", rows=self.sent)


def _next_batch(batch: int, rows: int, size: int) -> int:
    if rows < batch or size == 0:
        return batch
    per_row = size / rows
    return max(1, min(MAX_BATCH, int(CHUNK_BYTES / per_row)))


async def open_stream(
    pool: ConnectionPool,
    statement: Statement,
    params: Sequence[JSONValue],
    limits: execution.Limits,
    comment: str,
    *,
    header: dict[str, Any],
    started: float,
    outcome: Outcome,
    on_connection: Callable[[Pooled], None] | None = None,
) -> RowStream:
    """Run ``statement`` on a held connection and return the stream of its rows.

    ``on_connection`` sees the connection before the statement starts (to
    register it as in flight; raising there refuses the stream). Errors before
    the first row (binding, MariaDB refusing the statement, the timeout, the
    pool) are raised; the connection goes back to the pool.
    """
    conn = await pool.acquire()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout + execution.TIMEOUT_GRACE
    try:
        if on_connection is not None:
            on_connection(conn)
        sql = execution.wrap(
            execution.bind(statement, params, conn), comment, limits, kind=statement.kind, in_transaction=False
        )
        cursor = conn.raw.cursor(SSCursor)
        async with asyncio.timeout_at(deadline):
            await cursor.execute(sql)
    except InvalidRequest:
        pool.release(conn)
        raise
    except TimeoutError:
        conn.discard = True
        pool.release(conn)
        raise StatementTimeout("the statement ran past its timeout") from None
    except db_errors.MySQLError as exc:
        conn.discard = True
        pool.release(conn)
        raise _translate(exc) from None
    except BaseException:
        conn.discard = True
        pool.release(conn)
        raise
    return RowStream(
        pool,
        conn,
        cursor,
        header=header,
        max_rows=limits.max_rows,
        deadline=deadline,
        started=started,
        outcome=outcome,
    )
