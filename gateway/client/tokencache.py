"""The CLI's token cache: one file per OS user in their config dir, readable by them only.

The file is ``$XDG_CONFIG_HOME/db-gateway/token.json`` (``~/.config/...``
without the variable), mode 0600 in a 0700 directory, written atomically. It
holds what ``gateway login`` obtained: the issuer, the client id, the token
endpoint, the access token, its expiry and the refresh token. A cache file
that others could read is refused rather than used.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.client.errors import UsageError

APP_DIR = "db-gateway"
FILE_NAME = "token.json"
EXPIRY_MARGIN = 30  # seconds: refresh a token this close to its expiry


class TokenCacheError(UsageError):
    """The cache file is unsafe or unreadable (exit 2: the user logs in again)."""


@dataclass(frozen=True, slots=True)
class CachedToken:
    """What ``gateway login`` keeps between runs."""

    issuer: str
    client_id: str
    token_endpoint: str
    access_token: str
    expires_at: float
    refresh_token: str | None = None

    def expired(self, now: float | None = None) -> bool:
        """True when the access token is expired or about to be."""
        return (time.time() if now is None else now) >= self.expires_at - EXPIRY_MARGIN


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's config dir for the gateway CLI (XDG Base Directory)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / APP_DIR


def cache_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the token is cached."""
    return config_dir(environ) / FILE_NAME


def save(token: CachedToken, path: Path | None = None) -> Path:
    """Write the token atomically with mode 0600 (the directory 0700)."""
    target = path or cache_path()
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(orjson.dumps(asdict(token)))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target


def load(path: Path | None = None) -> CachedToken | None:
    """Read the cached token; ``None`` when there is none. Refuses a file others can read."""
    target = path or cache_path()
    try:
        info = target.stat()
    except FileNotFoundError:
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenCacheError(f"{target} is readable by other users; run `gateway login` again")
    try:
        data: Any = orjson.loads(target.read_bytes())
        return CachedToken(**data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise TokenCacheError(f"{target} is not a token cache ({exc}); run `gateway login` again") from None


def remove(path: Path | None = None) -> bool:
    """Delete the cached token; True if there was one."""
    target = path or cache_path()
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True
