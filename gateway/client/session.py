"""Which gateway and which token a client command uses: one rule for every command.

The URL is ``--url``, else ``GATEWAY_URL``. The token is, first match wins:

1. ``--token``;
2. ``GATEWAY_TOKEN``;
3. the cache ``gateway login`` filled; an expired access token is first
   traded for a new one with the refresh token, and the cache is rewritten.

Nothing found is a ``UsageError`` (exit 2). The client remembers which source
it used, and names it when the gateway refuses the token (401).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.client import login, tokencache
from gateway.client.errors import UsageError
from gateway.client.http import GatewayClient

TOKEN_ENV = "GATEWAY_TOKEN"  # noqa: S105 - the variable's name, not a token
URL_ENV = "GATEWAY_URL"


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token and where it came from (``--token``, ``GATEWAY_TOKEN`` or the cache file)."""

    value: str
    source: str


def gateway_url(explicit: str | None, environ: Mapping[str, str]) -> str:
    """``--url``, else ``GATEWAY_URL``."""
    url = explicit or environ.get(URL_ENV)
    if not url:
        raise UsageError(f"no gateway URL: pass --url or set {URL_ENV}")
    return url


def access_token(
    explicit: str | None,
    environ: Mapping[str, str],
    *,
    cache: Path | None = None,
    refresh: Callable[[tokencache.CachedToken], tokencache.CachedToken] = login.refresh,
    now: Callable[[], float] = time.time,
) -> Token:
    """The token by the precedence above; refreshes (and re-caches) an expired cached one."""
    if explicit:
        return Token(explicit, "--token")
    if environ.get(TOKEN_ENV):
        return Token(environ[TOKEN_ENV], TOKEN_ENV)
    path = cache or tokencache.cache_path(dict(environ))
    cached = tokencache.load(path)
    if cached is None:
        raise UsageError(f"no token: run `gateway login --issuer URL`, pass --token or set {TOKEN_ENV}")
    if cached.expired(now()):
        cached = refresh(cached)
        tokencache.save(cached, path)
    return Token(cached.access_token, f"the login cache {path}")


def connect(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> GatewayClient:
    """A gateway client for a command's ``--url`` and ``--token`` (or their fallbacks)."""
    env = os.environ if environ is None else environ
    url = gateway_url(getattr(args, "url", None), env)
    token = access_token(getattr(args, "token", None), env)
    return GatewayClient(url, token.value, token_source=token.source)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--url`` and ``--token``, the same on every command that talks to the gateway."""
    parser.add_argument("--url", help=f"gateway URL (default: ${URL_ENV})")
    parser.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV}, else the `gateway login` cache)")
    return parser
