"""The gateway's one error tree.

Every error a caller can see is a ``GatewayError`` with a short ``code`` and an
HTTP ``status``; only the HTTP layer (``api.py``) turns them into
``application/problem+json`` responses::

    GatewayError
    ├── Unauthenticated          401 unauthenticated
    ├── Forbidden                403 forbidden
    │   └── Revoked              403 revoked
    ├── UnknownTarget            404 unknown_target
    ├── InvalidRequest           422 invalid_request
    │   └── PolicyInvalid        422 policy_invalid
    ├── NotFound                 404 not_found
    ├── Conflict                 409 conflict
    │   └── ReviewRefused        409 review_expired | review_used | review_rejected | review_not_approved |
    │                                review_policy_changed | review_rows_changed (a reviewed statement not run)
    ├── PreconditionFailed       412 precondition_failed
    ├── PreconditionRequired     428 precondition_required
    ├── StatementRejected        400 statement_rejected
    ├── DatabaseError            422 database_error
    ├── StatementTimeout         504 statement_timeout
    ├── PayloadTooLarge          413 payload_too_large
    │   └── HeadersTooLarge      431 headers_too_large
    └── Unavailable              503 (with Retry-After)
        ├── DatabaseUnavailable  503 database_unavailable
        ├── PoolExhausted        503 pool_exhausted
        ├── AuditUnavailable     503 audit_unavailable
        ├── IdentityUnavailable  503 identity_unavailable
        ├── PolicyWriteFailed    503 policy_write_failed
        ├── StateUnavailable     503 state_unavailable
        └── PrivilegeDrift       503 privilege_drift

Errors that never reach a caller (bad configuration, bad policy files) are
``ConfigError`` and ``PolicyFileError``; they stop start-up or a reload.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error a caller can see."""

    code = "internal_error"
    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthenticated(GatewayError):
    """The bearer token is missing, malformed, badly signed or not valid now.

    ``reason`` is for the audit log and server logs only; the caller always
    sees the same generic detail (SECURITY rule 7).
    """

    code = "unauthenticated"
    status = 401
    title = "Unauthenticated"

    def __init__(self, reason: str, *, unverified_subject: str | None = None) -> None:
        super().__init__("a valid bearer token is required")
        self.reason = reason
        self.unverified_subject = unverified_subject


class Forbidden(GatewayError):
    """No grant allows the request, or a role is missing."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class Revoked(Forbidden):
    """A revocation matches the caller for this target."""

    code = "revoked"
    title = "Access revoked"


class UnknownTarget(GatewayError):
    """The request names a target the gateway does not know."""

    code = "unknown_target"
    status = 404
    title = "Unknown target"


class InvalidRequest(GatewayError):
    """The request body fails validation."""

    code = "invalid_request"
    status = 422
    title = "Invalid request"


class PolicyInvalid(InvalidRequest):
    """An admin edit would make the policy set invalid; nothing was written."""

    code = "policy_invalid"
    title = "Policy edit rejected"


class NotFound(GatewayError):
    """The named grant, revocation or access request does not exist."""

    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(GatewayError):
    """The request clashes with the current state (e.g. an access request already decided)."""

    code = "conflict"
    status = 409
    title = "Conflict"


class ReviewRefused(Conflict):
    """A reviewed statement cannot be executed now; the subclass's ``code`` says why. Nothing ran, or it rolled back."""

    title = "Review cannot be executed"


class ReviewExpired(ReviewRefused):
    """The review is past its ``valid_for``: ask for a new one."""

    code = "review_expired"


class ReviewUsed(ReviewRefused):
    """The approval was used already (executed, failed, or being executed): approvals are single use."""

    code = "review_used"


class ReviewRejected(ReviewRefused):
    """A reviewer rejected it."""

    code = "review_rejected"


class ReviewNotApproved(ReviewRefused):
    """Not yet approved by enough distinct reviewers."""

    code = "review_not_approved"


class ReviewPolicyChanged(ReviewRefused):
    """The policy now decides otherwise (another grant, or the bound statement reads differently): re-review."""

    code = "review_policy_changed"


class ReviewRowsChanged(ReviewRefused):
    """The statement would now change a different number of rows than the dry run showed: rolled back, re-review."""

    code = "review_rows_changed"


class PreconditionFailed(GatewayError):
    """``If-Match`` names a policy revision that is no longer current: nothing was written."""

    code = "precondition_failed"
    status = 412
    title = "Precondition failed"


class PreconditionRequired(GatewayError):
    """A policy edit came without ``If-Match``: edits must name the revision they start from."""

    code = "precondition_required"
    status = 428
    title = "Precondition required"


class StatementRejected(GatewayError):
    """The SQL is unparseable, holds several statements or a forbidden construct."""

    code = "statement_rejected"
    status = 400
    title = "Statement rejected"


class DatabaseError(GatewayError):
    """MariaDB refused the statement."""

    code = "database_error"
    status = 422
    title = "Database error"

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(f"MariaDB error {errno}: {message}")
        self.errno = errno
        self.message = message


class StatementTimeout(GatewayError):
    """The statement ran past its timeout and was stopped."""

    code = "statement_timeout"
    status = 504
    title = "Statement timeout"


class PayloadTooLarge(GatewayError):
    """The body, the SQL text or the token is over its cap."""

    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class HeadersTooLarge(PayloadTooLarge):
    """The request's headers together are over their cap (RFC 6585)."""

    code = "headers_too_large"
    status = 431
    title = "Request header fields too large"


class Unavailable(GatewayError):
    """A dependency is unavailable; the caller may retry later."""

    status = 503
    retry_after = 1


class DatabaseUnavailable(Unavailable):
    """The gateway cannot connect to the target database."""

    code = "database_unavailable"
    title = "Database unavailable"
    retry_after = 5


class PoolExhausted(Unavailable):
    """No connection became free within the acquire timeout."""

    code = "pool_exhausted"
    title = "Connection pool exhausted"


class AuditUnavailable(Unavailable):
    """The audit record could not be written, so nothing ran."""

    code = "audit_unavailable"
    title = "Audit log unavailable"
    retry_after = 5


class IdentityUnavailable(Unavailable):
    """The names a person was seen with (the alias registry) cannot be read, so the token is not trusted yet."""

    code = "identity_unavailable"
    title = "Identity store unavailable"


class PolicyWriteFailed(Unavailable):
    """A policy edit could not take the edit lock or write the policies directory; nothing changed."""

    code = "policy_write_failed"
    title = "Policy files not writable"


class StateUnavailable(Unavailable):
    """The shared state store (``state.store: mariadb``) cannot be reached or used; nothing was changed."""

    code = "state_unavailable"
    title = "State store unavailable"
    retry_after = 5


class PrivilegeDrift(Unavailable):
    """The grant's database account holds privileges beyond what the policies need, and ``drift: refuse`` is set.

    The gateway's own check refused it (SECURITY rule 32), before any connection was used.
    """

    code = "privilege_drift"
    title = "Database account privileges drifted"
    retry_after = 30


class ConfigError(Exception):
    """The gateway configuration is invalid; start-up stops."""


@dataclass(frozen=True)
class PolicyProblem:
    """One problem in one policy file, with the line it is on (1-based)."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class PolicyFileError(Exception):
    """One or more policy files are invalid; every problem is listed at once."""

    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems
