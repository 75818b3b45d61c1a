"""Typed policy values: what ``policyfile`` builds and ``policy`` evaluates.

Every value is frozen; a ``PolicySet`` is replaced whole on reload, never
edited in place, so a request sees one consistent policy from start to end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

KNOWN_ROLES = frozenset({"admin", "auditor"})
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


class Access(IntEnum):
    """Access level of a grant; a higher level includes the lower ones."""

    READ = 1
    WRITE = 2
    DDL = 3

    @property
    def label(self) -> str:
        """The name used in policy files and API answers: ``read``, ``write``, ``ddl``."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> Access:
        """Parse ``read``, ``write`` or ``ddl``; raise ``ValueError`` otherwise."""
        for member in cls:
            if member.label == label:
                return member
        raise ValueError(f"unknown access level {label!r}")


@dataclass(frozen=True, slots=True)
class ReviewRule:
    """A grant's ``review:`` block: which of what it allows waits for a second person (``gateway.policy.review``)."""

    writes: bool  # INSERT / UPDATE / DELETE / REPLACE need review
    ddl: bool  # DDL needs review (never dry-run: MariaDB commits DDL implicitly)
    reviewers: tuple[str, ...]  # "user:..." / "group:...", canonical; never the author person
    min_approvals: int  # distinct persons
    valid_for: float  # seconds a review lives after it was requested (pending or approved)
    tables: tuple[str, ...] | None  # lower-case fnmatch patterns; None: every table the grant allows
    min_rows: int | None  # writes: review only when the dry run changes more than this many rows


@dataclass(frozen=True, slots=True)
class Grant:
    """One grant: who may do what on one target, through which database user."""

    name: str
    subjects: tuple[str, ...]  # "user:..." / "group:...", canonical (gateway.identity.subjects)
    target: str
    access: Access
    db_user: str
    tables_allow: tuple[str, ...] | None  # lower-case fnmatch patterns; None: no allow list
    tables_deny: tuple[str, ...]  # lower-case fnmatch patterns
    max_rows: int | None
    statement_timeout: float | None  # seconds
    expires: datetime | None  # aware, UTC
    functions: frozenset[str]  # upper case, allowed beyond the safe list
    source_file: str  # file name inside the policy directory
    source_line: int  # 1-based line of the grant's list item
    review: ReviewRule | None = None  # what of this grant's work waits for review (issue 16)

    def expired(self, now: datetime) -> bool:
        """Tell whether the grant is dead at ``now``: from its ``expires`` instant on."""
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True)
class Revocation:
    """A subject loses access to one target (or ``*``: every target)."""

    subject: str  # "user:..." / "group:...", canonical (gateway.identity.subjects)
    target: str  # a target name or "*"
    reason: str
    until: datetime | None  # aware, UTC; None: until lifted
    source_file: str
    source_line: int

    def active(self, now: datetime) -> bool:
        """Tell whether the revocation applies at ``now``: no ``until``, or before it."""
        return self.until is None or now < self.until


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy file merged: roles, grants and revocations in file order."""

    # Mappings are not hashable; the revision identifies the set anyway.
    roles: Mapping[str, frozenset[str]] = field(hash=False)
    grants: tuple[Grant, ...]
    revocations: tuple[Revocation, ...]
    revision: str  # SHA-256 hex over the sorted (file name, bytes) pairs
