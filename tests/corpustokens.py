"""Tokens for the attack corpus, forged from the recipes in ``tests/attacks/*.yaml``.

A recipe changes alice's valid token (``OidcProvider.claims``: sub alice,
group analysts) in one way and signs it with the provider's own keys (or a
stranger's, or none), so only the rule under test can refuse it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry
from oidcfixture import OidcProvider, b64url

_NOW = re.compile(r"^now([+-]\d+)?$")


def _times(value: Any, now: int, idp: OidcProvider) -> Any:
    if isinstance(value, str) and (match := _NOW.match(value)):
        return now + int(match.group(1) or 0)
    if isinstance(value, str):
        return value.replace("{iss}", idp.issuer).replace("{aud}", idp.audience)
    if isinstance(value, list):
        return [_times(v, now, idp) for v in value]
    if isinstance(value, dict):
        return {k: _times(v, now, idp) for k, v in value.items()}
    return value


def forge(idp: OidcProvider, recipe: Mapping[str, Any], stranger: RSAKey) -> str:
    """A token built from a recipe: claims and header over a valid default, signed, then mangled.

    ``claims``/``drop`` change alice's valid claims (``idp.claims``); ``header``
    changes ``{"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}`` (null drops a
    member); ``claims_json``/``header_json`` are verbatim JSON text; ``key`` is
    ``rsa``, ``ec``, ``stranger`` (not the provider's), ``hmac-public`` (HMAC
    with the RSA public key's PEM) or ``none``; ``sign_as`` the algorithm used
    to sign (default: the header's ``alg``); ``mangle`` one of ``_mangle``'s forms.
    """
    now = int(time.time())
    claims = idp.claims(drop=recipe.get("drop", ()), **_times(recipe.get("claims", {}), now, idp))
    claims_text = json.dumps(claims)
    if "claims_json" in recipe:
        claims_text = _times(str(recipe["claims_json"]), now, idp).replace("{now}", str(now))
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", **recipe.get("header", {})}
    header_text = json.dumps({k: v for k, v in header.items() if v is not None})
    if "header_json" in recipe:
        header_text = str(recipe["header_json"])
    alg = str(recipe.get("sign_as", header.get("alg") or "RS256"))
    keys: dict[str, Any] = {
        "rsa": idp.rsa_key,
        "ec": idp.ec_key,
        "stranger": stranger,
        "hmac-public": idp.rsa_key.as_pem(private=False),
        "none": b"",
    }
    default = "ec" if alg.startswith("ES") else "hmac-public" if alg.startswith("HS") else "rsa"
    signing_input = f"{b64url(header_text.encode())}.{b64url(claims_text.encode())}".encode()
    signature = _sign(signing_input, alg, keys[recipe.get("key", default)])
    return _mangle(f"{signing_input.decode()}.{b64url(signature)}", recipe.get("mangle"))


def _sign(signing_input: bytes, alg: str, key: Any) -> bytes:
    if alg.lower() == "none":
        return b""
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(key, signing_input, digest).digest()
    return bytes(JWSRegistry.algorithms[alg].sign(signing_input, key))


def _mangle(token: str, how: str | None) -> str:
    head, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2:-1] != "A" else "B") + signature[-1:]
    mangled: dict[str | None, Callable[[], str]] = {
        None: lambda: token,
        "two-segments": lambda: f"{head}.{payload}",
        "four-segments": lambda: f"{token}.{signature}",
        "empty-signature": lambda: f"{head}.{payload}.",
        "flipped-signature": lambda: f"{head}.{payload}.{flipped}",
        "padded": lambda: f"{head}=.{payload}=.{signature}=",
        "inner-space": lambda: f"{head}. {payload}.{signature}",
        "standard-base64": lambda: f"{head}.{payload}.{signature.replace('-', '+').replace('_', '/')}+/",
        "oversize": lambda: f"{head}.{payload}{b64url(b' ' * 9000)}.{signature}",
        "reversed": lambda: ".".join(reversed(token.split("."))),
        "header-only": lambda: head,
        "junk-signature": lambda: f"{head}.{payload}.AAAA",
    }
    return mangled[how]()
