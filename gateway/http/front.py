"""The ASGI entry point: every request's front door, and the statement routes served directly.

Every HTTP request first passes :class:`~gateway.http.middleware.GatewayMiddleware`
(request id, body cap, log context, metrics). ``POST /v1/query`` and ``POST
/v1/transaction``, the requests that carry the load, are then served here on
the endpoint functions of :mod:`gateway.http.api`, without FastAPI's and
Starlette's middleware, router and dependency machinery, which took about a
third of the event loop's time per statement in the profile
(docs/benchmarks.md). They take a bearer token and a JSON body and nothing
FastAPI would have to fill in, so the steps and their order are those of the
routes FastAPI declares for them: the token first (a 401 is audited whatever
the body), then the body; errors become problem+json as the app's handlers
make them. FastAPI still declares those routes (OpenAPI schema, docs) and
serves every other request, and these two as well while the app has
dependency overrides (tests).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError
from gateway.http.problems import internal_error, problem

Endpoint = Callable[[Request], Awaitable[Response]]


class GatewayApp(FastAPI):
    """FastAPI with the gateway's front (see the module docstring) ahead of its own stack."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the call to the front once it is installed; until then, FastAPI's stack."""
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    def stack(self) -> ASGIApp:
        """FastAPI's own stack (middleware, router, handlers), for the front to fall back to."""
        return functools.partial(FastAPI.__call__, self)


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """A path the front serves itself, and its endpoint."""

    path: str
    endpoint: Endpoint


class StatementEndpoints:
    """Serves ``POST`` on the given paths with their endpoints; anything else goes to ``fallback``."""

    def __init__(self, app: FastAPI, endpoints: Mapping[str, Endpoint], fallback: ASGIApp) -> None:
        self.app = app
        self.fallback = fallback
        self._routes = {path: DirectRoute(path, endpoint) for path, endpoint in endpoints.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI call."""
        route = self._routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or self.app.dependency_overrides:
            await self.fallback(scope, receive, send)
            return
        scope["app"] = self.app
        scope["route"] = route  # metrics name the route by its path, as for FastAPI's routes
        state = scope.get("state", {})
        request_id, client_request_id = str(state.get("request_id", "-")), state.get("client_request_id")
        try:
            response = await route.endpoint(Request(scope, receive))
        except GatewayError as exc:
            response = problem(request_id, exc, client_request_id)
        except Exception as exc:  # noqa: BLE001 - any other failure is a logged 500, as the app's handler does
            response = internal_error(request_id, exc, client_request_id)
        # Outside the try, as in Starlette: once the reply has started, an error can only end the connection.
        await response(scope, receive, send)
