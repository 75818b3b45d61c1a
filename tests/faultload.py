"""Bounded load for the fault tests: loops of ``httpx.AsyncClient`` requests on loopback.

``drive`` runs ``clients`` concurrent loops against a gateway, each sending
jobs from ``pick`` until a duration, a per-client count or a stop event ends
it. Every request carries its own ``X-Request-ID`` (so the audit log can be
checked against the replies) and a hard timeout; a request that hits the
timeout is recorded as ``hang``. Each reply is checked for shape: a 200 is
the statement's JSON, every error is ``application/problem+json`` with its
``code``, ``status`` and ``request_id``, and every 503 has ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUEST_TIMEOUT = 30.0  # no request may take longer: past it, the request is a hang
MAX_DRIVE = 900.0  # seconds, whatever the arguments
# The gateway's own unavailability answers; any other 5xx (a 500) is a bug.
WELL_FORMED_5XX = frozenset({httpx.codes.SERVICE_UNAVAILABLE, httpx.codes.GATEWAY_TIMEOUT})


@dataclass(frozen=True)
class Job:
    """One request to send: what it is (read/write/denied), whose token, which route and body."""

    name: str
    token: str | None
    body: dict[str, Any]
    path: str = "/v1/query"


@dataclass
class Reply:
    """What came back for one request (``status`` None: no HTTP answer at all)."""

    request_id: str  # the caller's own (sent as X-Request-ID; the records carry it as client_request_id)
    job: str
    started: float
    ended: float
    status: int | None = None
    code: str | None = None
    detail: str | None = None
    error: str | None = None  # transport error class name
    problems: list[str] = field(default_factory=list)  # ways the reply is not well formed

    @property
    def label(self) -> str:
        """``200 ok``, ``503 database_unavailable``, ``transport ConnectError``, ``hang``."""
        if self.error is not None:
            return "hang" if self.error.endswith("Timeout") else f"transport {self.error}"
        return f"{self.status} {self.code}"

    @property
    def seconds(self) -> float:
        """How long the request took."""
        return self.ended - self.started


def check_reply(reply: Reply, response: httpx.Response) -> None:
    """Fill ``status``/``code``/``detail`` and list every way the reply is not well formed."""
    reply.status = response.status_code
    gateway_id = response.headers.get("x-request-id")
    if not gateway_id or gateway_id == reply.request_id:
        reply.problems.append("X-Request-ID is not the gateway's own")
    try:
        body = response.json()
    except ValueError:
        reply.problems.append("body is not JSON")
        reply.code = "not-json"
        return
    if (body.get("request_id"), body.get("client_request_id")) != (gateway_id, reply.request_id):
        reply.problems.append("reply without its request_id and client_request_id")
    if response.status_code == httpx.codes.OK:
        reply.code = "ok"
        return
    reply.code = str(body.get("code"))
    reply.detail = body.get("detail")
    reply.problems += _problem_shape(response, body)


def _problem_shape(response: httpx.Response, body: dict[str, Any]) -> list[str]:
    """How an error reply differs from problem+json with the gateway's headers."""
    status, headers = response.status_code, response.headers
    problems = []
    if not headers.get("content-type", "").startswith("application/problem+json"):
        problems.append("error is not application/problem+json")
    missing = [k for k in ("type", "title", "status", "detail", "code", "request_id") if k not in body]
    if missing:
        problems.append(f"problem without {missing}")
    if body.get("status") != status:
        problems.append("problem status differs from HTTP status")
    if status >= httpx.codes.INTERNAL_SERVER_ERROR and status not in WELL_FORMED_5XX:
        problems.append(f"HTTP {status}")
    if status == httpx.codes.SERVICE_UNAVAILABLE and "retry-after" not in headers:
        problems.append("503 without Retry-After")
    if status == httpx.codes.UNAUTHORIZED and "www-authenticate" not in headers:
        problems.append("401 without WWW-Authenticate")
    return problems


async def send(client: httpx.AsyncClient, job: Job, request_id: str) -> Reply:
    """Send one job; never raises (a transport error or a timeout is recorded in the reply)."""
    headers = {"X-Request-ID": request_id}
    if job.token is not None:
        headers["Authorization"] = f"Bearer {job.token}"
    reply = Reply(request_id, job.name, time.monotonic(), 0.0)
    try:
        response = await client.post(job.path, json=job.body, headers=headers)
    except httpx.HTTPError as exc:
        reply.error = type(exc).__name__
    else:
        check_reply(reply, response)
    reply.ended = time.monotonic()
    return reply


async def drive(
    url: str,
    pick: Callable[[int, str], Job],
    *,
    clients: int,
    prefix: str,
    duration: float | None = None,
    per_client: int | None = None,
    stop: asyncio.Event | None = None,
    pause: float = 0.0,
    request_timeout: float = REQUEST_TIMEOUT,
    replies: list[Reply] | None = None,
) -> list[Reply]:
    """Run ``clients`` loops until ``duration`` seconds pass, ``per_client`` requests each, or ``stop`` is set.

    ``replies``: a list to append each reply to as it comes (a scenario watches it to time its faults).
    """
    if duration is None and per_client is None and stop is None:
        raise ValueError("drive needs a duration, a count or a stop event")
    counter = itertools.count()
    replies = [] if replies is None else replies
    deadline = time.monotonic() + duration if duration is not None else None
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def loop() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=request_timeout, limits=limits) as client:
            for sent in itertools.count():
                if per_client is not None and sent >= per_client:
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if stop is not None and stop.is_set():
                    return
                n = next(counter)
                request_id = f"{prefix}-{n:07d}"
                replies.append(await send(client, pick(n, request_id), request_id))
                if pause:
                    await asyncio.sleep(pause)

    # The outer bound: even if requests hung to their own timeout, drive ends.
    bounds = [MAX_DRIVE]
    if duration is not None:
        bounds.append(duration + 2 * request_timeout)
    if per_client is not None:
        bounds.append(per_client * (request_timeout + pause) + request_timeout)
    bound = min(bounds)
    async with asyncio.timeout(bound):
        await asyncio.gather(*(loop() for _ in range(clients)))
    return replies


POLL = 0.02  # seconds between looks at a condition


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Wait until ``condition()`` holds; ``AssertionError`` naming ``what`` if it does not within ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(POLL)


def count(replies: Sequence[Reply], code: str, *, since: float = 0.0, until: float = float("inf")) -> int:
    """How many of ``replies`` answered ``code`` for a request started at ``since`` or later, ended by ``until``."""
    return sum(1 for r in list(replies) if r.code == code and r.started >= since and r.ended <= until)


READ_SQL = "SELECT id, name, price FROM items WHERE id = ?"
WRITE_SQL = (
    "INSERT INTO orders (customer_id, item_id, quantity, ordered_at, note) VALUES (1, 1, 1, '2024-01-01 00:00:00', ?)"
)
DENIED_SQL = "SELECT card_number FROM payment_cards"  # the analysts' grant denies shop.payment_*


def mixed(tokens: dict[str, str], *, writes: int = 3, denied: int = 1, of: int = 10) -> Callable[[int, str], Job]:
    """Jobs in a fixed rotation of ``of``: ``writes`` INSERTs, ``denied`` denied reads, point reads.

    Each INSERT's note is its request id, so the table can be checked against
    the replies. ``tokens`` holds the ``reader`` and ``writer`` tokens.
    """

    def pick(n: int, request_id: str) -> Job:
        slot = n % of
        if slot < writes:
            return Job("write", tokens["writer"], {"target": "shop", "sql": WRITE_SQL, "params": [request_id]})
        if slot < writes + denied:
            return Job("denied", tokens["reader"], {"target": "shop", "sql": DENIED_SQL})
        return Job("read", tokens["reader"], {"target": "shop", "sql": READ_SQL, "params": [n % 1000 + 1]})

    return pick


def tally(replies: Sequence[Reply]) -> dict[str, int]:
    """Replies by label (``200 ok``, ``503 pool_exhausted``, ...), most frequent first."""
    return dict(Counter(r.label for r in replies).most_common())


def malformed(replies: Sequence[Reply]) -> list[str]:
    """One line per reply that is not well formed (empty when all are)."""
    return [f"{r.request_id} {r.label}: {'; '.join(r.problems)}" for r in replies if r.problems]
