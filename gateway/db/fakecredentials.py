"""A ``CredentialProvider`` for tests, beside the protocol it stands in for (as httpx keeps its mock transport).

``StaticCredentials`` hands out a fixed password (or refuses, like a provider
whose source is gone) and counts what it was asked, so a test can swap it in
for a real provider instead of patching environment variables or AWS.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import DatabaseUnavailable


@dataclass(slots=True)
class StaticCredentials:
    """A fixed password; ``None`` refuses every request with ``DatabaseUnavailable``."""

    secret: str | None
    source: str = "a static test credential"
    asked: int = 0
    invalidated: int = 0

    def describe(self) -> str:
        """Say where the credential comes from (never the credential)."""
        return self.source

    async def password(self) -> str:
        """The password, counted; refused when there is none."""
        self.asked += 1
        if self.secret is None:
            raise DatabaseUnavailable(f"credential unavailable: {self.source} has no password")
        return self.secret

    def invalidate(self) -> None:
        """Count that the database refused the password."""
        self.invalidated += 1
