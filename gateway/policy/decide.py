"""``decide(identity, statements, target, policy, now) -> Decision``.

Pure functions over a loaded ``PolicySet``: no I/O and no clock (``now`` is a
parameter), so every rule is testable without patching.

Order of evaluation, deny first:

1. An empty batch is rejected.
2. A revocation whose subject is one of the caller's revocation subjects
   (the name the token carries, every alias the person was seen with, and
   the groups: ``Identity.revocation_subjects``), whose target is ``*`` or
   this target and whose ``until`` is unset or still ahead -> ``revoked``.
3. A statement of kind ``other`` (or any kind without an access level)
   -> ``statement_rejected``.
4. A grant allows the whole batch when: one of its subjects is the caller's
   (the name the token carries or a group; never an alias), its target is this target, it has not expired (a grant is
   dead *at* its ``expires`` instant), its access level covers every
   statement (read < write < ddl), every table of every statement passes
   its table rules and every function is safe or listed in its
   ``functions``. One grant must allow every statement of a batch. Of the
   grants that allow, the lowest access level wins (least privilege), then
   the first in policy order.

Subjects are compared exactly: the policy loader and the token validator
both put names in one canonical form (``gateway.identity.subjects``: NFC, stripped,
case-folded), so ``Bob@Example.com `` and ``bob@example.com`` are one name.

Table rules, on lower-case ``db.table`` names with fnmatch patterns: a
``deny`` match refuses; without ``allow``, every table outside the system
schemas (``mysql``, ``information_schema``, ``performance_schema``, ``sys``)
is allowed; with ``allow``, a table must match a pattern, and a system-schema
table only a pattern whose schema part names that schema literally (``*``,
``*.*`` or ``m*.user`` do not). A name without a schema is refused.

``Decision.reason`` vocabulary, by ``code``:

- ``allowed``: ``allowed by grant NAME``
- ``revoked``: ``access to TARGET is revoked[: REASON][ (until TIME)]``
- ``statement_rejected``: ``no statement to authorize``;
  ``COMMAND statements are not allowed``
- ``forbidden`` (only the caller's own grants are ever consulted, so nothing
  about other users' grants leaks), most specific first:
  ``function NAME is not allowed``;
  ``table DB.TABLE is not allowed by your grants``;
  ``your grant NAME expired at TIME``;
  ``no grant allows ACCESS on TARGET for you``;
  for a batch whose statements are each allowed by some grant but not all
  by one: ``no single grant allows every statement of the transaction``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from gateway.policy.types import SYSTEM_SCHEMAS, Access
from gateway.sql.statements import Kind

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from gateway.identity.tokens import Identity
    from gateway.policy.types import Grant, PolicySet, ReviewRule, Revocation
    from gateway.sql.statements import Statement

_NEEDS = {Kind.READ: Access.READ, Kind.WRITE: Access.WRITE, Kind.DDL: Access.DDL}

# Ranks of denial reasons: when no grant allows, the caller hears the most
# specific obstacle found in their own grants.
_ACCESS, _EXPIRED, _TABLE, _FUNCTION = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a policy check; the only road to a database connection."""

    allowed: bool
    code: str  # "allowed", "forbidden", "revoked" or "statement_rejected"
    reason: str  # why, from a fixed vocabulary plus specifics
    target: str
    grant: str | None = None
    db_user: str | None = None
    access: str | None = None  # "read", "write" or "ddl" of the deciding grant
    max_rows: int | None = None
    statement_timeout: float | None = None  # seconds
    review: ReviewRule | None = None  # the deciding grant's review rule (gateway.policy.review)


def decide(
    identity: Identity,
    statements: Sequence[Statement],
    target: str,
    policy: PolicySet,
    now: datetime,
    *,
    safe_functions: frozenset[str],
) -> Decision:
    """Decide whether ``identity`` may run the whole batch ``statements`` on ``target``."""
    if not statements:
        return _deny("statement_rejected", "no statement to authorize", target)
    safe = _upper(safe_functions)
    subjects = identity.subjects
    for revocation in _active_revocations(identity.revocation_subjects, policy, now):
        if revocation.target in {"*", target}:
            return _deny("revoked", _revoked_reason(revocation, target), target)
    for statement in statements:
        if statement.kind not in _NEEDS:
            reason = f"{statement.command} statements are not allowed"
            return _deny("statement_rejected", reason, target)
    mine = [g for g in policy.grants if g.target == target and _holds(g, subjects)]
    obstacles = [(g, _obstacle(g, statements, now, safe)) for g in mine]
    allowing = [g for g, obstacle in obstacles if obstacle is None]
    if allowing:
        grant = min(allowing, key=lambda g: g.access)  # min keeps the first of equals
        return Decision(
            allowed=True,
            code="allowed",
            reason=f"allowed by grant {grant.name}",
            target=target,
            grant=grant.name,
            db_user=grant.db_user,
            access=grant.access.label,
            max_rows=grant.max_rows,
            statement_timeout=grant.statement_timeout,
            review=grant.review,
        )
    if len(statements) > 1 and all(any(_obstacle(g, [s], now, safe) is None for g in mine) for s in statements):
        reason = "no single grant allows every statement of the transaction"
        return _deny("forbidden", reason, target)
    found = [o for _, o in obstacles if o is not None]
    if found:
        reason = max(found, key=lambda o: o[0])[1]  # max keeps the first of equals
    else:
        reason = f"no grant allows {_needed(statements).label} on {target} for you"
    return _deny("forbidden", reason, target)


def roles_of(identity: Identity, policy: PolicySet) -> frozenset[str]:
    """Return the roles (``admin``, ``auditor``) that list one of the caller's subjects."""
    subjects = identity.subjects
    return frozenset(role for role, members in policy.roles.items() if members & subjects)


def effective_grants(identity: Identity, policy: PolicySet, now: datetime) -> list[Grant]:
    """Return the caller's usable grants in policy order: theirs, unexpired, not revoked."""
    subjects = identity.subjects
    revoked = {r.target for r in _active_revocations(identity.revocation_subjects, policy, now)}
    if "*" in revoked:
        return []
    return [g for g in policy.grants if _holds(g, subjects) and not g.expired(now) and g.target not in revoked]


def active_revocations(identity: Identity, policy: PolicySet, now: datetime) -> list[Revocation]:
    """Return the revocations that apply to the caller at ``now``, in policy order."""
    return _active_revocations(identity.revocation_subjects, policy, now)


def table_allowed(grant: Grant, table: str) -> bool:
    """Whether ``grant``'s table rules allow the qualified ``db.table`` name."""
    table = table.lower()
    schema, dot, name = table.partition(".")
    if not (dot and schema and name):
        return False
    if any(fnmatchcase(table, pattern.lower()) for pattern in grant.tables_deny):
        return False
    system = schema in SYSTEM_SCHEMAS
    if grant.tables_allow is None:
        return not system
    return any(
        fnmatchcase(table, pattern) and (not system or pattern.partition(".")[0] == schema)
        for pattern in (p.lower() for p in grant.tables_allow)
    )


@functools.lru_cache(maxsize=8)
def _upper(names: frozenset[str]) -> frozenset[str]:
    """Upper-cased names, built once per set: the safe list has hundreds of entries."""
    return frozenset(name.upper() for name in names)


def _deny(code: str, reason: str, target: str) -> Decision:
    return Decision(allowed=False, code=code, reason=reason, target=target)


def _holds(grant: Grant, subjects: frozenset[str]) -> bool:
    return any(subject in subjects for subject in grant.subjects)


def _active_revocations(subjects: frozenset[str], policy: PolicySet, now: datetime) -> list[Revocation]:
    return [r for r in policy.revocations if r.subject in subjects and r.active(now)]


def _revoked_reason(revocation: Revocation, target: str) -> str:
    reason = f"access to {target} is revoked"
    if revocation.reason:
        reason += f": {revocation.reason}"
    if revocation.until is not None:
        reason += f" (until {_iso(revocation.until)})"
    return reason


def _needed(statements: Iterable[Statement]) -> Access:
    return max(_NEEDS[s.kind] for s in statements)


def _obstacle(
    grant: Grant, statements: Sequence[Statement], now: datetime, safe: frozenset[str]
) -> tuple[int, str] | None:
    """Why ``grant`` does not allow the batch (rank, reason), or None if it does."""
    needed = _needed(statements)
    if grant.access < needed:
        return _ACCESS, f"no grant allows {needed.label} on {grant.target} for you"
    if grant.expired(now) and grant.expires is not None:
        return _EXPIRED, f"your grant {grant.name} expired at {_iso(grant.expires)}"
    for table in sorted({t for s in statements for t in s.tables}):
        if not table_allowed(grant, table):
            return _TABLE, f"table {table} is not allowed by your grants"
    for function in sorted({f.upper() for s in statements for f in s.functions}):
        if function not in safe and function not in grant.functions:
            return _FUNCTION, f"function {function} is not allowed"
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
