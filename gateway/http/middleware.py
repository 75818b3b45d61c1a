"""Pure ASGI middleware: request id, header and body size caps, access metrics.

Pure ASGI rather than ``BaseHTTPMiddleware``: no extra task per request and
streaming bodies pass through untouched.

Every request gets the gateway's own id (``gateway/requestids.py``); a sane
``X-Request-ID`` from the caller is kept as ``client_request_id`` beside it.
Headers over ``max_headers`` bytes in all are refused with 431, a body over
``max_body`` with 413 (by its ``Content-Length``, or once the bytes read pass
the cap). Both refusals are recorded through ``on_refused`` before they are
answered, like a 401 (SECURITY rules 21 and 29); if that record cannot be
written the answer is 503 ``audit_unavailable``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import AuditUnavailable, GatewayError, HeadersTooLarge, PayloadTooLarge
from gateway.http.metrics import Metrics
from gateway.http.problems import problem
from gateway.requestids import RequestIds, client_request_id
from gateway.tracing import Tracing

# Durably records a request refused here (the scope names it); raises AuditUnavailable if it cannot.
Refused = Callable[[Scope, GatewayError], Awaitable[None]]


class GatewayMiddleware:
    """Sets ``X-Request-ID``, caps headers and body, binds log context, counts requests."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        metrics: Metrics,
        max_headers: int = 32 * 1024,
        tracing: Tracing | None = None,
        ids: RequestIds | None = None,
        on_refused: Refused | None = None,
    ) -> None:
        self.app = app
        self.tracing = tracing or Tracing()
        self.max_body = max_body
        self.max_headers = max_headers
        self.metrics = metrics
        self.ids = ids or RequestIds()
        self.on_refused = on_refused
        # ``.labels()`` takes a lock and builds a key on every call; the children
        # it returns are fixed per label values, so look each up once.
        self._counted: dict[tuple[str, int], Any] = {}
        self._timed: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = self.ids.new()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        offered = client_request_id(headers.get(b"x-request-id", b"").decode("latin-1"))
        if offered is not None:
            state["client_request_id"] = offered
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
                refusal = self._oversized(scope["headers"], headers.get(b"content-length"))
                if refusal is not None:
                    await self._refuse(scope, receive, send_with_id, refusal)
                    return
                await self.app(scope, self._capped(scope, receive), send_with_id)
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

    def _oversized(self, raw: list[tuple[bytes, bytes]], length: bytes | None) -> GatewayError | None:
        """The refusal for headers or a declared body over their caps, if any."""
        if sum(len(name) + len(value) for name, value in raw) > self.max_headers:
            return HeadersTooLarge(f"the request headers are over the {self.max_headers}-byte cap")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return PayloadTooLarge(f"the request body is over the {self.max_body}-byte cap")
        return None

    def _capped(self, scope: Scope, receive: Receive) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    refusal = PayloadTooLarge(f"the request body is over the {self.max_body}-byte cap")
                    # Recorded before it is answered (AuditUnavailable instead if it cannot be);
                    # raised inside the app, so the app's handler renders the 413.
                    await self._record(scope, refusal)
                    raise refusal
            return message

        return capped

    async def _record(self, scope: Scope, refusal: GatewayError) -> None:
        if self.on_refused is not None:
            await self.on_refused(scope, refusal)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: GatewayError) -> None:
        """Record ``refusal``, then answer it as problem+json (503 if the record could not be written)."""
        try:
            await self._record(scope, refusal)
        except AuditUnavailable as exc:
            refusal = exc
        state = scope["state"]
        response = problem(state["request_id"], refusal, state.get("client_request_id"))
        await response(scope, receive, send)


def _route_of(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
