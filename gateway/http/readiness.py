"""``/readyz``: policies loaded and signing keys fetched; pools, the audit store and privilege drift reported.

Ready means this process can decide: its policies are loaded and its
issuers' keys fetched. The databases and the audit store are shared by every
replica, so their state is reported (``"required": false``) but does not make
a replica unready: taking every replica out of its Service because one target's
database is down would turn clear ``503 database_unavailable`` answers (for
that target) into refused connections for every target.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.audit.log import AuditLog
from gateway.db.pools import PoolRegistry
from gateway.errors import GatewayError
from gateway.identity.oidc import KeySource
from gateway.policy.store import DirectorySource, PolicyStore

POOL_CHECK_SECONDS = 2.0


async def keys_ready(sources: Sequence[KeySource]) -> bool:
    """Whether every issuer has usable keys (fetching them if none are loaded yet)."""
    for source in sources:
        if source.has_keys:
            continue
        ready = getattr(source, "ready", None)
        if ready is None or not await ready():
            return False
    return True


def is_ready(checks: dict[str, dict[str, Any]]) -> bool:
    """Whether every required check is ``ok``."""
    return all(c["ok"] for c in checks.values() if c.get("required", True))


async def check(
    policies: PolicyStore, sources: Sequence[KeySource], pools: PoolRegistry, audit: AuditLog
) -> dict[str, dict[str, Any]]:
    """Every readiness check with its detail (see :func:`is_ready`)."""
    checks: dict[str, dict[str, Any]] = {
        "policies": {
            "ok": policies.loaded,
            "revision": policies.current.revision if policies.loaded else None,
            "last_reload_error": policies.last_error,
        },
        "keys": {"ok": await keys_ready(sources)},
    }
    if not isinstance(policies.source, DirectorySource):
        # The shared state store: while it is down the last good policy stays in force (not gating).
        checks["state"] = {"ok": policies.source_error is None, "required": False, "last_error": policies.source_error}
    checks |= {
        "audit": {"ok": audit.last_error is None, "required": False, "last_error": audit.last_error},
    }
    # The privilege check's verdict per account (SECURITY rule 32): its own entry, never gating.
    checks["privileges"] = pools.drift.report()
    for (target, db_user), pool in pools.pools().items():
        try:
            await pool.check(within=POOL_CHECK_SECONDS)
            checks[f"pool:{target}/{db_user}"] = {"ok": True, "required": False}
        except GatewayError as exc:
            checks[f"pool:{target}/{db_user}"] = {"ok": False, "required": False, "detail": exc.detail}
    return checks
