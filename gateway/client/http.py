"""The one HTTP client of a running gateway, used by every client command (query, shell, admin, ...).

Every non-2xx reply is turned into ``ProblemError`` carrying the problem+json
``code``, ``detail``, ``status`` and ``request_id`` (what an admin needs to
find the audit record); a 401 also says where the refused token came from.
Streamed queries yield the NDJSON lines as parsed objects: a header dict, row
lists, then a trailer (or error) dict; CSV and TSV results come as bytes. Policy edits send the current revision
as ``If-Match`` and retry when another edit lands in between.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import httpx
import orjson

from gateway.client.errors import ProblemError

NDJSON = "application/x-ndjson"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 330.0  # beyond the gateway's longest statement timeout
EDIT_ATTEMPTS = 3
PRECONDITION_FAILED = 412
ACCEPTED = 202


class HeldForReview(Exception):
    """The gateway held the statement for review (202): ``reply`` has the review and its dry run; nothing ran."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(f"held for review {reply.get('review', {}).get('id')}")
        self.reply = reply


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """One statement to run on a target."""

    target: str
    sql: str
    params: Sequence[Any] = ()
    max_rows: int | None = None
    reason: str | None = None  # shown to reviewers if the statement is held for review

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /v1/query``."""
        data: dict[str, Any] = {"target": self.target, "sql": self.sql, "params": list(self.params)}
        if self.max_rows is not None:
            data["max_rows"] = self.max_rows
        if self.reason is not None:
            data["reason"] = self.reason
        return data


class GatewayClient:
    """A small synchronous client of the gateway's HTTP API.

    ``token_source`` names where the token came from (``--token``,
    ``GATEWAY_TOKEN``, the login cache); it is shown when the gateway refuses it.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        token_source: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._token_source = token_source
        self._http = httpx.Client(
            base_url=self.url,
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

    def _problem(self, reply: httpx.Response, body: bytes | None = None) -> ProblemError:
        problem = ProblemError.from_reply(reply, body)
        if reply.status_code == httpx.codes.UNAUTHORIZED and self._token_source:
            problem.hint = f"the token came from {self._token_source}"
        return problem

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # noqa: ANN401 - httpx's options
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ProblemError.unreachable(self.url, exc) from None

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 - httpx's options
        """One request whose reply is a JSON object; an error reply raises ``ProblemError``."""
        reply = self._send(method, path, **kwargs)
        if reply.is_error:
            raise self._problem(reply)
        return dict(orjson.loads(reply.content))

    def edit(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 - httpx's options
        """A policy edit: ``If-Match`` the current revision, fetched again if another edit won the race."""
        for _ in range(EDIT_ATTEMPTS):
            policy = self._send("GET", "/v1/policy")
            if policy.is_error:
                raise self._problem(policy)
            reply = self._send(method, path, headers={"If-Match": policy.headers["etag"]}, **kwargs)
            if reply.status_code != PRECONDITION_FAILED:
                break
        if reply.is_error:
            raise self._problem(reply)
        return dict(orjson.loads(reply.content))

    def me(self) -> dict[str, Any]:
        """``GET /v1/me``."""
        return self.call("GET", "/v1/me")

    def targets(self) -> list[dict[str, Any]]:
        """``GET /v1/targets``."""
        return list(self.call("GET", "/v1/targets")["targets"])

    def query(self, request: QueryRequest) -> dict[str, Any]:
        """Run a statement; the whole result in one reply."""
        return self.call("POST", "/v1/query", json=request.body())

    def stream(self, request: QueryRequest) -> Iterator[Any]:
        """Run a statement and yield its NDJSON lines, parsed, as they arrive; ``HeldForReview`` on a 202."""
        try:
            with self._http.stream("POST", "/v1/query", json=request.body(), headers={"Accept": NDJSON}) as reply:
                if reply.is_error:
                    raise self._problem(reply, reply.read())
                if reply.status_code == ACCEPTED:
                    raise HeldForReview(dict(orjson.loads(reply.read())))
                for line in reply.iter_lines():
                    if line:
                        yield orjson.loads(line)
        except httpx.HTTPError as exc:
            raise ProblemError.unreachable(self.url, exc) from None

    def stream_table(self, request: QueryRequest, media: str) -> Iterator[bytes]:
        """Run a statement and yield its CSV or TSV body (``media``) as it arrives; ``HeldForReview`` on a 202.

        The gateway cuts a CSV / TSV stream that stops before the result's end
        (an error, a revocation, a timeout, the row cap): the body then lacks
        its last chunk, and this raises ``ProblemError`` (``stream_cut``) after
        the bytes already yielded.
        """
        try:
            with self._http.stream("POST", "/v1/query", json=request.body(), headers={"Accept": media}) as reply:
                if reply.is_error:
                    raise self._problem(reply, reply.read())
                if reply.status_code == ACCEPTED:
                    raise HeldForReview(dict(orjson.loads(reply.read())))
                request_id = reply.headers.get("x-request-id")
                try:
                    yield from reply.iter_bytes()
                except httpx.RemoteProtocolError:
                    raise ProblemError(0, "stream_cut", _CUT, request_id) from None
        except httpx.HTTPError as exc:
            raise ProblemError.unreachable(self.url, exc) from None


_CUT = (
    "the gateway cut the result before its end (an error, a revocation, a timeout or the row cap); "
    "what was written is incomplete, and the request's audit record says why"
)
