"""A real OpenID Connect provider for tests: ``node tests/oidc/provider.mjs``.

``oidc_provider`` (session scope) starts panva/oidc-provider on a free loopback
port with signing keys generated here, so tests can both fetch real tokens
over HTTP (client_credentials) and forge hostile ones with the provider's own
keys. ``running_provider`` starts extra short-lived instances (key rotation,
an IdP outage).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey, KeySet, RSAKey
from joserfc.jws import JWSRegistry

__all__ = ["DEFAULT_USERS", "GATEWAY_AUDIENCE", "OidcProvider", "oidc_provider", "running_provider"]

OIDC_DIR = Path(__file__).parent / "oidc"
GATEWAY_AUDIENCE = "https://gateway.test"
# Each user: "email" (leave it out: a token without one), "email_verified" (default true; None:
# not sent), "email_scope" (true: email only in tokens asked for with scope "email"), "groups".
DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "alice": {"email": "alice@example.com", "groups": ["analysts", "engineers"]},
    "bob": {"email": "bob@example.com", "groups": []},
    "carol": {"email": "carol@example.com", "groups": ["security"]},
    "dave": {"email": "dave@example.com", "groups": ["db-admins"]},
}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def b64url(data: bytes) -> str:
    """Base64url without padding, as in a compact JWS."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_keys() -> KeySet:
    """One RSA-2048 and one EC P-256 signing key with fixed kids."""
    rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig", "alg": "ES256"})
    return KeySet([rsa, ec])


def sign_compact(header: Mapping[str, Any] | str, claims: Mapping[str, Any] | str, key: Any) -> str:
    """Serialize a compact JWS without any of joserfc's header checks (to build hostile tokens).

    ``header``/``claims`` given as ``str`` are used verbatim as JSON text (duplicate
    members, odd spacing). ``key`` is a joserfc key, or ``bytes`` for HS* (HMAC).
    """
    header_text = header if isinstance(header, str) else json.dumps(header)
    claims_text = claims if isinstance(claims, str) else json.dumps(claims)
    alg = json.loads(header_text)["alg"]
    signing_input = f"{b64url(header_text.encode())}.{b64url(claims_text.encode())}".encode()
    if alg == "none":
        signature = b""
    elif alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
        signature = hmac.new(key, signing_input, digest[alg]).digest()
    else:
        signature = JWSRegistry.algorithms[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64url(signature)}"


@dataclass
class OidcProvider:
    """A running provider: real tokens over HTTP, and forged tokens with its keys."""

    issuer: str
    port: int
    audience: str
    private_jwks: KeySet
    users: dict[str, dict[str, Any]]
    process: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def rsa_key(self) -> RSAKey:
        """The provider's RSA signing key (kid ``rsa-1``)."""
        key = self.private_jwks.get_by_kid("rsa-1")
        assert isinstance(key, RSAKey)
        return key

    @property
    def ec_key(self) -> ECKey:
        """The provider's EC P-256 signing key (kid ``ec-1``)."""
        key = self.private_jwks.get_by_kid("ec-1")
        assert isinstance(key, ECKey)
        return key

    def token(self, client_id: str = "alice", *, scope: str | None = None) -> str:
        """A real access token for ``client_id`` from the provider's token endpoint (``scope``: e.g. ``"email"``)."""
        response = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", **({"scope": scope} if scope else {})},
            auth=(client_id, self.users[client_id]["secret"]),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def update_user(self, client_id: str, **claims: Any) -> None:
        """Replace a user's claims in the running provider (``email``, ``email_verified``, ``email_scope``, ``groups``).

        A claim left out takes the provider's default (no email; ``email_verified`` true; no groups);
        ``email_verified=None`` sends no ``email_verified`` claim.
        """
        response = httpx.put(f"{self.issuer}/_test/users/{client_id}", json=claims, timeout=10)
        response.raise_for_status()
        self.users[client_id] = {**claims, "secret": self.users[client_id]["secret"]}

    def claims(self, *, drop: Sequence[str] = (), **overrides: Any) -> dict[str, Any]:
        """A valid claim set for alice as this provider would issue it, with changes."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "alice",
            "email": "alice@example.com",
            "email_verified": True,
            "groups": ["analysts"],
            "iat": now,
            "exp": now + 300,
            "jti": f"forged-{time.monotonic_ns()}",
            "client_id": "alice",
        }
        claims.update(overrides)
        for name in drop:
            claims.pop(name, None)
        return claims

    def forge(
        self,
        claims: Mapping[str, Any] | str | None = None,
        header: Mapping[str, Any] | str | None = None,
        *,
        key: Any = None,
    ) -> str:
        """Sign ``claims`` (default: ``self.claims()``) with ``key`` (default: the RSA key).

        The default header is ``{"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"}``.
        """
        return sign_compact(
            header if header is not None else {"alg": "RS256", "typ": "at+jwt", "kid": "rsa-1"},
            claims if claims is not None else self.claims(),
            key if key is not None else self.rsa_key,
        )

    def stop(self) -> None:
        """Stop the provider process (bounded wait, then kill)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


def _check_installed() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node (v20+) is not on PATH; the OIDC tests need it", pytrace=False)
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "tests/oidc/node_modules is missing: run `make test` (it runs `npm ci --prefix tests/oidc`)",
            pytrace=False,
        )
    return node


def _read_ready_line(process: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    lines: queue.Queue[bytes] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=START_TIMEOUT)
    except queue.Empty:
        return None
    with contextlib.suppress(ValueError):
        ready = json.loads(line)
        if isinstance(ready, dict) and ready.get("ready"):
            return ready
    return None


@contextlib.contextmanager
def running_provider(
    private_jwks: KeySet | None = None,
    *,
    users: Mapping[str, Mapping[str, Any]] = DEFAULT_USERS,
    audience: str = GATEWAY_AUDIENCE,
    port: int = 0,
    access_token_alg: str = "RS256",
    access_token_ttl: int = 300,
    issuer: str | None = None,
) -> Iterator[OidcProvider]:
    """Run ``provider.mjs`` until the block ends; ``port=0`` picks a free port.

    ``issuer`` replaces ``http://127.0.0.1:<port>`` (a test's proxy in front of the provider).
    """
    node = _check_installed()
    jwks = private_jwks if private_jwks is not None else generate_keys()
    full_users = {name: {**user, "secret": f"{name}-{os.urandom(8).hex()}"} for name, user in users.items()}
    with tempfile.TemporaryDirectory(prefix="oidc-provider-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(
            json.dumps(
                {
                    "port": port,
                    "audience": audience,
                    "jwks": jwks.as_dict(private=True),
                    "users": full_users,
                    "accessTokenAlg": access_token_alg,
                    "accessTokenTTL": access_token_ttl,
                    **({"issuer": issuer} if issuer else {}),
                }
            )
        )
        log_path = Path(tmp) / "provider.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [node, str(OIDC_DIR / "provider.mjs")],
                cwd=OIDC_DIR,
                env={**os.environ, "OIDC_TEST_CONFIG": str(config_path)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        provider = None
        try:
            ready = _read_ready_line(process)
            if ready is None:
                pytest.fail(f"oidc provider did not start:\n{log_path.read_text()}", pytrace=False)
            provider = OidcProvider(
                issuer=ready["issuer"],
                port=ready["port"],
                audience=audience,
                private_jwks=jwks,
                users=full_users,
                process=process,
                log_path=log_path,
            )
            yield provider
        finally:
            if provider is not None:
                provider.stop()
            elif process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[OidcProvider]:
    """The session's OIDC provider (issuer ``http://127.0.0.1:<port>``, RS256 tokens)."""
    with running_provider() as provider:
        yield provider
