"""``gateway login``: the OAuth 2.0 device authorization grant (RFC 8628) with Authlib's client.

Discovery finds the device authorization and token endpoints (the document's
``issuer`` must equal the one asked for exactly). The user opens the
verification URL in any browser and approves; meanwhile the CLI polls the
token endpoint at the interval the IdP asks for (slower on ``slow_down``),
for at most the device code's lifetime. ``refresh`` trades the refresh token
for a new access token when the cached one has expired.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

from gateway.client.errors import LoginError
from gateway.client.tokencache import CachedToken

with warnings.catch_warnings():
    # Authlib 1.9 prefers the httpx2 fork and warns when it falls back to httpx,
    # which the project already depends on; the client API is the same. (Its
    # own "always" filter is set when authlib.deprecate is imported, above.)
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client, OAuthError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_CLIENT_ID = "gateway-cli"
DEFAULT_SCOPE = "openid email offline_access"
HTTP_TIMEOUT = 10.0
MAX_POLLS = 1000  # a bound on the polling loop, beyond the device code's own lifetime


@dataclass(frozen=True, slots=True)
class DeviceCode:
    """What the user needs to approve the login, and what the CLI polls with."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_in: float


def _client(client_id: str, scope: str | None = None) -> OAuth2Client:
    return OAuth2Client(
        client_id=client_id,
        token_endpoint_auth_method="none",  # noqa: S106 - a public client: no secret at all
        scope=scope,
        timeout=HTTP_TIMEOUT,
        follow_redirects=False,
    )


def discover(issuer: str) -> dict[str, Any]:
    """Fetch and check the issuer's OpenID Connect discovery document."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    try:
        reply = httpx.get(url, timeout=HTTP_TIMEOUT, follow_redirects=False)
        reply.raise_for_status()
        meta: dict[str, Any] = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LoginError(f"cannot read {url}: {exc}") from None
    if meta.get("issuer") != issuer:
        raise LoginError(f"the discovery document names issuer {meta.get('issuer')!r}, not {issuer!r}")
    for key in ("device_authorization_endpoint", "token_endpoint"):
        if not isinstance(meta.get(key), str):
            raise LoginError(f"the issuer does not offer the device flow ({key} missing)")
    return meta


def start(meta: dict[str, Any], client_id: str, scope: str) -> DeviceCode:
    """Ask the IdP for a device code and a user code."""
    with _client(client_id, scope) as client:
        try:
            reply = client.request(
                "POST",
                meta["device_authorization_endpoint"],
                data={"client_id": client_id, "scope": scope},
                withhold_token=True,
            )
            data = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginError(f"device authorization request failed: {exc}") from None
    if reply.status_code != httpx.codes.OK or "device_code" not in data:
        raise LoginError(f"device authorization refused: {data.get('error')}: {data.get('error_description')}")
    return DeviceCode(
        device_code=data["device_code"],
        user_code=data["user_code"],
        verification_uri=data["verification_uri"],
        verification_uri_complete=data.get("verification_uri_complete"),
        interval=float(data.get("interval", 5)),
        expires_in=float(data.get("expires_in", 600)),
    )


def _cached(
    meta: dict[str, Any], client_id: str, token: dict[str, Any], now: float, old_refresh: str | None = None
) -> CachedToken:
    expires_at = token.get("expires_at") or now + float(token.get("expires_in", 300))
    return CachedToken(
        issuer=meta["issuer"],
        client_id=client_id,
        token_endpoint=meta["token_endpoint"],
        access_token=token["access_token"],
        expires_at=float(expires_at),
        refresh_token=token.get("refresh_token") or old_refresh,
    )


def poll(
    meta: dict[str, Any],
    client_id: str,
    code: DeviceCode,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], float] = time.time,
) -> CachedToken:
    """Poll the token endpoint until the user approves, denies or the code expires."""
    deadline = clock() + code.expires_in
    interval = code.interval
    with _client(client_id) as client:
        for _ in range(MAX_POLLS):
            if clock() >= deadline:
                break
            sleep(interval)
            try:
                token = client.fetch_token(
                    meta["token_endpoint"], grant_type=DEVICE_GRANT, device_code=code.device_code
                )
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5
                    continue
                raise LoginError(f"login failed: {exc.error}: {exc.description}") from None
            except httpx.HTTPError as exc:
                raise LoginError(f"cannot reach the token endpoint: {exc}") from None
            return _cached(meta, client_id, dict(token), now())
    raise LoginError("the login was not approved in time; run `gateway login` again")


def refresh(cached: CachedToken, now: Callable[[], float] = time.time) -> CachedToken:
    """Trade the refresh token for a new access token."""
    if not cached.refresh_token:
        raise LoginError("the token has expired and there is no refresh token; run `gateway login`")
    meta = {"issuer": cached.issuer, "token_endpoint": cached.token_endpoint}
    with _client(cached.client_id) as client:
        try:
            token = client.refresh_token(cached.token_endpoint, refresh_token=cached.refresh_token)
        except OAuthError as exc:
            raise LoginError(f"refreshing the token failed ({exc.error}); run `gateway login`") from None
        except httpx.HTTPError as exc:
            raise LoginError(f"cannot reach the token endpoint: {exc}") from None
    return _cached(meta, cached.client_id, dict(token), now(), cached.refresh_token)
