"""Sign-in: the OIDC authorization code flow with PKCE, as a relying party, with Authlib's client.

Discovery (``{issuer}/.well-known/openid-configuration``, whose ``issuer``
must equal the configured one exactly) gives the authorization and token
endpoints; it is fetched on the first sign-in and kept. A sign-in sends the
browser to the IdP with a fresh ``state`` and an ``S256`` challenge; the
IdP's answer comes back to ``/console/callback``, where the code is traded,
server to server, for tokens (with the verifier only the gateway knows).

The **access token** is what the console keeps (server-side, in the session):
every page validates it through the same pipeline as an API call, so the
person is who the token says, under the same rules (SECURITY rules 1-7, 26).
The ID token is not used for identity, so no nonce is needed; ``state``
(bound to the browser's session) and PKCE protect the code.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

from gateway.errors import ConfigError, IdentityUnavailable, Unauthenticated
from gateway.settings import ConsoleSettings

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 fork and warns when it falls back to httpx (the same client API).
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

HTTP_TIMEOUT = 10.0
CALLBACK_PATH = "/console/callback"


@dataclass(frozen=True, slots=True)
class Tokens:
    """What a successful code exchange gave: the access token and when it expires (epoch seconds)."""

    access_token: str
    expires_at: float


def read_client_secret(settings: ConsoleSettings) -> str | None:
    """The confidential client's secret, from an environment variable or a file (never the config itself)."""
    source = settings.client_secret
    if source is None:
        return None
    if source.env:
        value = os.environ.get(source.env)
        if not value:
            raise ConfigError(f"console.client_secret: environment variable {source.env} is not set")
        return value
    if source.file:
        return source.file.read_text(encoding="utf-8").strip()
    raise ConfigError("console.client_secret takes env or file")


class SignIn:
    """The console as an OIDC client of one issuer."""

    def __init__(self, issuer: str, public_url: str, settings: ConsoleSettings, client_secret: str | None) -> None:
        self.issuer = issuer
        self.redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
        self._settings = settings
        self._secret = client_secret
        self._meta: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._settings.client_id,
            client_secret=self._secret,
            token_endpoint_auth_method="client_secret_basic" if self._secret else "none",
            scope=self._settings.scope,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
        )

    async def metadata(self) -> dict[str, Any]:
        """The issuer's discovery document, fetched once (``identity_unavailable`` if it cannot be)."""
        async with self._lock:
            if self._meta is None:
                self._meta = await self._discover()
            return self._meta

    async def _discover(self) -> dict[str, Any]:
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=False) as http:
                reply = await http.get(url)
                reply.raise_for_status()
                meta: dict[str, Any] = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise IdentityUnavailable(f"cannot read the issuer's discovery document ({type(exc).__name__})") from None
        if meta.get("issuer") != self.issuer:
            raise IdentityUnavailable("the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(meta.get(key), str) or not meta[key].startswith(("https://", "http://")):
                raise IdentityUnavailable(f"the issuer offers no {key}")
        return meta

    async def begin(self) -> tuple[str, str, str]:
        """A new sign-in: the IdP URL to send the browser to, its ``state`` and the PKCE verifier."""
        meta = await self.metadata()
        state = secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]: a valid RFC 7636 verifier
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"], state=state, code_verifier=verifier
            )
        return str(url), state, verifier

    async def finish(self, code: str, verifier: str, now: float) -> Tokens:
        """Trade the IdP's code for tokens; ``Unauthenticated`` if the IdP refuses."""
        meta = await self.metadata()
        async with self._client() as client:
            try:
                token = await client.fetch_token(meta["token_endpoint"], code=code, code_verifier=verifier)
            except OAuthError as exc:
                raise Unauthenticated(f"console sign-in: the IdP refused the code ({exc.error})") from None
            except httpx.HTTPError as exc:
                raise IdentityUnavailable(f"cannot reach the issuer's token endpoint ({type(exc).__name__})") from None
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise Unauthenticated("console sign-in: the IdP returned no access token")
        expires_at = token.get("expires_at")
        if not isinstance(expires_at, int | float):
            expires_in = token.get("expires_in")
            expires_at = now + (float(expires_in) if isinstance(expires_in, int | float) else 300.0)
        return Tokens(access, float(expires_at))
