"""A streamed statement as the caller sees it: NDJSON lines (or CSV / TSV) framed here, its outcome recorded.

The pipeline has authorized the statement, registered it in flight and
started it (``gateway.db.streaming.start``); ``Stream.chunks()`` yields::

    {"type": "header", "request_id": ..., "target": ..., "kind": ..., "grant": ..., "columns": [...]}
    [1, "pen", "1.50"]                       <- one JSON array per row
    {"type": "trailer", "row_count": N, "truncated": false, "duration_ms": ...}

or, when something fails after the header went out, a last line
``{"type": "error", "code": ..., "detail": ..., "row_count": N, ...}``. A
statement a revocation cancelled ends as ``revoked`` whatever MariaDB said.
``Stream.table()`` yields the same rows as CSV or TSV instead (no trailer:
a stream that stops early is cut, ``StreamBroken``). ``close()`` (the HTTP
layer calls it however the response ends) ends an unfinished stream at once
and records it as ``client_disconnected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.audit.recorder import Recorder, RequestContext
from gateway.audit.records import OutcomeRecord
from gateway.db.streaming import DISCONNECTED, RowStream, line
from gateway.db.tabular import TableEncoder
from gateway.errors import GatewayError
from gateway.revocation.inflight import Running, as_revoked

# Strong references to outcome tasks of abandoned streams (asyncio keeps only weak ones).
_PENDING: set[asyncio.Task[None]] = set()


def ids_of(ctx: RequestContext) -> dict[str, str]:
    """The reply's ids: the gateway's, and the caller's own when it sent a sane one."""
    if ctx.client_request_id is None:
        return {"request_id": ctx.request_id}
    return {"request_id": ctx.request_id, "client_request_id": ctx.client_request_id}


class StreamBroken(Exception):
    """A CSV / TSV stream ended before the result's end (``code``: the error's, or ``truncated``): cut the body."""

    def __init__(self, code: str, rows: int) -> None:
        super().__init__(f"{code} after {rows} rows")
        self.code = code
        self.rows = rows


class Stream:
    """One authorized, running, in-flight statement whose rows the caller reads as they come."""

    def __init__(  # noqa: PLR0917 - what the pipeline handed over, each part separate
        self,
        rows: RowStream,
        header: dict[str, Any],
        running: Running,
        tracking: contextlib.ExitStack,
        recorder: Recorder,
        outcome: OutcomeRecord,
        *,
        started: float,
    ) -> None:
        self._rows = rows
        self._header = header
        self._running = running
        self._tracking = tracking  # holds the in-flight registration until the stream ends
        self._recorder = recorder
        self._outcome = outcome
        self._started = started
        self._ended = False

    @property
    def rows(self) -> RowStream:
        """The database side of the stream (its connection, rows sent so far)."""
        return self._rows

    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield the header, the rows in batches, then the trailer or an error line."""
        yield line({"type": "header", **self._header, "columns": self._rows.columns})
        try:
            async for chunk in self._rows.lines():
                yield chunk
        except GatewayError as exc:
            error = as_revoked(exc, self._running)
            await self._end(code=error.code, error=error.detail, rows=self._rows.sent)
            yield line(
                {
                    "type": "error",
                    "code": error.code,
                    "status": error.status,
                    "title": error.title,
                    "detail": error.detail,
                    **{k: v for k, v in self._header.items() if k.endswith("request_id")},
                    "row_count": self._rows.sent,
                }
            )
            return
        ending = self._rows.ending
        if ending is None:  # the consumer stopped reading: close() records it
            return
        trailer: dict[str, Any] = {"type": "trailer", "row_count": self._rows.sent, "truncated": ending.truncated}
        if ending.rows_affected is None:
            await self._end(code="ok", rows=ending.rows, truncated=ending.truncated, streamed=True)
        else:  # a statement without a result set
            trailer.update(rows_affected=ending.rows_affected, last_insert_id=ending.last_insert_id)
            await self._end(code="ok", rows=ending.rows, streamed=True)
        yield line({**trailer, "duration_ms": elapsed_ms(self._started)})

    async def table(self, encoder: TableEncoder) -> AsyncIterator[bytes]:
        """Yield the rows as CSV or TSV (``encoder``): a header row, then the rows in batches.

        CSV and TSV have no trailer, so a stream that does not reach the
        result's end (an error, a revocation, a timeout, or the row cap) records
        its outcome and then raises ``StreamBroken``: the HTTP layer ends the
        body without its final chunk, which no client takes for a complete one.
        """
        names = [str(column["name"]) for column in self._rows.columns]
        head = encoder.header(names)
        if head:
            yield head
        try:
            async for chunk in self._rows.chunks(encoder.rows):
                yield chunk
        except GatewayError as exc:
            error = as_revoked(exc, self._running)
            await self._end(code=error.code, error=error.detail, rows=self._rows.sent)
            raise StreamBroken(error.code, self._rows.sent) from None
        ending = self._rows.ending
        if ending is None:  # the consumer stopped reading: close() records it
            return
        if ending.rows_affected is None:
            await self._end(code="ok", rows=ending.rows, truncated=ending.truncated, streamed=True)
        else:  # a statement without a result set: nothing to write
            await self._end(code="ok", rows=ending.rows, streamed=True)
        if ending.truncated:
            raise StreamBroken("truncated", self._rows.sent)

    def close(self) -> None:
        """End the stream now if it has not finished (the client went away); idempotent and synchronous."""
        if self._rows.close() and not self._ended:
            task = asyncio.get_running_loop().create_task(
                self._end(code=DISCONNECTED, error="the client disconnected mid-stream", rows=self._rows.sent),
                name="stream-outcome",
            )
            _PENDING.add(task)
            task.add_done_callback(_PENDING.discard)

    async def _end(self, **fields: Any) -> None:  # noqa: ANN401 - the outcome record's fields
        if self._ended:
            return
        self._ended = True
        self._tracking.close()  # no longer in flight
        if self._running.cancelled:
            fields["code"] = "revoked"
        record = dataclasses.replace(self._outcome, duration_ms=elapsed_ms(self._started), **fields)
        with contextlib.suppress(GatewayError):
            await self._recorder.outcome(record)


def elapsed_ms(started: float) -> float:
    """Milliseconds since ``started`` (``time.perf_counter``), as records carry them."""
    return round((time.perf_counter() - started) * 1000, 3)
