"""What a caller may see of the policy: ``/v1/me`` and ``/v1/targets`` (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.identity.tokens import Identity
from gateway.policy.decide import effective_grants, roles_of
from gateway.policy.types import Grant, PolicySet, ReviewRule
from gateway.settings import TargetSettings


def grant_view(grant: Grant) -> dict[str, Any]:
    """One of the caller's own grants, as the API shows it."""
    return {
        "name": grant.name,
        "target": grant.target,
        "access": grant.access.label,
        "db_user": grant.db_user,
        "tables": {
            "allow": None if grant.tables_allow is None else list(grant.tables_allow),
            "deny": list(grant.tables_deny),
        },
        "max_rows": grant.max_rows,
        "statement_timeout": grant.statement_timeout,
        "expires": grant.expires.isoformat() if grant.expires else None,
        "review": review_view(grant.review),
    }


def review_view(rule: ReviewRule | None) -> dict[str, Any] | None:
    """A grant's review rule as the API shows it (None: nothing of the grant waits for review)."""
    if rule is None:
        return None
    return {
        "writes": rule.writes,
        "ddl": rule.ddl,
        "reviewers": list(rule.reviewers),
        "min_approvals": rule.min_approvals,
        "valid_for": rule.valid_for,
        "tables": None if rule.tables is None else list(rule.tables),
        "min_rows": rule.min_rows,
    }


def me(identity: Identity, policy: PolicySet, now: datetime) -> dict[str, Any]:
    """The caller: user, groups, roles and effective grants (never anyone else's)."""
    return {
        "user": identity.user,
        "subject": identity.subject,
        "issuer": identity.issuer,
        "groups": sorted(identity.groups),
        "roles": sorted(roles_of(identity, policy)),
        "grants": [grant_view(g) for g in effective_grants(identity, policy, now)],
    }


def targets(
    identity: Identity, policy: PolicySet, now: datetime, configured: Mapping[str, TargetSettings]
) -> list[dict[str, Any]]:
    """The configured targets the caller can use, each with its highest access level and expiry."""
    best: dict[str, Grant] = {}
    for grant in effective_grants(identity, policy, now):
        if grant.target in configured and (grant.target not in best or grant.access > best[grant.target].access):
            best[grant.target] = grant
    return [
        {
            "name": name,
            "database": configured[name].database,
            "access": grant.access.label,
            "grant": grant.name,
            "expires": grant.expires.isoformat() if grant.expires else None,
        }
        for name, grant in best.items()
    ]
