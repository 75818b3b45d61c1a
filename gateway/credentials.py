"""Database passwords for ``(target, db_user)``, fetched per new connection.

A ``CredentialProvider`` is the swap point between auth modes: the ``secret``
mode reads an env var or a file each time a connection is opened (so a
rotated Kubernetes secret is picked up without a restart); the ``iam`` mode
(short-lived RDS tokens) plugs in behind the same one-method interface.
Nothing here ever logs or returns a secret inside an error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.errors import ConfigError, DatabaseUnavailable
from gateway.settings import SecretSource, TargetSettings


class CredentialProvider(Protocol):
    """Gives the password for one database account, fresh for each connection."""

    def describe(self) -> str:
        """Say where the credential comes from (never the credential)."""
        ...

    async def password(self) -> str:
        """Return the password, or raise ``DatabaseUnavailable`` naming the cause."""
        ...


@dataclass(frozen=True, slots=True)
class EnvSecret:
    """A password in an environment variable."""

    name: str

    def describe(self) -> str:
        """Say which variable holds the secret."""
        return f"env var {self.name}"

    async def password(self) -> str:
        """Read the variable now."""
        value = os.environ.get(self.name)
        if not value:
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} is not set")
        return value


@dataclass(frozen=True, slots=True)
class FileSecret:
    """A password in a file (a mounted secret); re-read for every new connection."""

    path: Path

    def describe(self) -> str:
        """Say which file holds the secret."""
        return f"file {self.path}"

    async def password(self) -> str:
        """Read the file now; a small file read does not need a thread."""
        try:
            value = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DatabaseUnavailable(
                f"credential unavailable: cannot read {self.describe()} ({exc.strerror})"
            ) from None
        if not value:
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} is empty")
        return value


def _from_source(source: SecretSource) -> CredentialProvider:
    if source.env is not None:
        return EnvSecret(source.env)
    if source.file is not None:
        return FileSecret(source.file)
    raise ConfigError("secret source without env or file")  # settings already refuse this


def provider_for(target_name: str, target: TargetSettings, db_user: str) -> CredentialProvider:
    """Build the credential provider for ``(target, db_user)`` from the target's auth mode."""
    source = target.secrets.get(db_user)
    if source is None:
        raise ConfigError(f"target {target_name!r} has no secret configured for db_user {db_user!r}")
    return _from_source(source)
