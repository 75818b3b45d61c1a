"""A statement's streamed result, read for a page or a CSV download: header, rows, then the ending.

The console runs statements exactly as ``POST /v1/query`` with ``Accept:
application/x-ndjson`` does (``Pipeline.open_stream``: the same analysis,
decision, audit records, row caps, revocation and clean-up), and reads the
pipeline's own NDJSON frames back here, so a result page and a CSV download
hold one batch of rows at a time whatever the result's size. The page and the
download close the stream however they end (a browser that goes away stops
the statement, as for the API).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.csvcells import safe_cell
from gateway.pipeline import Stream


class StreamResult:
    """Rows of a pipeline ``Stream`` as Python values; ``ending`` holds the trailer or error line at the end."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.header: dict[str, Any] = {}
        self.ending: dict[str, Any] = {}
        self._lines = self._split(stream.chunks())

    @staticmethod
    async def _split(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        rest = b""
        async for chunk in chunks:
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                if line:
                    yield line
        if rest:
            yield rest

    async def open(self) -> None:
        """Read the header line (columns, kind, grant)."""
        first = await anext(self._lines)
        self.header = orjson.loads(first)

    @property
    def columns(self) -> list[str]:
        """The result's column names."""
        return [str(column.get("name")) for column in self.header.get("columns", [])]

    async def rows(self) -> AsyncIterator[list[Any]]:
        """Each row as a list of JSON values; afterwards ``ending`` is the trailer or the error line."""
        async for line in self._lines:
            if line.startswith(b"["):
                yield orjson.loads(line)
            else:
                self.ending = orjson.loads(line)

    def close(self) -> None:
        """End the stream now if it has not finished (idempotent)."""
        self.stream.close()


def cell_text(value: object) -> str:
    """A value as the result table and CSV show it: text as is, NULL empty, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


async def csv_chunks(result: StreamResult) -> AsyncIterator[str]:
    """The result as CSV, every cell formula-safe; an error after the header aborts the download."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([safe_cell(c) for c in result.columns])
    count = 0
    async for row in result.rows():
        writer.writerow([safe_cell(cell_text(v)) for v in row])
        count += 1
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if result.ending.get("type") == "error":
        # A CSV cannot say "this is not all of it": end the download broken, never as if complete.
        raise ResultCut(str(result.ending.get("code")))
    yield buffer.getvalue()


class ResultCut(Exception):
    """The statement failed after the first rows went out."""


class ClosingStream(StreamingResponse):
    """A streamed page or download that closes its statement's stream however sending ends."""

    def __init__(self, body: AsyncIterator[str], result: StreamResult, **kwargs: Any) -> None:  # noqa: ANN401 - StreamingResponse's own
        super().__init__(body, **kwargs)
        self._result = result

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send; close the stream whatever happens."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._result.close()
