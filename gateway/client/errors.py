"""The client's one error tree; every ``gateway`` client command fails with one of these.

::

    ClientError            a message and an exit status; ``text()`` is what the user reads
    ├── UsageError         exit 2: a local problem (no URL, no token, an unsafe token cache)
    ├── LoginError         exit 1: the IdP refused or could not be reached
    └── ProblemError       exit 1: the gateway refused (problem+json) or could not be reached

``gateway.cli.main`` prints ``text()`` on stderr and exits with ``exit_code``,
for every command alike; the shell prints the same text and carries on.
"""

from __future__ import annotations

import httpx
import orjson

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class ClientError(Exception):
    """A client command failed; the message is ready to print."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def text(self) -> str:
        """What the user reads on stderr."""
        return f"error: {self.message}"


class UsageError(ClientError):
    """A local problem the user can fix before asking the gateway anything."""

    exit_code = EXIT_USAGE


class LoginError(ClientError):
    """The login could not be completed (denied, expired, IdP unreachable or misconfigured)."""


class ProblemError(ClientError):
    """The gateway (or the network on the way to it) refused the request.

    ``status`` is 0 when no HTTP reply came back. ``hint`` is a line added for
    the user, such as where the refused token came from.
    """

    def __init__(self, status: int, code: str, detail: str, request_id: str | None, *, hint: str | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.hint = hint

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

    @classmethod
    def unreachable(cls, url: str, exc: Exception) -> ProblemError:
        """No reply at all: refused connection, timeout, TLS failure."""
        return cls(
            0, "gateway_unreachable", f"cannot reach the gateway at {url}: {str(exc) or type(exc).__name__}", None
        )

    def text(self) -> str:
        """Code, status, detail, and the request id to quote to an admin (it finds the audit record)."""
        status = f" ({self.status})" if self.status else ""
        lines = [f"error: {self.code}{status}: {self.detail}"]
        if self.request_id:
            lines.append(f"request id: {self.request_id} (quote it to an admin)")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)
