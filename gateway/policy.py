"""``decide(identity, statements, target, policy, now) -> Decision``.

(Skeleton: the types are the contract other modules rely on.)
"""

from __future__ import annotations

from dataclasses import dataclass


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
