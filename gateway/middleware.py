"""Pure ASGI middleware: request id, body size cap, access metrics.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request and
streaming bodies pass through untouched.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PayloadTooLarge
from gateway.metrics import Metrics
from gateway.tracing import Tracing

_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")


def _problem_413(request_id: str, cap: int) -> bytes:
    return orjson.dumps(
        {
            "type": "https://db-gateway.dev/problems/payload_too_large",
            "title": "Payload too large",
            "status": 413,
            "detail": f"the request body is over the {cap}-byte cap",
            "code": "payload_too_large",
            "request_id": request_id,
        }
    )


class GatewayMiddleware:
    """Sets ``X-Request-ID``, caps the body, binds log context, counts requests."""

    def __init__(self, app: ASGIApp, *, max_body: int, metrics: Metrics, tracing: Tracing | None = None) -> None:
        self.app = app
        self.tracing = tracing or Tracing()
        self.max_body = max_body
        self.metrics = metrics
        # A random prefix per process plus a counter: unique across replicas and restarts
        # without a getrandom() call (and a GIL release) per request.
        self._id_prefix = secrets.token_hex(8)
        self._id_counter = itertools.count(1)
        # ``.labels()`` takes a lock and builds a key on every call; the children
        # it returns are fixed per label values, so look each up once.
        self._counted: dict[tuple[str, int], Any] = {}
        self._timed: dict[str, Any] = {}

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        offered = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _SANE_ID.match(offered) else self._new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = {"code": 500}
        id_header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        with self.tracing.request(scope["method"], headers, request_id) as span:
            try:
                length = headers.get(b"content-length")
                if length is not None and (not length.isdigit() or int(length) > self.max_body):
                    await self._too_large(request_id, send_with_id)
                    return
                await self.app(scope, self._capped(receive), send_with_id)
            finally:
                route = _route_of(scope)
                self._count(route, status["code"])
                self._time(route, time.perf_counter() - started)
                structlog.contextvars.unbind_contextvars("request_id")
                if span is not None:  # tracing on: name the span by its route, not the raw path
                    span.update_name(f"{scope['method']} {route}")
                    span.set_attributes({"http.route": route, "http.response.status_code": status["code"]})

    def _count(self, route: str, code: int) -> None:
        counter = self._counted.get((route, code))
        if counter is None:
            counter = self._counted[(route, code)] = self.metrics.requests.labels(route, str(code))
        counter.inc()

    def _time(self, route: str, seconds: float) -> None:
        histogram = self._timed.get(route)
        if histogram is None:
            histogram = self._timed[route] = self.metrics.latency.labels(route)
        histogram.observe(seconds)

    def _capped(self, receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    # Raised inside the app, so the app's handler renders the 413.
                    raise PayloadTooLarge(f"the request body is over the {self.max_body}-byte cap")
            return message

        return capped

    async def _too_large(self, request_id: str, send: Send) -> None:
        body = _problem_413(request_id, self.max_body)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
