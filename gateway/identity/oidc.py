"""OIDC issuer configuration, discovery and the JWKS key cache.

A ``KeySource`` answers "which public key verifies a token with this ``kid``
and ``alg``?". ``JwksCache`` is the one for real issuers: it finds the
``jwks_uri`` through discovery (whose ``issuer`` must equal the configured one
exactly) and keeps the last good key set in memory. The dev issuer
(``devissuer.py``) is the other. ``identity.py`` turns tokens into identities
and knows nothing of HTTP.

Fetch rules (SECURITY rules 3 and 4): timeouts, no redirects, a size cap, JSON
only; an unknown ``kid`` triggers at most one single-flight refresh per
cooldown; a failed refresh keeps the last good keys.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import httpx
import structlog
from cachetools import TTLCache
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, RSAKey

from gateway.errors import ConfigError
from gateway.identity.names import FALLBACK_CLAIM
from gateway.settings import IssuerSettings
from gateway.settings.issuers import (
    ALLOWED_ALGORITHMS,
    ISSUER_DEFAULTS,
    MAX_LEEWAY,
    MAX_TOKEN_LIFETIME,
    MIN_JWKS_COOLDOWN,
)

if TYPE_CHECKING:
    from collections.abc import Callable

PublicKey = RSAKey | ECKey

MAX_KID_LENGTH = 128
MIN_RSA_BITS = 2048
ES_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
# The settings' one list is what this module verifies: a key type for every allowed algorithm.
assert RSA_ALGORITHMS | ES_CURVES.keys() == ALLOWED_ALGORITHMS  # noqa: S101 - an import-time check that the two lists agree
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})

log = structlog.get_logger(__name__)


def _is_secure_url(url: str) -> bool:
    """Https anywhere; plain http only on loopback (tests, the dev issuer)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """One trusted token issuer; checked when built, so a bad config never starts."""

    issuer: str
    audience: str
    # The defaults and bounds are the settings' own (gateway.settings.issuers): one copy of each rule.
    algorithms: tuple[str, ...] = ISSUER_DEFAULTS.algorithms
    user_claim: str = ISSUER_DEFAULTS.user_claim
    groups_claim: str = ISSUER_DEFAULTS.groups_claim
    allow_id_tokens: bool = ISSUER_DEFAULTS.allow_id_tokens
    leeway: int = ISSUER_DEFAULTS.leeway
    max_token_lifetime: int = ISSUER_DEFAULTS.max_token_lifetime
    jwks_cooldown: float = MIN_JWKS_COOLDOWN
    # SECURITY rule 26 (see gateway.identity.names): an email names a person only when the issuer
    # asserts it (email_verified), or when this says the issuer never sends that claim.
    assume_email_verified: bool = ISSUER_DEFAULTS.assume_email_verified
    fallback_claim: str | None = ISSUER_DEFAULTS.fallback_claim  # names a token without user_claim; None: refused

    @classmethod
    def from_settings(cls, issuer: IssuerSettings, *, jwks_cooldown: float) -> IssuerConfig:
        """The config of one ``issuers:`` entry: every field as the settings give it."""
        return cls(**issuer.model_dump(), jwks_cooldown=jwks_cooldown)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _is_secure_url(self.issuer):
            problems.append("issuer must be an https URL (http only on loopback)")
        if not self.audience:
            problems.append("audience must not be empty")
        if not self.algorithms:
            problems.append("algorithms must not be empty")
        problems += [
            f"algorithm {alg!r} is not allowed (asymmetric RS*, PS*, ES* only)"
            for alg in self.algorithms
            if alg not in ALLOWED_ALGORITHMS
        ]
        if not self.user_claim or not self.groups_claim:
            problems.append("user_claim and groups_claim must not be empty")
        if self.fallback_claim is not None and (
            not FALLBACK_CLAIM.fullmatch(self.fallback_claim) or self.fallback_claim == self.user_claim
        ):
            problems.append("fallback_claim must be 1-64 of [A-Za-z0-9_.-] and differ from user_claim")
        if not 0 <= self.leeway <= MAX_LEEWAY:
            problems.append(f"leeway must be between 0 and {MAX_LEEWAY} seconds")
        if not 0 < self.max_token_lifetime <= MAX_TOKEN_LIFETIME:
            problems.append(f"max_token_lifetime must be between 1 and {MAX_TOKEN_LIFETIME} seconds")
        if self.jwks_cooldown < MIN_JWKS_COOLDOWN:
            problems.append(f"jwks_cooldown must be at least {MIN_JWKS_COOLDOWN:g} seconds")
        if problems:
            raise ConfigError(f"issuer {self.issuer!r}: " + "; ".join(problems))


class KeyUnavailableError(Exception):
    """No usable key for a token's ``kid``/``alg``; ``reason`` is for the logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeySource(Protocol):
    """Where an issuer's verification keys come from (the swap point)."""

    @property
    def has_keys(self) -> bool:
        """Whether at least one usable key is loaded (for ``/readyz``)."""
        ...

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """Return the key for ``kid`` that fits ``alg``; raise ``KeyUnavailableError`` if none."""
        ...


def key_fits(key: PublicKey, alg: str) -> bool:
    """Whether ``key``'s ``kty``, curve, ``alg`` and ``use`` fit a token signed with ``alg``."""
    if key.alg not in (None, alg) or key.get("use") not in (None, "sig"):
        return False
    if isinstance(key, RSAKey):
        return alg in RSA_ALGORITHMS
    return ES_CURVES.get(alg) == key.curve_name


def select_key(keys: list[PublicKey], kid: str | None, alg: str) -> PublicKey | None:
    """Pick the one key matching ``kid`` (or the only fitting key when there is no ``kid``)."""
    fitting = [k for k in keys if k.kid == kid and key_fits(k, alg)]
    if kid is None and not fitting:
        fitting = [k for k in keys if key_fits(k, alg)]
    return fitting[0] if len(fitting) == 1 else None


def parse_jwks(document: object) -> list[PublicKey]:
    """Usable public signing keys from a JWKS document; unusable entries are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TypeError("JWKS is not an object with a 'keys' list")
    keys: list[PublicKey] = []
    for entry in document["keys"]:
        key = _parse_jwk(entry)
        if key is not None:
            keys.append(key)
    return keys


_PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y")}


def _usable_entry(entry: object) -> bool:
    """Whether a JWKS entry may become a verification key (before importing it)."""
    if not isinstance(entry, dict) or entry.get("kty") not in _PUBLIC_MEMBERS:
        return False  # oct (HMAC) and unknown key types are never verification keys here
    kid, alg, use, ops = (entry.get(n) for n in ("kid", "alg", "use", "key_ops"))
    return (
        (kid is None or (isinstance(kid, str) and 0 < len(kid) <= MAX_KID_LENGTH))
        and (alg is None or alg in ALLOWED_ALGORITHMS)
        and use in (None, "sig")
        and (ops is None or (isinstance(ops, list) and "verify" in ops))
    )


def _rsa_bits(modulus: object) -> int:
    """Bit length of a base64url RSA modulus, 0 if unreadable (checked before importing)."""
    if not isinstance(modulus, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _parse_jwk(entry: object) -> PublicKey | None:
    if not _usable_entry(entry):
        return None
    assert isinstance(entry, dict)  # noqa: S101 - narrowed by _usable_entry
    if entry["kty"] == "RSA" and _rsa_bits(entry.get("n")) < MIN_RSA_BITS:
        return None
    members = _PUBLIC_MEMBERS[entry["kty"]]
    # Only the public members: private material published by mistake is never loaded.
    public: dict[str, str | list[str]] = {n: entry[n] for n in members if n in entry}
    params: KeyParameters = {}
    for name in ("kid", "alg", "use"):
        if entry.get(name):
            params[name] = entry[name]
    key_type: type[PublicKey] = RSAKey if entry["kty"] == "RSA" else ECKey
    try:
        key = key_type.import_key(public, params)
    except (JoseError, ValueError, TypeError):
        return None
    return key


class JwksError(Exception):
    """Discovery or a JWKS fetch failed; the last good keys stay in use."""


class JwksCache:
    """An issuer's JWKS, found through discovery and kept in memory.

    ``clock`` (monotonic seconds) drives the refresh TTL and the unknown-``kid``
    cooldown. Pass ``client`` to share a connection pool or to observe requests;
    redirects, timeouts and the size cap are enforced per request either way.
    """

    def __init__(
        self,
        config: IssuerConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_interval: float = 3600.0,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
    ) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient()
        self._owns_client = client is None
        self._clock = clock
        self._timeout = httpx.Timeout(timeout)
        self._max_bytes = max_bytes
        # Present while the key set is fresh; expiry only triggers a refetch, because
        # the last good keys in `_keys` are never dropped for a failed fetch.
        self._fresh: TTLCache[str, bool] = TTLCache(maxsize=1, ttl=refresh_interval, timer=clock)
        self._keys: list[PublicKey] = []
        self._lock = asyncio.Lock()
        self._last_attempt: float | None = None
        self.refresh_count = 0  # successful or not; for metrics and tests

    @property
    def has_keys(self) -> bool:
        """Whether at least one usable key is loaded."""
        return bool(self._keys)

    async def ready(self) -> bool:
        """Load the keys if none are loaded yet (within the cooldown); true once keys exist."""
        if not self._keys:
            await self._refresh()
        return self.has_keys

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """Return the key for ``kid`` fitting ``alg``; unknown kids refresh once per cooldown."""
        if kid is not None and not 0 < len(kid) <= MAX_KID_LENGTH:
            raise KeyUnavailableError("kid is empty or too long")
        if "jwks" not in self._fresh:
            await self._refresh()
        key = select_key(self._keys, kid, alg)
        if key is None and not any(k.kid == kid for k in self._keys):
            await self._refresh()  # a no-op inside the cooldown: no amplification
            key = select_key(self._keys, kid, alg)
        if key is None:
            raise KeyUnavailableError(f"no key of issuer {self.config.issuer} fits kid/alg")
        return key

    async def aclose(self) -> None:
        """Close the HTTP client if this cache created it."""
        if self._owns_client:
            await self._client.aclose()

    async def _refresh(self) -> None:
        # Single flight: waiters on the lock find the attempt already made and return.
        async with self._lock:
            now = self._clock()
            if self._last_attempt is not None and now - self._last_attempt < self.config.jwks_cooldown:
                return
            self._last_attempt = now
            self.refresh_count += 1
            try:
                keys = await self._fetch_keys()
            except JwksError as error:
                log.warning("jwks_refresh_failed", issuer=self.config.issuer, reason=str(error))
                return
            self._keys = keys
            self._fresh["jwks"] = True
            log.info("jwks_refreshed", issuer=self.config.issuer, keys=len(keys))

    async def _fetch_keys(self) -> list[PublicKey]:
        issuer = self.config.issuer
        discovery = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if not isinstance(discovery, dict) or discovery.get("issuer") != issuer:
            raise JwksError("discovery 'issuer' does not equal the configured issuer")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not _is_secure_url(jwks_uri):
            raise JwksError("discovery has no usable https 'jwks_uri'")
        try:
            keys = parse_jwks(await self._get_json(jwks_uri))
        except TypeError as error:
            raise JwksError(str(error)) from error
        if not keys:
            raise JwksError("JWKS holds no usable signing key")
        return keys

    async def _get_json(self, url: str) -> object:
        try:
            async with self._client.stream(
                "GET",
                url,
                headers={"Accept": "application/json"},
                follow_redirects=False,
                timeout=self._timeout,
            ) as response:
                if response.status_code != httpx.codes.OK:
                    raise JwksError(f"GET {url}: HTTP {response.status_code}")
                media_type = response.headers.get("content-type", "").split(";")[0].strip()
                if media_type != "application/json" and not media_type.endswith("+json"):
                    raise JwksError(f"GET {url}: not JSON ({media_type or 'no content type'})")
                declared = response.headers.get("content-length", "0")
                if not declared.isdigit() or int(declared) > self._max_bytes:
                    raise JwksError(f"GET {url}: response over {self._max_bytes} bytes")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise JwksError(f"GET {url}: response over {self._max_bytes} bytes")
        except httpx.HTTPError as error:
            raise JwksError(f"GET {url}: {type(error).__name__}") from error
        try:
            return json.loads(body)
        except ValueError as error:
            raise JwksError(f"GET {url}: invalid JSON") from error
