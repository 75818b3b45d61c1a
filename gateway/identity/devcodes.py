"""The dev issuer's authorization code flow with PKCE (dev mode only): what its login page needs.

The web console signs people in with the authorization code flow (RFC 6749
section 4.1) and PKCE (RFC 7636, ``S256`` only); in dev mode its issuer is the
gateway's own dev issuer, so ``make run`` shows the console with no IdP. The
flow, as any IdP runs it:

1. ``/dev-issuer/authorize`` checks the request (:meth:`DevCodes.check`): a
   known client, a redirect URI on the issuer's own origin under
   ``/console/``, ``response_type=code``, an ``S256`` challenge, a state; then
   shows a login page where the person types the name and groups the token
   will carry (dev mode: the dev issuer vouches for whatever it is given, as
   ``gateway dev-token`` does);
2. :meth:`DevCodes.issue` returns a one-time code bound to that request, valid
   for :data:`CODE_LIFETIME` seconds;
3. ``/dev-issuer/token`` trades it (:meth:`DevCodes.redeem`) for an access token
   once: the same client and redirect URI, and a verifier whose SHA-256 is the
   challenge. Anything else is ``invalid_grant``; the code is gone either way.

The routes are the console's (``gateway/console/devlogin.py``); this module
holds no HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from gateway.identity.devissuer import DevIssuer

CONSOLE_CLIENT_ID = "gateway-console"
CODE_LIFETIME = 60.0
MAX_PENDING = 1000  # codes issued and not yet redeemed; the oldest go first past it
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 section 4.1
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256, unpadded
_STATE = re.compile(r"^[\x21-\x7e]{8,512}$")


class AuthorizationError(ValueError):
    """An authorization or token request the dev issuer refuses; ``error`` is the OAuth error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request: what the login page carries to :meth:`DevCodes.issue`."""

    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str
    scope: str


@dataclass(frozen=True, slots=True)
class _Pending:
    request: AuthorizationRequest
    user: str
    groups: tuple[str, ...]
    issued: float


def s256(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier``."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class DevCodes:
    """Authorization codes of the dev issuer: issued once, redeemed once, for its own origin only."""

    def __init__(
        self,
        issuer: DevIssuer,
        *,
        audience: str,
        token_lifetime: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._lifetime = token_lifetime
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        origin = urlsplit(issuer.issuer)
        self._origin = (origin.scheme, origin.netloc)

    def check(self, params: Mapping[str, str]) -> AuthorizationRequest:
        """Check an authorization request's parameters; ``AuthorizationError`` names the first problem."""
        if params.get("client_id") != CONSOLE_CLIENT_ID:
            raise AuthorizationError("unauthorized_client", f"the dev issuer knows one client: {CONSOLE_CLIENT_ID}")
        redirect = params.get("redirect_uri", "")
        parts = urlsplit(redirect)
        if (parts.scheme, parts.netloc) != self._origin or not parts.path.startswith("/console/") or parts.query:
            # Never redirect anywhere but the gateway's own console: no open redirect, even in dev mode.
            raise AuthorizationError("invalid_request", "redirect_uri must be this gateway's /console/ URL")
        if params.get("response_type") != "code":
            raise AuthorizationError("unsupported_response_type", "only response_type=code")
        if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(params.get("code_challenge", "")):
            raise AuthorizationError("invalid_request", "PKCE with code_challenge_method=S256 is required")
        state = params.get("state", "")
        if not _STATE.match(state):
            raise AuthorizationError("invalid_request", "a state of 8-512 printable characters is required")
        return AuthorizationRequest(
            client_id=CONSOLE_CLIENT_ID,
            redirect_uri=redirect,
            state=state,
            code_challenge=params["code_challenge"],
            scope=params.get("scope", "openid")[:512],
        )

    def issue(self, request: AuthorizationRequest, user: str, groups: tuple[str, ...]) -> str:
        """A one-time code for ``user`` (and ``groups``) bound to ``request``.

        ``ValueError`` when a name is not one the gateway would accept (checked as ``mint`` will).
        """
        self._issuer.check_names(user, groups)
        now = self._clock()
        self._drop_stale(now)
        code = secrets.token_urlsafe(32)
        self._pending[code] = _Pending(request, user, groups, now)
        return code

    def redeem(self, params: Mapping[str, str]) -> dict[str, object]:
        """Trade a code for a token response (``access_token``, ``token_type``, ``expires_in``), once."""
        if params.get("grant_type") != "authorization_code":
            raise AuthorizationError("unsupported_grant_type", "only authorization_code")
        pending = self._pending.pop(params.get("code", ""), None)  # gone whatever follows: one try per code
        if pending is None or self._clock() - pending.issued > CODE_LIFETIME:
            raise AuthorizationError("invalid_grant", "unknown, used or expired code")
        request = pending.request
        if params.get("client_id") != request.client_id or params.get("redirect_uri") != request.redirect_uri:
            raise AuthorizationError("invalid_grant", "client_id or redirect_uri differ from the authorization")
        verifier = params.get("code_verifier", "")
        if not _VERIFIER.match(verifier) or not hmac.compare_digest(s256(verifier), request.code_challenge):
            raise AuthorizationError("invalid_grant", "the code_verifier does not match the code_challenge")
        token = self._issuer.mint(pending.user, pending.groups, audience=self._audience, lifetime=self._lifetime)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._lifetime, "scope": request.scope}

    def _drop_stale(self, now: float) -> None:
        for code in [c for c, p in self._pending.items() if now - p.issued > CODE_LIFETIME]:
            del self._pending[code]
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
