"""Audit records: one frozen dataclass per kind, the fields they share defined once.

A record is what the gateway writes down; :meth:`AuditRecord.fields` is the
plain mapping the audit log stores and hashes (``gateway/audit/log.py``)::

    {"event": <kind>, <the Who fields>, <the kind's fields>, "time": ...}

Every record a request writes starts with :class:`Who`: the request's ids,
the client, the person (user, issuer, sub, groups) and the policy revision in
force. A field left :data:`UNSET` is *absent* from the mapping, which is not
the same as ``null``: a decision refused before its statement was analysed
has no ``kind`` and no ``tables``, one refused by the policy has
``"grant": null``. The stored JSON (and so the hash chain) is exactly what
the gateway wrote before these classes existed (``tests/test_audit_records.py``).

The kinds, by ``event``: ``decision`` (:class:`DecisionRecord` for statements,
:class:`RouteDenied` for calls refused at a route: a missing role, an
oversized request), ``auth`` (:class:`AuthRecord`), ``outcome``,
``policy_edit``, ``access_request``, ``audit_read``, ``revocation_cancel``,
``auth_flood`` (the aggregate of unauthenticated requests over the flood
limits, ``gateway/audit/flood.py``) and ``review`` (the steps of a statement
review, issue 16).

A field's metadata says what else it is: a plain column of both stores
(``column``), text whose literals are redacted (``redacted``), or a field
with a cap of its own (``cap``); ``gateway/audit/fields.py`` reads them.
"""

from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final

if TYPE_CHECKING:
    from gateway.identity.tokens import Identity


class Unset(enum.Enum):
    """The type of :data:`UNSET`."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET  # a field absent from the record (not null)


def _marked(*, column: bool = False, redacted: bool = False, cap: str | None = None, default: Any = MISSING) -> Any:  # noqa: ANN401 - a dataclass field of any type
    """A field the stores copy into a plain column, whose literals are redacted, or with a cap of its own."""
    return field(default=default, metadata={"column": column, "redacted": redacted, "cap": cap})


@dataclass(frozen=True, slots=True, kw_only=True)
class Who:
    """Who asked, from where, under which policy: the fields every record of a request starts with."""

    request_id: str = _marked(column=True)  # the gateway's own id (gateway/requestids.py)
    client: str | None = None
    user_agent: str | None = None
    # The person (issuer, sub) and the canonical name used (SECURITY rule 26);
    # ``user`` may hold an unverified subject (``auth`` records), then ``user_verified`` is false.
    user: str | None = _marked(column=True)
    issuer: str | None = None
    sub: str | None = None
    user_verified: bool = False
    groups: tuple[str, ...] = ()
    policy_revision: str | None = None
    client_request_id: str | Unset = UNSET  # the caller's sane X-Request-ID, when it sent one
    via: str | Unset = UNSET  # "console": the web console made the call (absent for API calls)

    @classmethod
    def of(
        cls,
        request_id: str,
        identity: Identity | None,
        policy_revision: str | None,
        *,
        client: str | None = None,
        user_agent: str | None = None,
        client_request_id: str | None = None,
        via: str | None = None,
    ) -> Who:
        """The fields of a request by ``identity`` (``None``: no valid token); ``via``: the console's marker."""
        return cls(
            request_id=request_id,
            client=client,
            user_agent=user_agent,
            user=identity.user if identity else None,
            issuer=identity.issuer if identity else None,
            sub=identity.subject if identity else None,
            user_verified=identity is not None,
            groups=tuple(sorted(identity.groups)) if identity else (),
            policy_revision=policy_revision,
            client_request_id=UNSET if client_request_id is None else client_request_id,
            via=UNSET if via is None else via,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """The base of every kind: its ``event`` and, when the caller sets it, its ``time``.

    Without a ``time`` the audit log stamps the record with its clock.
    """

    EVENT: ClassVar[str]
    time: datetime | None = None

    def fields(self) -> dict[str, object]:
        """The record as stored: ``event``, then every field that is set, in declaration order."""
        out: dict[str, object] = {"event": self.EVENT}
        for name in _names(type(self)):
            value = getattr(self, name)
            if type(value) is Who:
                for inner in _WHO_NAMES:
                    shared = getattr(value, inner)
                    if shared is not UNSET:
                        out[inner] = shared
            elif value is not UNSET:
                out[name] = value
        return out


_NAMES: dict[type[AuditRecord], tuple[str, ...]] = {}


def _names(kind: type[AuditRecord]) -> tuple[str, ...]:
    """The kind's fields in declaration order, but ``time`` (the audit log writes it last)."""
    names = _NAMES.get(kind)
    if names is None:
        names = _NAMES[kind] = tuple(f.name for f in dataclass_fields(kind) if f.name != "time")
    return names


_WHO_NAMES = tuple(f.name for f in dataclass_fields(Who))


@dataclass(frozen=True, slots=True, kw_only=True)
class DecisionRecord(AuditRecord):
    """The policy's decision on one statement or a transaction, written before anything runs."""

    EVENT: ClassVar[str] = "decision"
    who: Who
    target: str = _marked(column=True)
    statement: str | tuple[str, ...] = _marked(redacted=True, cap="statement")  # a transaction's: one each
    transaction: bool
    kind: str | Unset = UNSET  # unset: refused before the statements were analysed
    tables: tuple[str, ...] | Unset = UNSET
    decision: str = _marked(column=True)  # allow or deny
    code: str = _marked(column=True)
    grant: str | Unset | None = UNSET  # unset: refused before the policy decided
    db_user: str | Unset | None = UNSET
    reason: str | None = None
    review: str | Unset = UNSET  # the review an execution runs (issue 16)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDenied(AuditRecord):
    """A call refused at its route (event ``decision``): a role it lacks, an oversized request."""

    EVENT: ClassVar[str] = "decision"
    who: Who
    decision: str = _marked(column=True, default="deny")
    code: str = _marked(column=True)
    reason: str | None = None
    route: str  # "METHOD /path"
    access_request: str | Unset = UNSET  # a refused self-approval names the request
    review: str | Unset = UNSET  # a refused self-review (or a reviewer the rule does not name) names the review


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRecord(AuditRecord):
    """A request refused for want of a valid token; ``who.user`` is the token's unverified subject, if any."""

    EVENT: ClassVar[str] = "auth"
    who: Who
    decision: str = _marked(column=True, default="deny")
    code: str = _marked(column=True)
    reason: str | None = None
    token_hash: str | None = None  # links the records of one token without revealing it


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeRecord(AuditRecord):
    """How an allowed statement (or transaction, or stream) ended."""

    EVENT: ClassVar[str] = "outcome"
    who: Who
    target: str = _marked(column=True)
    duration_ms: float
    code: str = _marked(column=True)
    # MariaDB's messages quote the values they refused. (_marked returns a dataclasses.field.)
    error: str | Unset = _marked(redacted=True, default=UNSET)  # noqa: RUF009 - a field marker, built once per class
    rows: int | Unset = UNSET
    truncated: bool | Unset = UNSET
    committed: bool | Unset = UNSET  # transactions only
    streamed: bool | Unset = UNSET  # NDJSON streams that ended well only
    review: str | Unset = UNSET  # a dry run or an execution of a review (issue 16)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEditRecord(AuditRecord):
    """An admin's edit of the managed policy, written before the file is replaced.

    ``who.policy_revision`` is the revision edited; ``new_revision`` the one written.
    """

    EVENT: ClassVar[str] = "policy_edit"
    who: Who
    action: str
    detail: dict[str, Any]
    file: str
    diff: str = _marked(cap="diff")
    new_revision: str
    access_request: str | Unset = UNSET  # the access request an approval grants


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessRequestRecord(AuditRecord):
    """A step of an access request: asked for, approved or denied."""

    EVENT: ClassVar[str] = "access_request"
    who: Who
    action: str  # create, approve, deny
    access_request: str
    requester: str
    requester_issuer: str | None
    requester_sub: str | None
    target: str = _marked(column=True)
    access: str
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewRecord(AuditRecord):
    """A step of a statement review (issue 16), linked by ``review``.

    ``action``: ``requested`` (durable before the dry run), ``dry_run`` (its
    counts), ``approved`` / ``rejected`` (one per verdict, ``state`` after it),
    ``executed`` (or ``execute_failed``), ``expired``. ``author*`` is the person
    who asked; ``who`` is whoever took this step.
    """

    EVENT: ClassVar[str] = "review"
    who: Who
    action: str
    review: str
    digest: str
    state: str
    author: str
    author_issuer: str
    author_sub: str
    target: str = _marked(column=True)
    grant: str | Unset | None = UNSET
    statement: str | tuple[str, ...] | Unset = _marked(redacted=True, cap="statement", default=UNSET)  # noqa: RUF009 - a field marker
    rows_affected: tuple[int | None, ...] | Unset = UNSET  # per statement: the dry run's, or the execution's
    comment: str | Unset = UNSET  # a reviewer's comment, or the author's reason on ``requested``
    error: str | Unset = _marked(redacted=True, default=UNSET)  # noqa: RUF009 - a field marker


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReadRecord(AuditRecord):
    """An auditor's read of the audit log (a query or a verification), with its filters."""

    EVENT: ClassVar[str] = "audit_read"
    who: Who
    decision: str = _marked(column=True, default="allow")
    code: str = _marked(column=True, default="ok")
    reason: str
    filters: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationCancelRecord(AuditRecord):
    """A running statement a revocation cancelled (the kill is a decision of its own)."""

    EVENT: ClassVar[str] = "revocation_cancel"
    who: Who
    target: str = _marked(column=True)
    db_user: str
    thread_id: int
    action: str  # KILL QUERY or KILL CONNECTION
    killed: bool
    decision: str = _marked(column=True, default="deny")
    code: str = _marked(column=True, default="revoked")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFloodRecord(AuditRecord):
    """Records of unauthenticated requests over the flood limits, counted into one (``gateway/audit/flood.py``)."""

    EVENT: ClassVar[str] = "auth_flood"
    request_id: str = _marked(column=True)
    client: str
    user: str | None = _marked(column=True)
    user_verified: bool = False
    decision: str = _marked(column=True, default="deny")
    code: str = _marked(column=True, default="auth_flood")
    suppressed: int
    codes: dict[str, int]
    window_start: str
    window_end: str
    window_seconds: float
    sample_reasons: tuple[str, ...]
    sample_request_ids: tuple[str, ...]


KINDS: tuple[type[AuditRecord], ...] = (
    DecisionRecord,
    RouteDenied,
    AuthRecord,
    OutcomeRecord,
    PolicyEditRecord,
    AccessRequestRecord,
    AuditReadRecord,
    RevocationCancelRecord,
    AuthFloodRecord,
    ReviewRecord,
)
EVENTS: tuple[str, ...] = tuple(dict.fromkeys(kind.EVENT for kind in KINDS))
