"""Token validation against a real OIDC provider (SECURITY rules 1-7).

The gateway's ``JwksCache`` does real discovery and JWKS fetches over HTTP
from ``tests/oidc/provider.mjs``; hostile tokens are signed with the
provider's own keys (so only the rule under test can reject them) or with an
attacker's key. No mocks: fetch failures come from a stopped provider or a
tiny local HTTP server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_crypto
from cryptography.x509.oid import NameOID
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from oidcfixture import (
    GATEWAY_AUDIENCE,
    OidcProvider,
    b64url,
    generate_keys,
    running_provider,
)

from gateway.errors import ConfigError, PayloadTooLarge, Unauthenticated
from gateway.identity.fakekeys import StaticKeys
from gateway.identity.oidc import IssuerConfig, JwksCache, key_fits, parse_jwks
from gateway.identity.tokens import MAX_TOKEN_BYTES, Identity, TokenValidator

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def attacker() -> RSAKey:
    """An RSA key the provider has never seen (kid ``attacker``)."""
    return RSAKey.generate_key(2048, parameters={"kid": "attacker"})


class FakeClock:
    """A monotonic clock the test moves by hand (JWKS TTL and cooldown)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class RequestLog:
    """Counts the requests a ``JwksCache`` sends, by path (an httpx event hook)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def count(self, suffix: str) -> int:
        """Requests whose path ends with ``suffix``."""
        return sum(p.endswith(suffix) for p in self.paths)


@contextlib.asynccontextmanager
async def gateway_for(
    provider: OidcProvider,
    *,
    clock: Callable[[], float] = time.monotonic,
    requests: RequestLog | None = None,
    issuer: str | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[TokenValidator, JwksCache]]:
    """A validator trusting ``provider`` through a real ``JwksCache``."""
    config = IssuerConfig(issuer=issuer or provider.issuer, audience=provider.audience, **overrides)
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [requests]} if requests else {}
    async with httpx.AsyncClient(event_hooks=hooks) as client:
        cache = JwksCache(config, client=client, clock=clock)
        yield TokenValidator([config], {config.issuer: cache}), cache


async def rejected(validator: TokenValidator, token: str) -> Unauthenticated:
    """Validate ``token``, expecting ``Unauthenticated``; return the error."""
    with pytest.raises(Unauthenticated) as caught:
        await validator.validate(token)
    return caught.value


# --- the happy path -------------------------------------------------------------------


async def test_real_token_validates(oidc_provider: OidcProvider) -> None:
    """A client_credentials token from the provider becomes the right Identity."""
    token = oidc_provider.token("alice")
    async with gateway_for(oidc_provider) as (validator, _):
        identity = await validator.validate(token)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert identity == Identity(
        user="alice@example.com",
        groups=frozenset({"analysts", "engineers"}),
        subject="alice",
        issuer=oidc_provider.issuer,
        token_id=claims["jti"],
        token_hash=hashlib.sha256(token.encode()).hexdigest()[:16],
        expires_at=float(claims["exp"]),
    )
    assert identity.subjects == {
        "user:alice@example.com",
        "group:analysts",
        "group:engineers",
    }


async def test_user_without_groups(oidc_provider: OidcProvider) -> None:
    """A user whose token has an empty groups list gets no groups."""
    async with gateway_for(oidc_provider) as (validator, _):
        identity = await validator.validate(oidc_provider.token("bob"))
    assert identity.user == "bob@example.com"
    assert identity.groups == frozenset()


async def test_no_silent_fallback_to_sub(oidc_provider: OidcProvider) -> None:
    """Without the user claim (email) and no fallback configured, the token is refused, never named by ``sub``."""
    token = oidc_provider.forge(oidc_provider.claims(drop=["email", "groups"]))
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, token)
    assert error.reason == "token has no 'email' claim (and the issuer has no fallback_claim)"
    assert error.unverified_subject == "alice"


async def test_configured_user_and_groups_claims(oidc_provider: OidcProvider) -> None:
    """``user_claim``/``groups_claim`` pick other claims; a single group string is one group."""
    claims = oidc_provider.claims(preferred_username="al", roles="db-admins")
    async with gateway_for(oidc_provider, user_claim="preferred_username", groups_claim="roles") as (validator, _):
        identity = await validator.validate(oidc_provider.forge(claims))
    assert (identity.user, identity.groups) == ("al", frozenset({"db-admins"}))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("groups", {"admin": True}),
        ("groups", ["ok", 7]),
        ("groups", 1),
        ("groups", ["ok", ""]),
        ("groups", ["a\u200bdmins"]),
        ("email", ["a@b"]),
        ("email", ""),
        ("email", "a b@example.com"),
        ("email", "bob\u2028@example.com"),
        ("email", "\u202ebob@example.com"),
    ],
)
async def test_malformed_user_or_groups_claim_rejected(oidc_provider: OidcProvider, name: str, value: object) -> None:
    """A groups claim that is not strings, or a user or group name failing the name rules, fails closed."""
    change: dict[str, Any] = {name: value}
    token = oidc_provider.forge(oidc_provider.claims(**change))
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, token)
    assert name in error.reason


async def test_es256_token_validates_with_ec_key(oidc_provider: OidcProvider) -> None:
    """An ES256 token signed with the provider's EC key (kid ec-1) validates."""
    header = {"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}
    token = oidc_provider.forge(header=header, key=oidc_provider.ec_key)
    async with gateway_for(oidc_provider) as (validator, _):
        assert (await validator.validate(token)).subject == "alice"


async def test_typ_variants_accepted(oidc_provider: OidcProvider) -> None:
    """``typ`` is matched case-insensitively, and ``application/at+jwt`` is accepted."""
    async with gateway_for(oidc_provider) as (validator, _):
        for typ in ("AT+JWT", "application/at+jwt"):
            header = {"alg": "RS256", "typ": typ, "kid": "rsa-1"}
            await validator.validate(oidc_provider.forge(header=header))


# --- algorithms and keys (rules 2, 3) -------------------------------------------------


def test_config_refuses_weak_algorithms_and_settings() -> None:
    """Issuer config refuses none, HS*, leeway over 60 s, cooldown under 60 s, http issuers."""
    good: dict[str, Any] = {"issuer": "https://idp.example", "audience": "gw"}
    bad: dict[str, Any]
    for bad in (
        {"algorithms": ("none",)},
        {"algorithms": ("RS256", "HS256")},
        {"algorithms": ()},
        {"leeway": 61},
        {"jwks_cooldown": 59},
        {"issuer": "http://idp.example"},
        {"audience": ""},
    ):
        with pytest.raises(ConfigError):
            IssuerConfig(**{**good, **bad})
    IssuerConfig(**good, leeway=60, jwks_cooldown=60)


async def test_alg_none_rejected(oidc_provider: OidcProvider) -> None:
    """An unsigned token (``alg: none``, empty signature) is rejected."""
    header = b64url(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    payload = b64url(json.dumps(oidc_provider.claims()).encode())
    async with gateway_for(oidc_provider) as (validator, _):
        for token in (f"{header}.{payload}.", f"{header}.{payload}.AA"):
            await rejected(validator, token)


async def test_hs256_with_rsa_public_key_rejected(oidc_provider: OidcProvider) -> None:
    """Key confusion: HS256 keyed with the provider's RSA public key (PEM or JWKS JSON) fails."""
    public = oidc_provider.rsa_key
    secrets = [public.as_pem(private=False), json.dumps(public.as_dict(private=False)).encode()]
    async with gateway_for(oidc_provider) as (validator, _):
        for secret in secrets:
            header = {"alg": "HS256", "typ": "at+jwt", "kid": "rsa-1"}
            error = await rejected(validator, oidc_provider.forge(header=header, key=secret))
            assert "algorithm" in error.reason


async def test_key_alg_must_fit_token_alg(oidc_provider: OidcProvider) -> None:
    """A key published for RS256 is not used for PS256, although the signature would verify."""
    header = {"alg": "PS256", "typ": "at+jwt", "kid": "rsa-1"}
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, oidc_provider.forge(header=header))
    assert "fits" in error.reason


async def test_ec_key_curve_must_fit(oidc_provider: OidcProvider) -> None:
    """An ES384 token naming the P-256 key is rejected (kty/crv/alg must fit)."""
    header = {"alg": "ES384", "typ": "at+jwt", "kid": "ec-1"}
    async with gateway_for(oidc_provider, algorithms=("ES256", "ES384")) as (validator, _):
        error = await rejected(validator, oidc_provider.forge(header=header, key=oidc_provider.ec_key))
    assert "fits" in error.reason


def test_key_fits_kty_curve_alg_and_use() -> None:
    """Without an ``alg`` on the key, kty and curve still decide; ``use`` must be sig or absent."""
    p256 = ECKey.generate_key("P-256")
    p384 = ECKey.generate_key("P-384")
    rsa = RSAKey.generate_key(2048)
    assert key_fits(p256, "ES256")
    assert not key_fits(p256, "ES384")
    assert key_fits(p384, "ES384")
    assert not key_fits(p256, "RS256")
    assert key_fits(rsa, "PS256")
    assert not key_fits(rsa, "ES256")
    assert not key_fits(RSAKey.import_key(rsa.as_dict(), {"use": "enc"}), "RS256")
    assert not key_fits(RSAKey.import_key(rsa.as_dict(), {"alg": "RS256"}), "PS256")


def test_parse_jwks_keeps_only_public_signing_keys() -> None:
    """JWKS parsing drops oct, ``use: enc``, short RSA and long-kid keys, and private parts."""
    rsa = RSAKey.generate_key(2048, parameters={"kid": "good"})
    weak = rsa_crypto.generate_private_key(65537, 1024)  # noqa: S505 - must be refused
    short_n = weak.public_key().public_numbers().n
    entries: list[Any] = [
        rsa.as_dict(private=True),
        OctKey.generate_key(256, parameters={"kid": "hmac"}).as_dict(private=True),
        {**rsa.as_dict(private=False), "kid": "enc", "use": "enc"},
        {**rsa.as_dict(private=False), "kid": "k" * 129},
        {**rsa.as_dict(private=False), "kid": "verify-not", "key_ops": ["encrypt"]},
        {"kty": "RSA", "kid": "short", "e": "AQAB", "n": b64url(short_n.to_bytes(128, "big"))},
        {"kty": "EC", "crv": "P-256", "x": "bad", "y": "bad", "kid": "broken"},
        "not a key",
    ]
    keys = parse_jwks({"keys": entries})
    assert [k.kid for k in keys] == ["good"]
    assert not keys[0].is_private


# --- token headers (rules 3, 5) -------------------------------------------------------


class TinyServer:
    """A loopback HTTP server with fixed routes that records every request it gets."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes, float]]) -> None:
        self.routes = routes
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                status, headers, body, delay = outer.routes.get(self.path, (404, {}, b"", 0.0))
                time.sleep(delay)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    if value:  # an empty value leaves the header out (body ends at close)
                        self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed_der(key: RSAKey) -> bytes:
    """A self-signed X.509 certificate for ``key`` (for an ``x5c`` header)."""
    private = key.private_key
    assert private is not None
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("member", ["jku", "x5u", "x5c", "jwk"])
@pytest.mark.parametrize("signer", ["attacker", "provider"])
async def test_key_location_headers_rejected_and_never_fetched(
    oidc_provider: OidcProvider, attacker: RSAKey, member: str, signer: str
) -> None:
    """Tokens with jku/x5u/x5c/jwk are rejected, even if validly signed; nothing is fetched.

    The attacker variant is the real attack (the header names the attacker's key);
    the provider-signed variant would pass every other check, so only the header
    rule rejects it.
    """
    attacker_jwks = json.dumps({"keys": [attacker.as_dict(private=False)]}).encode()
    with TinyServer({"/jwks": (200, {"Content-Type": "application/json"}, attacker_jwks, 0)}) as ev:
        value: Any = {
            "jku": f"{ev.url}/jwks",
            "x5u": f"{ev.url}/cert.pem",
            "x5c": [base64.b64encode(self_signed_der(attacker)).decode()],
            "jwk": attacker.as_dict(private=False),
        }[member]
        key = attacker if signer == "attacker" else oidc_provider.rsa_key
        kid = attacker.kid if signer == "attacker" else "rsa-1"
        header = {"alg": "RS256", "typ": "at+jwt", "kid": kid, member: value}
        async with gateway_for(oidc_provider) as (validator, _):
            error = await rejected(validator, oidc_provider.forge(header=header, key=key))
        assert member in error.reason
        assert ev.requests == []


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "crit": ["exp"], "exp": 1},
        {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "b64": False, "crit": ["b64"]},
        {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1", "b64": False},
    ],
    ids=["crit", "b64-false-crit", "b64-false"],
)
async def test_crit_and_b64_headers_rejected(oidc_provider: OidcProvider, header: dict[str, Any]) -> None:
    """``crit`` and ``b64`` headers are refused before decoding, though validly signed."""
    async with gateway_for(oidc_provider) as (validator, _):
        await rejected(validator, oidc_provider.forge(header=header))


async def test_duplicate_claim_members_rejected(oidc_provider: OidcProvider) -> None:
    """A validly signed payload with two ``sub`` members is rejected (parsers disagree on them)."""
    claims = json.dumps(oidc_provider.claims())[:-1] + ', "sub": "dave"}'
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, oidc_provider.forge(claims))
    assert "duplicate" in error.reason


async def test_duplicate_header_members_rejected(oidc_provider: OidcProvider) -> None:
    """A validly signed header with two ``typ`` members is rejected."""
    header = '{"alg": "RS256", "typ": "JWT", "kid": "rsa-1", "typ": "at+jwt"}'
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, oidc_provider.forge(header=header))
    assert "duplicate" in error.reason


async def test_id_token_typ_needs_opt_in(oidc_provider: OidcProvider) -> None:
    """``typ: JWT`` or no ``typ`` is refused unless the issuer allows ID tokens."""
    typed = oidc_provider.forge(header={"alg": "RS256", "typ": "JWT", "kid": "rsa-1"})
    untyped = oidc_provider.forge(header={"alg": "RS256", "kid": "rsa-1"})
    async with gateway_for(oidc_provider) as (validator, _):
        for token in (typed, untyped):
            assert "typ" in (await rejected(validator, token)).reason
    async with gateway_for(oidc_provider, allow_id_tokens=True) as (validator, _):
        for token in (typed, untyped):
            await validator.validate(token)
        wrong = oidc_provider.forge(header={"alg": "RS256", "typ": "dpop+jwt", "kid": "rsa-1"})
        await rejected(validator, wrong)


async def test_long_kid_rejected_without_fetch(oidc_provider: OidcProvider) -> None:
    """A ``kid`` over 128 characters is refused without any JWKS refresh."""
    requests = RequestLog()
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "k" * 129}
    async with gateway_for(oidc_provider, requests=requests) as (validator, _):
        await rejected(validator, oidc_provider.forge(header=header))
    assert requests.paths == []


# --- structure (rule 5) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "@@@.###.$$$",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln=",
        "e30.e30.",
        "bm90IGpzb24.e30.c2ln",
        "WyJhbGciXQ.e30.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOk5hTn0.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.gA.c2ln",
        "eyJhbGciOiJSUzI1NiJ9.e30.é",
    ],
)
async def test_malformed_tokens_rejected(oidc_provider: OidcProvider, token: str) -> None:
    """Not three non-empty base64url segments of JSON objects -> Unauthenticated."""
    async with gateway_for(oidc_provider) as (validator, _):
        await rejected(validator, token)


async def test_non_json_constants_rejected(oidc_provider: OidcProvider) -> None:
    """A validly signed payload using NaN/Infinity (not JSON) is rejected."""
    claims = json.dumps(oidc_provider.claims())[:-1] + ', "ratio": NaN}'
    async with gateway_for(oidc_provider) as (validator, _):
        assert "JSON" in (await rejected(validator, oidc_provider.forge(claims))).reason


async def test_stripped_signature_rejected(oidc_provider: OidcProvider) -> None:
    """A real token without its signature (or with an empty one) is rejected."""
    header, payload, _ = oidc_provider.token().split(".")
    async with gateway_for(oidc_provider) as (validator, _):
        for token in (f"{header}.{payload}.", f"{header}.{payload}"):
            await rejected(validator, token)


async def test_tampered_payload_rejected(oidc_provider: OidcProvider) -> None:
    """Swapping in a payload with more groups under the original signature fails."""
    header, _, signature = oidc_provider.token().split(".")
    payload = b64url(json.dumps(oidc_provider.claims(groups=["db-admins"])).encode())
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, f"{header}.{payload}.{signature}")
    assert "signature" in error.reason


async def test_oversized_token_is_payload_too_large(oidc_provider: OidcProvider) -> None:
    """A token over 8 KB raises PayloadTooLarge (413) before any parsing or fetching."""
    requests = RequestLog()
    claims = oidc_provider.claims(padding="x" * MAX_TOKEN_BYTES)
    async with gateway_for(oidc_provider, requests=requests) as (validator, _):
        with pytest.raises(PayloadTooLarge):
            await validator.validate(oidc_provider.forge(claims))
    assert requests.paths == []


# --- claims (rule 6) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"exp": -120, "iat": -420}, "expired"),
        ({"nbf": 120}, "nbf"),
        ({"iat": 120, "exp": 420}, "iat"),
        ({"exp": 86_400 + 60}, "lifetime"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"iss": "ISSUER/"}, "issuer"),
        ({"aud": "https://other.example"}, "aud"),
        ({"aud": ["https://other.example", "x"]}, "aud"),
        ({"sub": ""}, "sub"),
        ({"sub": 42}, "sub"),
        ({"exp": "tomorrow"}, "exp"),
    ],
)
async def test_bad_claims_rejected(oidc_provider: OidcProvider, change: dict[str, Any], reason: str) -> None:
    """Expired, not yet valid, future iat, too long, wrong iss/aud, bad sub/exp: rejected."""
    now = int(time.time())
    claims = oidc_provider.claims()
    for name, value in change.items():
        if name in ("exp", "iat", "nbf") and isinstance(value, int):
            claims[name] = now + value
        elif value == "ISSUER/":
            claims[name] = oidc_provider.issuer + "/"
        else:
            claims[name] = value
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, oidc_provider.forge(claims))
    assert reason in error.reason
    assert error.unverified_subject == "alice@example.com" or reason == "issuer"


@pytest.mark.parametrize("missing", ["sub", "exp", "iat", "aud", "iss"])
async def test_missing_required_claim_rejected(oidc_provider: OidcProvider, missing: str) -> None:
    """``sub``, ``exp``, ``iat``, ``aud`` and ``iss`` are all required."""
    async with gateway_for(oidc_provider) as (validator, _):
        await rejected(validator, oidc_provider.forge(oidc_provider.claims(drop=[missing])))


async def test_leeway_and_audience_list(oidc_provider: OidcProvider) -> None:
    """Within the 30 s leeway exp/nbf/iat pass; an ``aud`` list containing ours passes."""
    now = int(time.time())
    claims = oidc_provider.claims(
        exp=now - 10, iat=now - 100, nbf=now + 10, aud=["https://other.example", GATEWAY_AUDIENCE]
    )
    async with gateway_for(oidc_provider) as (validator, _):
        await validator.validate(oidc_provider.forge(claims))
    async with gateway_for(oidc_provider, leeway=0) as (validator, _):
        await rejected(validator, oidc_provider.forge(claims))


async def test_max_token_lifetime_is_configurable(oidc_provider: OidcProvider) -> None:
    """With ``max_token_lifetime=600`` a 601 s token is rejected and a 600 s one accepted."""
    now = int(time.time())
    async with gateway_for(oidc_provider, max_token_lifetime=600) as (validator, _):
        await validator.validate(oidc_provider.forge(oidc_provider.claims(iat=now, exp=now + 600)))
        await rejected(validator, oidc_provider.forge(oidc_provider.claims(iat=now, exp=now + 601)))


async def test_unknown_issuer_is_not_fetched(oidc_provider: OidcProvider, attacker: RSAKey) -> None:
    """A token naming an issuer the gateway does not trust causes no request anywhere."""
    requests = RequestLog()
    token = oidc_provider.forge(oidc_provider.claims(iss="http://127.0.0.1:1"), key=attacker)
    async with gateway_for(oidc_provider, requests=requests) as (validator, _):
        assert "issuer" in (await rejected(validator, token)).reason
    assert requests.paths == []


@pytest.mark.parametrize("issuer", [["{issuer}"], {"iss": "{issuer}"}, 1, None, True])
async def test_an_issuer_that_is_not_a_string_is_unknown(oidc_provider: OidcProvider, issuer: object) -> None:
    """``iss`` as a list, object, number, null or boolean is a 401 "unknown issuer", never an unhashable-key crash."""
    shaped = json.loads(json.dumps(issuer).replace("{issuer}", oidc_provider.issuer))
    token = oidc_provider.forge(oidc_provider.claims(iss=shaped))
    async with gateway_for(oidc_provider) as (validator, _):
        error = await rejected(validator, token)
    assert error.reason == "unknown issuer"
    assert error.unverified_subject == "alice"  # the audit record still names the claimed subject (sub)


# --- verified-token cache -------------------------------------------------------------


async def test_repeated_token_is_cached_until_exp(oidc_provider: OidcProvider) -> None:
    """A repeated token skips verification, but a cached token is not served past ``exp``."""
    wall = [time.time()]
    config = IssuerConfig(issuer=oidc_provider.issuer, audience=GATEWAY_AUDIENCE)
    now = int(wall[0])
    token = oidc_provider.forge(oidc_provider.claims(iat=now, exp=now + 60))
    # The fake key source beside the protocol: the provider's public keys, look-ups counted.
    keys = StaticKeys(
        RSAKey.import_key(k.as_dict(private=False))
        if isinstance(k, RSAKey)
        else ECKey.import_key(k.as_dict(private=False))
        for k in oidc_provider.private_jwks.keys
    )
    validator = TokenValidator([config], {config.issuer: keys}, clock=lambda: wall[0])
    first = await validator.validate(token)
    assert await validator.validate(token) is first
    assert keys.lookups == 1
    wall[0] = now + 60 + config.leeway + 1
    error = await rejected(validator, token)
    assert "expired" in error.reason


# --- JWKS refresh, cooldown and resilience (rule 4) ----------------------------------


async def test_unknown_kid_refreshes_once_per_cooldown(oidc_provider: OidcProvider, attacker: RSAKey) -> None:
    """Unknown kids cause one single-flight JWKS refresh per 60 s cooldown, then rejection."""
    clock, requests = FakeClock(), RequestLog()
    header = {"alg": "RS256", "typ": "at+jwt", "kid": "rotated-2"}
    unknown = oidc_provider.forge(header=header, key=attacker)
    async with gateway_for(oidc_provider, clock=clock, requests=requests) as (validator, cache):
        await validator.validate(oidc_provider.token())
        assert requests.count("/jwks") == 1
        await rejected(validator, unknown)
        assert requests.count("/jwks") == 1  # keys fetched this instant: no refetch
        clock.now += 61
        results = await asyncio.gather(*(validator.validate(unknown) for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, Unauthenticated) for r in results)
        assert requests.count("/jwks") == 2  # one refresh for twenty concurrent requests
        clock.now += 59
        await rejected(validator, unknown)
        assert requests.count("/jwks") == 2  # still inside the cooldown
        clock.now += 2
        await rejected(validator, unknown)
        assert requests.count("/jwks") == 3
        assert cache.refresh_count == 3


async def test_failed_refresh_keeps_last_good_keys() -> None:
    """While the IdP is down the last good keys keep serving; a rotated key is picked up later."""
    clock, keys = FakeClock(), generate_keys()
    with running_provider(keys) as provider:
        port, config_issuer = provider.port, provider.issuer
        async with gateway_for(provider, clock=clock) as (validator, cache):
            assert await cache.ready()
            await validator.validate(provider.token())
            provider.stop()  # the IdP goes away
            clock.now += 3600 + 61  # past the refresh TTL and the cooldown
            await validator.validate(provider.forge())
            assert cache.has_keys
            assert cache.refresh_count == 2  # the failed refresh was attempted
            new = RSAKey.generate_key(2048, parameters={"kid": "rsa-2", "use": "sig"})
            rotated = KeySet([*keys.keys, new])
            with running_provider(rotated, port=port) as restarted:
                assert restarted.issuer == config_issuer
                header = {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-2"}
                token = restarted.forge(header=header, key=new)
                await rejected(validator, token)  # inside the cooldown: no refetch yet
                clock.now += 61
                assert (await validator.validate(token)).subject == "alice"


async def test_cache_never_empty_after_bad_jwks(oidc_provider: OidcProvider) -> None:
    """A JWKS with no usable key is a failed refresh: the previous keys stay."""
    clock = FakeClock()
    good = json.dumps(oidc_provider.private_jwks.as_dict(private=False)).encode()
    routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
    with TinyServer(routes) as idp:
        discovery = {"issuer": idp.url, "jwks_uri": f"{idp.url}/jwks"}
        routes["/.well-known/openid-configuration"] = (
            200,
            {"Content-Type": "application/json"},
            json.dumps(discovery).encode(),
            0,
        )
        routes["/jwks"] = (200, {"Content-Type": "application/json"}, good, 0)
        config = IssuerConfig(issuer=idp.url, audience=GATEWAY_AUDIENCE)
        async with httpx.AsyncClient() as client:
            cache = JwksCache(config, client=client, clock=clock)
            assert await cache.ready()
            routes["/jwks"] = (200, {"Content-Type": "application/json"}, b'{"keys": []}', 0)
            clock.now += 3661
            assert (await cache.get_key("rsa-1", "RS256")).kid == "rsa-1"
            assert cache.refresh_count == 2


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("jwks_route", "loads"),
    [
        ((200, JSON, b"JWKS", 0.0), True),
        ((200, {"Content-Type": "application/jwk-set+json"}, b"JWKS", 0.0), True),
        ((302, {"Location": "REAL_JWKS_URL"}, b"", 0.0), False),
        ((200, {"Content-Type": "text/html"}, b"JWKS", 0.0), False),
        ((200, {"Content-Type": ""}, b"JWKS", 0.0), False),
        ((200, JSON, b"PADDED", 0.0), False),
        ((200, {**JSON, "Content-Length": ""}, b"PADDED", 0.0), False),
        ((200, JSON, b"JWKS", 2.0), False),
        ((200, JSON, b"{not json", 0.0), False),
        ((500, JSON, b"JWKS", 0.0), False),
    ],
    ids=[
        "control",
        "jwk-set-json",
        "redirect",
        "html",
        "no-content-type",
        "oversized",
        "oversized-no-length",
        "slow",
        "bad-json",
        "http-500",
    ],
)
async def test_jwks_fetch_rules(
    oidc_provider: OidcProvider,
    jwks_route: tuple[int, dict[str, str], bytes, float],
    loads: bool,  # noqa: FBT001 - a parametrized expectation
) -> None:
    """JWKS fetches follow no redirects, take JSON only, cap the size (256 KB) and time out.

    Every refused case serves the provider's real, valid JWKS (or redirects to it),
    so only the fetch rule under test can refuse it; the control cases load it.
    """
    status, headers, body, delay = jwks_route
    real = json.dumps(oidc_provider.private_jwks.as_dict(private=False)).encode()
    body = {b"JWKS": real, b"PADDED": real[:-1] + b" " * 300_000 + b"}"}.get(body, body)
    headers = {k: v.replace("REAL_JWKS_URL", f"{oidc_provider.issuer}/jwks") for k, v in headers.items()}
    routes = {"/jwks": (status, headers, body, delay)}
    with TinyServer(routes) as idp:
        discovery = {"issuer": idp.url, "jwks_uri": f"{idp.url}/jwks"}
        routes["/.well-known/openid-configuration"] = (200, JSON, json.dumps(discovery).encode(), 0)
        config = IssuerConfig(issuer=idp.url, audience=GATEWAY_AUDIENCE)
        async with httpx.AsyncClient() as client:
            cache = JwksCache(config, client=client, timeout=0.5)
            assert await cache.ready() is loads
            assert cache.has_keys is loads


@pytest.mark.parametrize("configured", ["http://localhost:{port}", "http://127.0.0.1:{port}/"])
async def test_discovery_issuer_must_match_exactly(oidc_provider: OidcProvider, configured: str) -> None:
    """Discovery whose ``issuer`` differs from the configured one (even by a slash) is refused."""
    requests = RequestLog()
    issuer = configured.format(port=oidc_provider.port)
    async with gateway_for(oidc_provider, issuer=issuer, requests=requests) as (_, cache):
        assert not await cache.ready()
    assert requests.count("/jwks") == 0


async def test_jwks_uri_must_be_https_off_loopback() -> None:
    """A discovery document pointing keys at plain http on another host is refused unfetched."""
    routes: dict[str, tuple[int, dict[str, str], bytes, float]] = {}
    with TinyServer(routes) as idp:
        discovery = {"issuer": idp.url, "jwks_uri": "http://keys.example/jwks"}
        routes["/.well-known/openid-configuration"] = (
            200,
            {"Content-Type": "application/json"},
            json.dumps(discovery).encode(),
            0,
        )
        config = IssuerConfig(issuer=idp.url, audience=GATEWAY_AUDIENCE)
        requests = RequestLog()
        async with httpx.AsyncClient(event_hooks={"request": [requests]}) as client:
            assert not await JwksCache(config, client=client).ready()
        assert requests.paths == ["/.well-known/openid-configuration"]


# --- logs (rule 7) --------------------------------------------------------------------


async def test_errors_never_carry_the_token(oidc_provider: OidcProvider) -> None:
    """401 reasons and details never contain the token or its signature."""
    real = oidc_provider.token()
    header, payload, signature = real.split(".")
    bad = [f"{header}.{payload}.{signature[:-4]}AAAA", oidc_provider.forge("{}")]
    async with gateway_for(oidc_provider) as (validator, _):
        for token in bad:
            error = await rejected(validator, token)
            for text in (error.reason, error.detail, str(error)):
                assert signature[:20] not in text
                assert payload[:20] not in text
            assert error.detail == "a valid bearer token is required"


@pytest.fixture(scope="module")
def ec_only_provider() -> Iterator[OidcProvider]:
    """A provider that signs access tokens with ES256."""
    keys = KeySet([ECKey.generate_key("P-256", parameters={"kid": "ec-9", "use": "sig"})])
    with running_provider(keys, access_token_alg="ES256") as provider:
        yield provider


async def test_real_es256_token_validates(ec_only_provider: OidcProvider) -> None:
    """A real ES256 access token from the provider validates (EC P-256 key from the JWKS)."""
    token = ec_only_provider.token("carol")
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == "ES256"
    async with gateway_for(ec_only_provider) as (validator, _):
        identity = await validator.validate(token)
    assert identity.groups == {"security"}
