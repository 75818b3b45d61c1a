"""The engineer's HTTP client for a running gateway (used by ``gateway query``, ``shell``, ...).

Every non-2xx reply is turned into ``ProblemError`` carrying the problem+json
``code``, ``detail``, ``status`` and ``request_id`` (what an admin needs to
find the audit record). Streamed queries yield the NDJSON lines as parsed
objects: a header dict, row lists, then a trailer (or error) dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx
import orjson

NDJSON = "application/x-ndjson"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 330.0  # beyond the gateway's longest statement timeout


class ProblemError(Exception):
    """The gateway (or the network) refused the request."""

    def __init__(self, status: int, code: str, detail: str, request_id: str | None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id

    @classmethod
    def from_reply(cls, reply: httpx.Response, body: bytes | None = None) -> ProblemError:
        """Build from an error reply; a non-problem body still yields a readable error."""
        raw = reply.content if body is None else body
        request_id = reply.headers.get("x-request-id")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "code" in data:
            return cls(
                int(data.get("status", reply.status_code)),
                str(data["code"]),
                str(data.get("detail", "")),
                str(data.get("request_id") or request_id or "") or None,
            )
        text = raw[:200].decode("utf-8", "replace").strip()
        return cls(reply.status_code, f"http_{reply.status_code}", text or reply.reason_phrase, request_id)


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """One statement to run on a target."""

    target: str
    sql: str
    params: Sequence[Any] = ()
    max_rows: int | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /v1/query``."""
        data: dict[str, Any] = {"target": self.target, "sql": self.sql, "params": list(self.params)}
        if self.max_rows is not None:
            data["max_rows"] = self.max_rows
        return data


class GatewayClient:
    """A small synchronous client of the gateway's HTTP API."""

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": "db-gateway-cli"},
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # noqa: ANN401 - JSON
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProblemError(0, "gateway_unreachable", str(exc) or type(exc).__name__, None) from None
        if reply.is_error:
            raise ProblemError.from_reply(reply)
        return orjson.loads(reply.content)

    def me(self) -> dict[str, Any]:
        """``GET /v1/me``."""
        return dict(self._json("GET", "/v1/me"))

    def targets(self) -> list[dict[str, Any]]:
        """``GET /v1/targets``."""
        return list(self._json("GET", "/v1/targets")["targets"])

    def query(self, request: QueryRequest) -> dict[str, Any]:
        """Run a statement; the whole result in one reply."""
        return dict(self._json("POST", "/v1/query", json=request.body()))

    def stream(self, request: QueryRequest) -> Iterator[Any]:
        """Run a statement and yield its NDJSON lines, parsed, as they arrive."""
        try:
            with self._http.stream("POST", "/v1/query", json=request.body(), headers={"Accept": NDJSON}) as reply:
                if reply.is_error:
                    raise ProblemError.from_reply(reply, reply.read())
                for line in reply.iter_lines():
                    if line:
                        yield orjson.loads(line)
        except httpx.HTTPError as exc:
            raise ProblemError(0, "gateway_unreachable", str(exc) or type(exc).__name__, None) from None
