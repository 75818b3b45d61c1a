"""The HTTP side of streamed results: ``Accept`` negotiation and the NDJSON response."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.db.streaming import NDJSON
from gateway.pipeline import Stream


def wants_ndjson(request: Request) -> bool:
    """True when the caller's ``Accept`` names ``application/x-ndjson``."""
    accept = request.headers.get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == NDJSON for part in accept.split(","))


class NDJSONResponse(StreamingResponse):
    """Streams a pipeline ``Stream``; whatever way the response ends, the stream is closed at once.

    Starlette cancels the sending task when the client disconnects; the body
    generator may then stay suspended until garbage collection, so closing
    the stream here (synchronously) is what frees the connection promptly.
    """

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream.chunks(), media_type=NDJSON, headers={"Cache-Control": "no-store"})
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the stream; close it however sending ends (done, error, disconnect)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stream.close()
