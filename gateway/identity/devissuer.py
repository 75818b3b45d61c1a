"""The built-in dev issuer (``GATEWAY_DEV_MODE=1`` only).

It lets a newcomer try the gateway without an IdP: ``gateway dev-token`` mints
``at+jwt`` access tokens with a local private key, and the gateway validates
them through the same ``TokenValidator`` as real tokens. The issuer is its own
``KeySource`` (keys from memory, no HTTP round trip to itself); the API may also
serve ``discovery_document()`` and ``jwks()`` under ``/dev-issuer``.

Refusing dev mode off loopback is the settings' job; this module only mints
and serves keys.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, RSAKey

from gateway.errors import ConfigError
from gateway.identity.oidc import MIN_RSA_BITS, IssuerConfig, KeyUnavailableError, PublicKey, key_fits
from gateway.identity.subjects import canonical_name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

DEV_ISSUER_PATH = "/dev-issuer"
MAX_DEV_LIFETIME = 86400


def dev_issuer_url(port: int, host: str = "127.0.0.1") -> str:
    """Return the dev issuer's identifier for a gateway listening on ``host:port``."""
    return f"http://{host}:{port}{DEV_ISSUER_PATH}"


def load_or_create_key(path: Path) -> ECKey | RSAKey:
    """Load the dev signing key (PEM) from ``path``, creating an EC P-256 key there if absent.

    The file (and a missing directory, 0700) is created with mode 0600; an existing file readable by group or
    others is refused, as is anything but an EC P-256 or RSA (>= 2048 bits) key.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: never follow or reuse a file someone else put there in between.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _load_key(path)
    key = ECKey.generate_key("P-256", private=True)
    with os.fdopen(fd, "wb") as file:
        file.write(key.as_pem(private=True))
    return key


def _load_key(path: Path) -> ECKey | RSAKey:
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode) or mode & 0o077:
        raise ConfigError(f"dev issuer key {path} must be a regular file with mode 0600")
    data = path.read_bytes()
    for key_type in (ECKey, RSAKey):
        try:
            key = key_type.import_key(data)
        except (JoseError, ValueError, TypeError):
            continue
        if not key.is_private:
            break
        if isinstance(key, ECKey) and key.curve_name == "P-256":
            return key
        if isinstance(key, RSAKey) and key.private_key.key_size >= MIN_RSA_BITS:  # type: ignore[union-attr]  # joserfc types the private key as a union of every kind
            return key
        break
    raise ConfigError(f"dev issuer key {path} is not an EC P-256 or RSA >= 2048 private key")


class DevIssuer:
    """Mints dev tokens and serves its own public key (a ``KeySource``)."""

    def __init__(
        self,
        issuer: str,
        private_key: ECKey | RSAKey,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.alg = "ES256" if isinstance(private_key, ECKey) else "RS256"
        self._kid = private_key.thumbprint()
        params: KeyParameters = {"kid": self._kid, "alg": self.alg, "use": "sig"}
        self._private = type(private_key).import_key(private_key.as_dict(private=True), params)
        self._public: PublicKey = type(private_key).import_key(private_key.as_dict(private=False), params)
        self._clock = clock

    @classmethod
    def from_key_file(cls, issuer: str, path: Path, *, clock: Callable[[], float] = time.time) -> DevIssuer:
        """Build the dev issuer with the key in ``path`` (created 0600 if absent)."""
        return cls(issuer, load_or_create_key(path), clock=clock)

    def issuer_config(self, audience: str) -> IssuerConfig:
        """Return the ``IssuerConfig`` that trusts this issuer for ``audience``."""
        return IssuerConfig(issuer=self.issuer, audience=audience, algorithms=(self.alg,))

    def mint(
        self,
        user: str,
        groups: Sequence[str] = (),
        *,
        audience: str,
        lifetime: int = 3600,
    ) -> str:
        """Mint an ``at+jwt`` access token for ``user`` (``sub`` and an asserted ``email``).

        ``ValueError`` when ``user`` or a group is not a usable name (``gateway.identity.subjects``):
        the gateway would refuse the token anyway.
        """
        self.check_names(user, groups)
        if not 0 < lifetime <= MAX_DEV_LIFETIME:
            raise ValueError(f"lifetime must be between 1 and {MAX_DEV_LIFETIME} seconds")
        now = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "email": user,
            "email_verified": True,  # the dev issuer vouches for the names it is given (dev mode only)
            "groups": list(groups),
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        header = {"alg": self.alg, "kid": self._kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, self._private, algorithms=[self.alg])

    @staticmethod
    def check_names(user: str, groups: Sequence[str] = ()) -> None:
        """``ValueError`` unless ``user`` and every group are names the gateway accepts."""
        try:
            canonical_name(user)
        except ValueError as exc:
            raise ValueError(f"user {user!r}: {exc}") from None
        for group in groups:
            try:
                canonical_name(group, kind="group")
            except ValueError as exc:
                raise ValueError(f"group {group!r}: {exc}") from None

    @property
    def has_keys(self) -> bool:
        """Whether a key is loaded: always, the key is in memory."""
        return True

    async def get_key(self, kid: str | None, alg: str) -> PublicKey:
        """Return the public key if ``kid`` and ``alg`` are this issuer's."""
        if kid not in (None, self._kid) or not key_fits(self._public, alg):
            raise KeyUnavailableError("no dev issuer key fits kid/alg")
        return self._public

    def jwks(self) -> dict[str, Any]:
        """Return the public JWKS, as served at ``/dev-issuer/jwks``."""
        return {"keys": [self._public.as_dict(private=False)]}

    def discovery_document(self) -> dict[str, Any]:
        """Return the discovery document for ``/dev-issuer/.well-known/openid-configuration``."""
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            # The console's sign-in (gateway/identity/devcodes.py): authorization code with PKCE.
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "token_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": [self.alg],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "grant_types_supported": ["authorization_code"],
        }
