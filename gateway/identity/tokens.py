"""Bearer token -> ``Identity``.

``TokenValidator.validate`` runs SECURITY rules 5 and 6 in this order, failing
closed at the first problem with ``Unauthenticated`` (``PayloadTooLarge`` for an
oversized token):

1. structure, before any decoding of claims: size cap, three non-empty
   base64url segments, JSON objects without duplicate member names, no
   ``crit``/``b64``/``jku``/``x5u``/``x5c``/``jwk`` header;
2. the unverified ``iss`` picks the issuer config: its pinned algorithms,
   its ``typ`` rule and its own key source (never a key named by the token);
3. the signature (joserfc ``jwt.decode``), then always the claims registry
   plus the lifetime cap;
4. the name used and the groups (SECURITY rule 26, ``gateway.identity.names``):
   canonical, the email asserted by the issuer, no silent fallback;
5. the person's other names from the alias registry (``gateway.identity.aliases``),
   which revocations match too.

Verified identities are cached by the token's SHA-256 until ``exp`` (at most
``MAX_CACHE_SECONDS``); a cache hit re-checks ``exp`` against the clock and
picks up aliases this process learned since from the same person's tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache, TLRUCache
from joserfc import jwt
from joserfc.errors import ClaimError, JoseError

from gateway.errors import ConfigError, PayloadTooLarge, Unauthenticated
from gateway.identity.aliases import MemoryAliasRegistry
from gateway.identity.names import group_names, user_name
from gateway.identity.oidc import MAX_KID_LENGTH, KeyUnavailableError
from gateway.identity.subjects import canonical_name

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from gateway.identity.aliases import AliasRegistry
    from gateway.identity.oidc import IssuerConfig, KeySource

MAX_TOKEN_BYTES = 8192
MAX_CACHE_SECONDS = 300.0  # bounds how long a token outlives a key the IdP withdrew
FORBIDDEN_HEADERS = ("crit", "b64", "jku", "x5u", "x5c", "jwk")
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
ID_TOKEN_TYPES = frozenset({"jwt", "application/jwt"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_MAX_LOGGED_SUBJECT = 256


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling, taken from a validated token: one person, (issuer, sub), under one name."""

    user: str  # the name used: canonical, from the user claim or the fallback (gateway.identity.names)
    groups: frozenset[str]  # canonical, from the configured groups claim
    subject: str  # the token's `sub`: with the issuer, the stable key of the person
    issuer: str
    token_id: str | None  # `jti`, for logs
    token_hash: str  # short SHA-256 of the token, for logs (never the token)
    expires_at: float  # `exp`, seconds since the epoch
    aliases: frozenset[str] = frozenset()  # the person's other names seen before (gateway.identity.aliases)
    # Built once: the policy checks ask for them several times per request, and a
    # cached identity (verified-token cache) serves many requests.
    _subjects: frozenset[str] = field(init=False, repr=False, compare=False)
    _revocation_subjects: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Names meet policy subjects by exact comparison: only canonical names may be compared.
        if canonical_name(self.user) != self.user or any(canonical_name(g, kind="group") != g for g in self.groups):
            raise ValueError("an Identity holds canonical names only (gateway.identity.subjects.canonical_name)")
        subjects = frozenset({f"user:{self.user}"} | {f"group:{g}" for g in self.groups})
        object.__setattr__(self, "_subjects", subjects)
        object.__setattr__(self, "_revocation_subjects", subjects | {f"user:{a}" for a in self.aliases})

    @property
    def person(self) -> tuple[str, str]:
        """The stable key of the person: (issuer, sub)."""
        return (self.issuer, self.subject)

    @property
    def names(self) -> frozenset[str]:
        """Every name of the person known now: the one used and the aliases."""
        return self.aliases | {self.user}

    @property
    def subjects(self) -> frozenset[str]:
        """Policy subjects grants and roles match: ``user:<name used>`` and ``group:...``."""
        return self._subjects

    @property
    def revocation_subjects(self) -> frozenset[str]:
        """Policy subjects revocations match: ``subjects`` plus ``user:<alias>`` for every alias."""
        return self._revocation_subjects


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate JSON member name")
    return result


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_segment(segment: str) -> dict[str, Any]:
    """Decode a base64url segment holding one JSON object with unique member names."""
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    value = json.loads(
        raw.decode("utf-8"),
        object_pairs_hook=_unique_members,
        parse_constant=_refuse_constant,
    )
    if not isinstance(value, dict):
        raise TypeError("segment is not a JSON object")
    return value


def _claim_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value[:_MAX_LOGGED_SUBJECT] if isinstance(value, str) and value else None


def token_hash(token: str | None) -> str | None:
    """A short hash that links log lines and records about one token without revealing it (SECURITY rule 7)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16] if token else None


class TokenValidator:
    """Validates bearer tokens of the configured issuers; one per process."""

    def __init__(
        self,
        issuers: Sequence[IssuerConfig],
        key_sources: Mapping[str, KeySource],
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        aliases: AliasRegistry | None = None,
    ) -> None:
        self._issuers = {config.issuer: config for config in issuers}
        missing = self._issuers.keys() - key_sources.keys()
        if missing or len(self._issuers) != len(issuers) or not issuers:
            raise ConfigError("every issuer needs exactly one config and one key source")
        # Fallback names end in the issuer, case-folded: two such issuers must not fold to one.
        if len({c.issuer.casefold() for c in issuers if c.fallback_claim}) < sum(
            bool(c.fallback_claim) for c in issuers
        ):
            raise ConfigError("issuers with a fallback_claim must differ in more than letter case")
        self._key_sources = dict(key_sources)
        self._clock = clock
        self._cache: TLRUCache[bytes, Identity] = TLRUCache(maxsize=cache_size, ttu=self._cache_until, timer=clock)
        self.aliases: AliasRegistry = aliases if aliases is not None else MemoryAliasRegistry()
        # The newest names known per person, so a cached identity learns an alias a later token
        # of the same person brought (checked on every cache hit: one dict lookup).
        self._names: LRUCache[tuple[str, str], frozenset[str]] = LRUCache(maxsize=cache_size)

    def _cache_until(self, _key: bytes, identity: Identity, now: float) -> float:
        return min(identity.expires_at, now + MAX_CACHE_SECONDS)

    async def validate(self, token: str) -> Identity:
        """Return the identity in ``token``; raise ``Unauthenticated`` or ``PayloadTooLarge``."""
        if len(token) > MAX_TOKEN_BYTES:
            raise PayloadTooLarge(f"bearer token over {MAX_TOKEN_BYTES} bytes")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            config = self._issuers[cached.issuer]
            if cached.expires_at > self._clock() - config.leeway:
                return self._with_known_names(digest, cached)
            raise Unauthenticated("token expired", unverified_subject=cached.subject)
        header, claims = self._parse(token)
        try:
            identity = await self._verify(token, digest, header, claims)
        except Unauthenticated as error:
            error.unverified_subject = self._claimed_subject(claims)
            raise
        # Once per token validation (not per request): record the name, learn the person's others.
        names = await self.aliases.observe(identity.issuer, identity.subject, identity.user)
        names |= self._names.get(identity.person, frozenset())  # names only grow, whatever order answers come in
        self._names[identity.person] = names
        identity = replace(identity, aliases=names - {identity.user})
        self._cache[digest] = identity
        return identity

    def _with_known_names(self, digest: bytes, cached: Identity) -> Identity:
        known = self._names.get(cached.person)
        if known is None or known <= cached.names:
            return cached
        fresh = replace(cached, aliases=known - {cached.user})
        self._cache[digest] = fresh
        return fresh

    def _parse(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        segments = token.split(".")
        if len(segments) != 3 or not all(_SEGMENT.fullmatch(s) for s in segments):  # noqa: PLR2004 - a JWS has exactly three segments
            raise Unauthenticated("token is not three base64url segments")
        try:
            claims = _json_segment(segments[1])
        except (ValueError, TypeError, binascii.Error) as error:
            raise Unauthenticated(f"token payload: {error}") from None
        try:
            header = _json_segment(segments[0])
        except (ValueError, TypeError, binascii.Error) as error:
            subject = self._claimed_subject(claims)
            raise Unauthenticated(f"token header: {error}", unverified_subject=subject) from None
        return header, claims

    def _issuer_of(self, claims: Mapping[str, Any]) -> IssuerConfig | None:
        """The config of the token's ``iss``; None when it is unknown or not a string (a list, an object)."""
        issuer = claims.get("iss")
        return self._issuers.get(issuer) if isinstance(issuer, str) else None

    def _claimed_subject(self, claims: Mapping[str, Any]) -> str | None:
        """Best effort, for the audit record only: the unverified user claim or ``sub``."""
        config = self._issuer_of(claims)
        claim = config.user_claim if config else "sub"
        return _claim_str(claims, claim) or _claim_str(claims, "sub")

    async def _verify(self, token: str, digest: bytes, header: dict[str, Any], claims: dict[str, Any]) -> Identity:
        for name in FORBIDDEN_HEADERS:
            if name in header:
                raise Unauthenticated(f"token header {name!r} is not accepted")
        config = self._issuer_of(claims)
        if config is None:
            raise Unauthenticated("unknown issuer")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in config.algorithms:
            raise Unauthenticated(f"algorithm {str(alg)[:16]!r} is not allowed for this issuer")
        if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
            raise Unauthenticated("kid is not a short string")
        self._check_type(config, header.get("typ"))
        try:
            key = await self._key_sources[config.issuer].get_key(kid, alg)
        except KeyUnavailableError as error:
            raise Unauthenticated(error.reason) from None
        try:
            jwt.decode(token, key, algorithms=list(config.algorithms))
        except (JoseError, ValueError, TypeError) as error:
            raise Unauthenticated(f"signature: {error}") from None
        self._check_claims(config, claims)
        return self._identity(config, claims, digest)

    @staticmethod
    def _check_type(config: IssuerConfig, typ: object) -> None:
        allowed = ACCESS_TOKEN_TYPES | (ID_TOKEN_TYPES if config.allow_id_tokens else set())
        if typ is None and config.allow_id_tokens:
            return
        if not isinstance(typ, str) or typ.lower() not in allowed:
            raise Unauthenticated(f"token typ {str(typ)[:32]!r} is not accepted")

    def _check_claims(self, config: IssuerConfig, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=config.leeway,
            iss={"essential": True, "value": config.issuer},
            aud={"essential": True, "value": config.audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
        )
        try:
            registry.validate(claims)
        except ClaimError as error:
            raise Unauthenticated(f"claim {error.claim!r}: {error.description}") from None
        except JoseError as error:
            raise Unauthenticated(f"claims: {error}") from None
        if claims["exp"] - claims["iat"] > config.max_token_lifetime:
            raise Unauthenticated("token lifetime over the issuer's maximum")

    @staticmethod
    def _identity(config: IssuerConfig, claims: dict[str, Any], digest: bytes) -> Identity:
        return Identity(
            user=user_name(config, claims),
            groups=group_names(config, claims),
            subject=claims["sub"],
            issuer=config.issuer,
            token_id=claims.get("jti"),
            token_hash=digest.hex()[:16],
            expires_at=float(claims["exp"]),
        )
