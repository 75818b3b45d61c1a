"""Database passwords for ``(target, db_user)``, fetched per new connection.

A ``CredentialProvider`` is the swap point between auth modes: the ``secret``
mode reads an env var or a file each time a connection is opened (so a
rotated Kubernetes secret is picked up without a restart), or AWS Secrets
Manager with a TTL cache (``awssecrets.py``); the ``iam`` mode mints
short-lived RDS tokens (``iamtokens.py``).
Nothing here ever logs or returns a secret inside an error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.db.awssecrets import AwsSecretsManagerSecret
from gateway.db.iamtokens import IamTokenProvider
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

    def invalidate(self) -> None:
        """Forget any cached value: the database refused it (rotated secret, expired token)."""
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
        return self.read()

    def read(self) -> str:
        """Read the variable now (synchronous, for callers outside the event loop)."""
        value = os.environ.get(self.name)
        if not value:
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} is not set")
        return value

    def invalidate(self) -> None:
        """Nothing is cached: the variable is read for every connection."""


@dataclass(frozen=True, slots=True)
class FileSecret:
    """A password in a file (a mounted secret); re-read for every new connection."""

    path: Path

    def describe(self) -> str:
        """Say which file holds the secret."""
        return f"file {self.path}"

    async def password(self) -> str:
        """Read the file now; a small file read does not need a thread."""
        return self.read()

    def read(self) -> str:
        """Read the file now (synchronous, for callers outside the event loop)."""
        try:
            value = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DatabaseUnavailable(
                f"credential unavailable: cannot read {self.describe()} ({exc.strerror})"
            ) from None
        if not value:
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} is empty")
        return value

    def invalidate(self) -> None:
        """Nothing is cached: the file is read for every connection."""


def read_plain_secret(source: SecretSource) -> str:
    """Read a secret from its env var or file now; raise ``DatabaseUnavailable`` naming the cause."""
    if source.env is not None:
        return EnvSecret(source.env).read()
    if source.file is not None:
        return FileSecret(source.file).read()
    raise DatabaseUnavailable("credential unavailable: only an env var or a file can hold this secret")


def _from_source(source: SecretSource) -> CredentialProvider:
    if source.env is not None:
        return EnvSecret(source.env)
    if source.file is not None:
        return FileSecret(source.file)
    if source.aws_secret is not None:
        return AwsSecretsManagerSecret(source.aws_secret)
    raise ConfigError("secret source without env or file")  # settings already refuse this


def provider_for(target_name: str, target: TargetSettings, db_user: str) -> CredentialProvider:
    """Build the credential provider for ``(target, db_user)`` from the target's auth mode."""
    if target.auth_mode == "iam" and target.iam is not None:
        if db_user not in target.iam.db_users:
            raise ConfigError(f"target {target_name!r} has no IAM db_user {db_user!r}")
        return IamTokenProvider(target.host, target.port, db_user, target.iam.region, ttl=target.iam.token_ttl)
    source = target.secrets.get(db_user)
    if source is None:
        raise ConfigError(f"target {target_name!r} has no secret configured for db_user {db_user!r}")
    return _from_source(source)
