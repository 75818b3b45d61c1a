"""A ``KeySource`` for tests, beside the protocol it stands in for (as httpx keeps its mock transport).

``StaticKeys`` serves a fixed set of public keys by ``kid`` and counts the
look-ups, so a test of the validator can swap it in for a ``JwksCache``
without an IdP (or count how often the validator asked for a key).
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.identity.oidc import ES_CURVES, RSA_ALGORITHMS, KeyUnavailableError, PublicKey


class StaticKeys:
    """Public keys by ``kid``; each must fit the token's ``alg`` as a real key source would check."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._keys = {key.kid: key for key in keys}
        self.lookups = 0

    @property
    def has_keys(self) -> bool:
        """Whether any key is loaded."""
        return bool(self._keys)

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """The key named ``kid`` (the only key when ``kid`` is absent), if its type fits ``alg``."""
        self.lookups += 1
        if kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        elif kid in self._keys:
            key = self._keys[kid]
        else:
            raise KeyUnavailableError(f"no key with kid {kid!r}")
        fits = key.key_type == "RSA" if alg in RSA_ALGORITHMS else alg in ES_CURVES and key.key_type == "EC"
        if not fits:
            raise KeyUnavailableError(f"key {kid!r} does not fit {alg}")
        return key
