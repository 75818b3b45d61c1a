"""``/readyz``: policies loaded, signing keys fetched, every pool usable."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import GatewayError
from gateway.oidc import KeySource
from gateway.policystore import PolicyStore
from gateway.pools import PoolRegistry

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


async def check(policies: PolicyStore, sources: Sequence[KeySource], pools: PoolRegistry) -> dict[str, dict[str, Any]]:
    """Every readiness check with its detail; the gateway is ready when all are ``ok``."""
    checks: dict[str, dict[str, Any]] = {
        "policies": {
            "ok": policies.loaded,
            "revision": policies.current.revision if policies.loaded else None,
            "last_reload_error": policies.last_error,
        },
        "keys": {"ok": await keys_ready(sources)},
    }
    for (target, db_user), pool in pools.pools().items():
        try:
            await pool.check(within=POOL_CHECK_SECONDS)
            checks[f"pool:{target}/{db_user}"] = {"ok": True}
        except GatewayError as exc:
            checks[f"pool:{target}/{db_user}"] = {"ok": False, "detail": exc.detail}
    return checks
