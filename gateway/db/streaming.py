"""Stream one statement's rows as NDJSON from an unbuffered cursor, with back-pressure.

``start`` runs the statement on a connection held from the decision's pool,
with the same ``SET STATEMENT ... FOR`` limits as a buffered query, and reads
the result-set header; errors up to there are ordinary gateway errors (and so
ordinary problem+json replies). ``RowStream.lines()`` then yields the rows;
the pipeline frames them (``gateway/pipeline/stream.py``) as NDJSON::

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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from asyncmy import errors as db_errors
from asyncmy.cursors import SSCursor

from gateway.db import execution
from gateway.db.encoding import TYPE_NAMES, JSONValue, dump_row_line, dump_rows
from gateway.db.pools import ConnectionPool, Pooled
from gateway.errors import InvalidRequest, StatementTimeout
from gateway.sql.statements import Statement

log = structlog.get_logger("gateway.db.streaming")

NDJSON = "application/x-ndjson"
FIRST_BATCH = 256  # rows in the first fetch: the first bytes reach the client early
MAX_BATCH = 2000  # rows per fetch at most
CHUNK_BYTES = 256 * 1024  # aim for chunks around this size (wide rows shrink the batch)
RECEIVE_BUFFER = 256 * 1024  # bytes of kernel receive buffer on a streaming connection
KILL_TIMEOUT = 5.0  # seconds for the side connection that stops an abandoned statement
DISCONNECTED = "client_disconnected"

# Strong references to clean-up tasks started when a client goes away (asyncio
# keeps only weak ones); each removes itself when done.
_CLEANUPS: set[asyncio.Task[None]] = set()


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


def line(value: object) -> bytes:
    """One NDJSON line."""
    return orjson.dumps(value) + b"\n"


@dataclass(frozen=True, slots=True)
class Ending:
    """How a stream that ran to its end ended."""

    rows: int  # rows sent, or rows affected by a statement without a result set
    truncated: bool
    rows_affected: int | None = None  # a statement without a result set
    last_insert_id: int | None = None


class RowStream:
    """One running statement whose rows are read as the consumer takes them.

    ``lines()`` yields the rows as NDJSON lines, in batches, and then sets
    ``ending``; a failure after the first row is raised from it (the
    connection is discarded first). ``close()`` ends it early.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        conn: Pooled,
        cursor: Any,  # noqa: ANN401 - asyncmy is untyped
        *,
        max_rows: int,
        deadline: float,
    ) -> None:
        self._pool = pool
        self._conn = conn
        self._cursor = cursor
        self._max_rows = max_rows
        self._deadline = deadline
        self._thread_id = conn.thread_id
        self._gate = _ReadGate(conn.raw)
        self._gate.pause()
        self._done = False
        self.sent = 0  # rows whose chunk the consumer has taken
        self.ending: Ending | None = None
        description = cursor.description
        self.columns = [{"name": d[0], "type": TYPE_NAMES.get(d[1], str(d[1]))} for d in description or ()]
        self._has_rows = description is not None

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

    def lines(self) -> AsyncIterator[bytes]:
        """Yield the rows in batches of NDJSON lines; then ``ending`` says how it ended."""
        return self.chunks(ndjson_lines)

    async def chunks(self, encode: Callable[[Sequence[Any]], bytes]) -> AsyncIterator[bytes]:
        """Yield the rows in batches, each encoded by ``encode``; then ``ending`` says how it ended."""
        if not self._has_rows:
            affected, last_id = max(self._cursor.rowcount, 0), self._cursor.lastrowid or None
            await self._close_cursor(truncated=False)
            self.ending = Ending(affected, truncated=False, rows_affected=affected, last_insert_id=last_id)
            return
        truncated = False
        batch = FIRST_BATCH
        while True:
            rows = await self._fetch(batch)
            if not rows:
                break
            room = self._max_rows - self.sent
            if len(rows) > room:
                rows, truncated = rows[:room], True
            chunk = encode(rows)
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
        self.ending = Ending(self.sent, truncated=truncated)

    async def _fetch(self, batch: int) -> Sequence[Any]:
        self._gate.resume()
        try:
            async with asyncio.timeout_at(self._deadline):
                rows = await self._cursor.fetchmany(batch)
        except TimeoutError:
            self._release(discard=True)
            raise StatementTimeout("the statement ran past its timeout") from None
        except db_errors.MySQLError as exc:
            self._release(discard=True)
            raise execution.classify(exc) from None
        self._gate.pause()
        return rows  # type: ignore[no-any-return]  # asyncmy is untyped

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

    def close(self) -> bool:
        """End the stream now if it has not finished; say whether it had not (the consumer went away).

        Synchronous on purpose: it runs even inside a cancelled task. The pool
        slot is freed here; the statement is stopped in MariaDB by a background
        task (``KILL QUERY`` over a side connection of the same account).
        """
        if self._done:
            return False
        self._release(discard=True)
        log.info("stream_abandoned", rows_sent=self.sent, thread_id=self._thread_id)
        task = asyncio.get_running_loop().create_task(self._kill(), name="stream-kill")
        _CLEANUPS.add(task)
        task.add_done_callback(_CLEANUPS.discard)
        return True

    async def _kill(self) -> None:
        try:
            async with asyncio.timeout(KILL_TIMEOUT):
                # False when it could not connect or the statement had already ended (both logged there).
                await self._pool.kill(self._thread_id, connection=False)
        except TimeoutError:
            log.warning("stream_kill_failed", error="TimeoutError")


def ndjson_lines(rows: Sequence[Any]) -> bytes:
    """The rows as NDJSON lines: one ``orjson.dumps`` of the batch, split between rows, when that is exact.

    A batch is an array of arrays of scalars, so ``],[`` occurs once between
    each two rows and elsewhere only inside a string value: when it occurs
    exactly ``len(rows) - 1`` times, each occurrence is a row boundary and
    becomes a newline. Otherwise (a value contains ``],[``) row by row. One
    call for the batch instead of one per row: ~50x less time encoding.
    """
    body = dump_rows(rows)
    if body.count(b"],[") == len(rows) - 1:
        return body[1:-1].replace(b"],[", b"]\n[") + b"\n"
    return b"".join([dump_row_line(raw) for raw in rows])


def _next_batch(batch: int, rows: int, size: int) -> int:
    if rows < batch or size == 0:
        return batch
    per_row = size / rows
    return max(1, min(MAX_BATCH, int(CHUNK_BYTES / per_row)))


async def start(  # noqa: PLR0917 - the statement and everything it runs with
    pool: ConnectionPool,
    conn: Pooled,
    statement: Statement,
    params: Sequence[JSONValue],
    limits: execution.Limits,
    comment: str,
) -> RowStream:
    """Run ``statement`` on ``conn`` (held from ``pool``) and return the stream of its rows.

    Errors before the first row (binding, MariaDB refusing the statement, the
    timeout) are raised, and the connection goes back to the pool.
    """
    deadline = asyncio.get_running_loop().time() + limits.timeout + execution.TIMEOUT_GRACE
    try:
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
        raise execution.classify(exc) from None
    except BaseException:
        conn.discard = True
        pool.release(conn)
        raise
    return RowStream(pool, conn, cursor, max_rows=limits.max_rows, deadline=deadline)
