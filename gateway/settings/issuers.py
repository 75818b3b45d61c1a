"""A trusted OIDC issuer's settings, and the rules for one: written once, here.

The settings validate an ``issuers:`` entry with these rules, and
``gateway.identity.oidc.IssuerConfig`` (built from the settings, or directly by
the dev issuer and the tests) checks the same constants and takes its defaults
from :data:`ISSUER_DEFAULTS`, so the file and the code cannot disagree on an
algorithm, a bound or a default.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator

from gateway.settings.common import FROZEN

# Asymmetric algorithms with RSA and EC keys: what the token validator can verify (no EdDSA: no OKP keys).
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
MAX_LEEWAY = 60  # seconds of clock skew tolerated on exp/nbf/iat
MAX_TOKEN_LIFETIME = 7 * 86400  # the longest exp - iat an issuer may be configured to accept
MIN_JWKS_COOLDOWN = 60.0  # seconds between two JWKS refetches forced by unknown kids
# A fallback claim's name goes into user names: a plain set without ':' or '@' (gateway.identity.names).
CLAIM_NAME_PATTERN = r"[A-Za-z0-9_.-]{1,64}"


class IssuerSettings(BaseModel):
    """One trusted OIDC issuer."""

    model_config = FROZEN
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256", "PS256")
    user_claim: str = "email"  # the name policies use; must be asserted (SECURITY rule 26, gateway.identity.names)
    groups_claim: str = "groups"
    allow_id_tokens: bool = False
    leeway: Annotated[int, Field(ge=0, le=MAX_LEEWAY)] = 30
    max_token_lifetime: Annotated[int, Field(gt=0, le=MAX_TOKEN_LIFETIME)] = 86400
    # Only for an IdP that never sends email_verified: take its email claim as asserted.
    assume_email_verified: bool = False
    # A claim naming tokens without user_claim, as "<claim>:<value>@<issuer>"; None: refuse them (401).
    fallback_claim: Annotated[str | None, Field(pattern=f"^{CLAIM_NAME_PATTERN}$")] = None

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in ALLOWED_ALGORITHMS]
        if bad or not value:
            msg = f"algorithms must be asymmetric (never none or HS*): refused {bad or 'empty list'}"
            raise ValueError(msg)
        return value


# Every default of an issuer entry (the required issuer and audience left unset): IssuerConfig's defaults.
ISSUER_DEFAULTS = IssuerSettings.model_construct()
