"""The HTTP side of streamed results: ``Accept`` negotiation and the streamed response (NDJSON, CSV, TSV)."""

from __future__ import annotations

import structlog
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.db.streaming import NDJSON
from gateway.db.tabular import CSV, TSV, TableEncoder
from gateway.errors import InvalidRequest
from gateway.pipeline import Stream, StreamBroken

log = structlog.get_logger("gateway.http.ndjson")

STREAMED = (NDJSON, CSV, TSV)
_CHARSET = {NDJSON: NDJSON, CSV: f"{CSV}; charset=utf-8", TSV: f"{TSV}; charset=utf-8"}


def streamed_media(request: Request) -> str | None:
    """The streamed format the caller's ``Accept`` names first (NDJSON, CSV or TSV), or None: a buffered reply.

    A CSV or TSV stream has no trailer: one cut short ends without the
    chunked encoding's last chunk. An HTTP/1.0 body has no chunks (the end of
    the connection ends it), so a cut could pass for the end: refused.
    """
    accept = request.headers.get("accept", "")
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in STREAMED:
            if media != NDJSON and request.scope.get("http_version") == "1.0":
                raise InvalidRequest(f"{media} streams need HTTP/1.1: over HTTP/1.0 a cut stream looks complete")
            return media
    return None


class NDJSONResponse(StreamingResponse):
    """Streams a pipeline ``Stream``; whatever way the response ends, the stream is closed at once.

    Starlette cancels the sending task when the client disconnects; the body
    generator may then stay suspended until garbage collection, so closing
    the stream here (synchronously) is what frees the connection promptly.
    With ``media`` CSV or TSV the rows go as a table (``Stream.table``); a
    stream that stops before the result's end is cut: the last chunk is never
    sent and the server closes the connection (``StreamBroken``).
    """

    def __init__(self, stream: Stream, media: str = NDJSON) -> None:
        body = stream.chunks() if media == NDJSON else stream.table(TableEncoder(media))
        super().__init__(body, media_type=_CHARSET[media], headers={"Cache-Control": "no-store"})
        self._stream = stream

    async def stream_response(self, send: Send) -> None:
        """Starlette's, except that a broken stream ends without the final (empty) body message."""
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except StreamBroken as broken:
            log.warning("stream_cut", code=broken.code, rows_sent=broken.rows)
            return  # the response stays incomplete: the server drops the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream; close it however sending ends (done, error, disconnect)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()
