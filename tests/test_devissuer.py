"""The dev issuer: local key file, minted tokens, and its in-memory ``KeySource``."""

from __future__ import annotations

import stat
import time
from typing import TYPE_CHECKING

import pytest
from joserfc.jwk import ECKey, RSAKey

from gateway.errors import ConfigError, Unauthenticated
from gateway.identity.devissuer import DevIssuer, dev_issuer_url, load_or_create_key
from gateway.identity.oidc import KeyUnavailableError, parse_jwks
from gateway.identity.tokens import TokenValidator

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

AUDIENCE = "gateway"


@pytest.fixture
def dev(tmp_path: Path) -> DevIssuer:
    """A dev issuer for a gateway on port 8080, with its key in a fresh directory."""
    return DevIssuer.from_key_file(dev_issuer_url(8080), tmp_path / "keys" / "dev-issuer.pem")


def validator_for(dev: DevIssuer) -> TokenValidator:
    """A ``TokenValidator`` trusting only ``dev`` (keys from memory, no HTTP)."""
    return TokenValidator([dev.issuer_config(AUDIENCE)], {dev.issuer: dev})


async def test_dev_token_validates(dev: DevIssuer) -> None:
    """A minted dev token passes the real validator: user, groups, at+jwt, jti, exp."""
    token = dev.mint("alice@example.com", ["analysts", "engineers"], audience=AUDIENCE)
    identity = await validator_for(dev).validate(token)
    assert identity.user == "alice@example.com"
    assert identity.subject == "alice@example.com"
    assert identity.groups == {"analysts", "engineers"}
    assert identity.issuer == "http://127.0.0.1:8080/dev-issuer"
    assert identity.token_id
    assert identity.expires_at == pytest.approx(time.time() + 3600, abs=5)


async def test_dev_token_for_other_audience_rejected(dev: DevIssuer) -> None:
    """A dev token minted for another audience is rejected (the claims registry runs)."""
    token = dev.mint("alice@example.com", audience="someone-else")
    with pytest.raises(Unauthenticated):
        await validator_for(dev).validate(token)


async def test_expired_dev_token_rejected(tmp_path: Path) -> None:
    """A dev token minted two hours ago with a one-hour lifetime is expired."""
    key = load_or_create_key(tmp_path / "k.pem")
    past = DevIssuer(dev_issuer_url(8080), key, clock=lambda: time.time() - 7200)
    token = past.mint("alice@example.com", audience=AUDIENCE)
    with pytest.raises(Unauthenticated) as caught:
        await validator_for(DevIssuer(dev_issuer_url(8080), key)).validate(token)
    assert "exp" in caught.value.reason


async def test_token_of_another_dev_key_rejected(dev: DevIssuer, tmp_path: Path) -> None:
    """A token from a different dev key (e.g. another machine's) is not accepted."""
    other = DevIssuer.from_key_file(dev.issuer, tmp_path / "other.pem")
    with pytest.raises(Unauthenticated):
        await validator_for(dev).validate(other.mint("alice@example.com", audience=AUDIENCE))


def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    """The key file is created with mode 0600 and the same key is loaded next time."""
    path = tmp_path / "dev-issuer.pem"
    first = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(first, ECKey)
    assert first.curve_name == "P-256"
    assert load_or_create_key(path).thumbprint() == first.thumbprint()


def test_key_file_readable_by_others_refused(tmp_path: Path) -> None:
    """An existing key file readable by group or others is refused."""
    path = tmp_path / "dev-issuer.pem"
    load_or_create_key(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_or_create_key(path)


def test_key_file_with_wrong_key_refused(tmp_path: Path) -> None:
    """A P-384 key, or a public key only, is not a usable dev key."""
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(ECKey.generate_key("P-384").as_pem(private=True))
    public = tmp_path / "public.pem"
    public.write_bytes(ECKey.generate_key("P-256").as_pem(private=False))
    for path in (p384, public):
        path.chmod(0o600)
        with pytest.raises(ConfigError):
            load_or_create_key(path)


async def test_rsa_key_file_supported(tmp_path: Path) -> None:
    """An RSA-2048 key file is accepted and signs RS256 dev tokens."""
    path = tmp_path / "rsa.pem"
    path.write_bytes(RSAKey.generate_key(2048).as_pem(private=True))
    path.chmod(0o600)
    dev = DevIssuer.from_key_file(dev_issuer_url(9000), path)
    assert dev.alg == "RS256"
    identity = await validator_for(dev).validate(dev.mint("bob@example.com", audience=AUDIENCE))
    assert identity.user == "bob@example.com"


def test_mint_refuses_bad_lifetime_and_user(dev: DevIssuer) -> None:
    """Lifetimes outside 1 s .. 24 h and an empty user are refused."""
    for lifetime in (0, -1, 86401):
        with pytest.raises(ValueError, match="lifetime"):
            dev.mint("alice@example.com", audience=AUDIENCE, lifetime=lifetime)
    with pytest.raises(ValueError, match="user"):
        dev.mint("", audience=AUDIENCE)


def test_discovery_and_public_jwks(dev: DevIssuer) -> None:
    """Discovery names the issuer and ``/jwks``; the JWKS is public and usable by a JwksCache."""
    document = dev.discovery_document()
    assert document["issuer"] == "http://127.0.0.1:8080/dev-issuer"
    assert document["jwks_uri"] == "http://127.0.0.1:8080/dev-issuer/jwks"
    jwks = dev.jwks()
    assert all("d" not in key for key in jwks["keys"])
    keys = parse_jwks(jwks)
    assert len(keys) == 1
    assert keys[0].kid
    assert keys[0].alg == "ES256"


async def test_key_source_rejects_unknown_kid_and_alg(dev: DevIssuer) -> None:
    """The dev ``KeySource`` serves its key only for its own kid and a fitting alg."""
    kid = dev.jwks()["keys"][0]["kid"]
    assert (await dev.get_key(kid, "ES256")).kid == kid
    assert dev.has_keys
    for bad_kid, alg in ((kid, "RS256"), ("other", "ES256"), (kid, "ES384")):
        with pytest.raises(KeyUnavailableError, match="dev issuer"):
            await dev.get_key(bad_kid, alg)
