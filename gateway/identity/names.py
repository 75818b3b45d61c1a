"""A verified token's claims -> the canonical user name and groups the policies use (SECURITY rule 26).

The stable key of a person is (issuer, ``sub``); policies name people by the
*name used*, taken from the issuer's configured ``user_claim`` (default
``email``) and put in canonical form by ``gateway.identity.subjects.canonical_name``
(NFC, stripped, case-folded; controls, separators and format characters
refused). The rules, each failing with ``Unauthenticated`` (a 401 whose
reason is audited):

* **Asserted email.** When the user claim is ``email``, the issuer must
  assert it: ``email_verified`` is ``true`` (the JSON boolean, or the string
  ``"true"`` some IdPs send). An issuer that never sends the claim may be
  configured with ``assume_email_verified: true``; an explicit
  ``email_verified`` other than true is refused even then. For any other user
  claim (``preferred_username``, ``upn``, ``sub``...) there is no such claim
  to check: configuring it says the issuer controls that claim, so pick one
  users cannot change themselves.
* **No silent fallback.** A token without the user claim is refused, unless
  the issuer names a ``fallback_claim``. A name taken from the fallback is
  *qualified* so it can never be anyone else's name:
  ``<fallback_claim>:<value>@<issuer>``, where ``<value>`` keeps lower-case
  ASCII letters, digits and ``. _ ~ | -`` and writes every other character
  as ``%xx`` UTF-8 bytes (so case-folding cannot merge two values:
  ``00uAb`` is ``00u%41b``). Names from the user claim may not hold ``:``
  (no email address does unquoted), names from a fallback always do, and
  the issuer is part of every fallback name: a fallback name cannot collide
  with an email, nor with another issuer's fallback name.
* **Groups** come from ``groups_claim`` (a string or a list of strings), each
  in canonical group form; one unusable group refuses the token (dropping it
  silently could hide a group a revocation names).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from gateway.errors import Unauthenticated
from gateway.identity.subjects import canonical_name
from gateway.settings.issuers import CLAIM_NAME_PATTERN

if TYPE_CHECKING:
    from collections.abc import Mapping

    from gateway.identity.oidc import IssuerConfig

# A fallback claim's name goes into user names: keep it to a plain set without ':' or '@'.
FALLBACK_CLAIM = re.compile(CLAIM_NAME_PATTERN)
RESERVED = ":"  # marks a name built from a fallback claim; never in a name from the user claim
_KEPT = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._~|-")


def user_name(config: IssuerConfig, claims: Mapping[str, Any]) -> str:
    """The canonical name the policies know this token's person by; ``Unauthenticated`` if none is usable."""
    claim = config.user_claim
    if claim not in claims:
        if config.fallback_claim is None:
            raise Unauthenticated(f"token has no {claim!r} claim (and the issuer has no fallback_claim)")
        return _fallback(config, config.fallback_claim, claims)
    value = claims[claim]
    if not isinstance(value, str):
        raise Unauthenticated(f"claim {claim!r} is not a string")
    if claim == "email":
        _check_email_asserted(config, claims)
    name = _canonical(value, claim, "user")
    if RESERVED in name:
        raise Unauthenticated(f"claim {claim!r} holds {RESERVED!r}, which only names built from a fallback claim hold")
    return name


def group_names(config: IssuerConfig, claims: Mapping[str, Any]) -> frozenset[str]:
    """The canonical group names of the token (none without the groups claim)."""
    claim = config.groups_claim
    groups = claims.get(claim, [])
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise Unauthenticated(f"claim {claim!r} is not a list of strings")
    return frozenset(_canonical(g, claim, "group") for g in groups)


def fallback_name(claim: str, value: str, issuer: str) -> str:
    """``claim:value@issuer`` with ``value`` escaped so that no two values share a canonical form."""
    escaped = "".join(c if c in _KEPT else "".join(f"%{b:02x}" for b in c.encode()) for c in value)
    return canonical_name(f"{claim}:{escaped}@{issuer}")


def _fallback(config: IssuerConfig, claim: str, claims: Mapping[str, Any]) -> str:
    value = claims.get(claim)
    if not isinstance(value, str) or not value:
        raise Unauthenticated(f"token has neither {config.user_claim!r} nor the fallback claim {claim!r}")
    try:
        # Escaping (at most 4 bytes -> 12 characters each) can take the name past MAX_NAME.
        return fallback_name(claim, value, config.issuer)
    except ValueError as error:
        raise Unauthenticated(f"fallback claim {claim!r}: {error}") from None


def _check_email_asserted(config: IssuerConfig, claims: Mapping[str, Any]) -> None:
    if "email_verified" in claims:
        verified = claims["email_verified"]
        if verified is not True and verified != "true":  # `is`: 1 == True in Python, and 1 is not an assertion
            raise Unauthenticated("claim 'email': the issuer does not assert it (email_verified is not true)")
        return
    if not config.assume_email_verified:
        raise Unauthenticated("claim 'email': the issuer does not assert it (no email_verified claim)")


def _canonical(value: str, claim: str, kind: str) -> str:
    try:
        return canonical_name(value, kind="group" if kind == "group" else "user")
    except ValueError as error:
        raise Unauthenticated(f"claim {claim!r}: {error}") from None
