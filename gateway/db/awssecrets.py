"""Database passwords from AWS Secrets Manager: cached with a TTL, refreshed after a refusal.

The secret string is either the password itself or JSON holding it under a
key (``password`` by default, the shape RDS-managed and rotation-lambda
secrets have). A rotated secret is picked up when the cache expires, or at
once when the database refuses the cached password: the connector then
calls ``invalidate()`` and tries once more with what Secrets Manager has now.
Errors name the secret and AWS's error code, never the secret's content.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cachetools import TTLCache

from gateway.errors import DatabaseUnavailable
from gateway.settings import AwsSecretSource

_CLIENT_CONFIG = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})


def _secrets_client(source: AwsSecretSource) -> Any:  # noqa: ANN401 - boto3 is untyped
    return boto3.session.Session().client(
        "secretsmanager", region_name=source.region, endpoint_url=source.endpoint_url, config=_CLIENT_CONFIG
    )


class AwsSecretsManagerSecret:
    """A password read from Secrets Manager, cached for ``source.ttl`` seconds."""

    def __init__(
        self,
        source: AwsSecretSource,
        *,
        client_factory: Callable[[AwsSecretSource], Any] = _secrets_client,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._cache: TTLCache[str, str] = TTLCache(maxsize=1, ttl=source.ttl, timer=timer)
        self._client_factory = client_factory
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = asyncio.Lock()
        self.fetches = 0

    def describe(self) -> str:
        """Say which secret this is (never its value)."""
        return f"AWS Secrets Manager secret {self.source.secret_id}"

    async def password(self) -> str:
        """The cached password, or the current one fetched in a thread."""
        value = self._cache.get("password")
        if value is not None:
            return value
        async with self._lock:
            value = self._cache.get("password")
            if value is None:
                value = await asyncio.to_thread(self._fetch)
                self._cache["password"] = value
            return value

    def invalidate(self) -> None:
        """Forget the cached password (the database refused it; it may have been rotated)."""
        self._cache.clear()

    def _fetch(self) -> str:
        try:
            with self._client_lock:
                if self._client is None:
                    self._client = self._client_factory(self.source)
            reply = self._client.get_secret_value(SecretId=self.source.secret_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} ({code})") from None
        except BotoCoreError as exc:
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} ({type(exc).__name__})") from None
        self.fetches += 1
        return self._extract(reply.get("SecretString"))

    def _extract(self, text: object) -> str:
        if not isinstance(text, str) or not text:
            raise DatabaseUnavailable(f"credential unavailable: {self.describe()} has no secret string")
        if self.source.key is None:
            return text
        try:
            value = json.loads(text).get(self.source.key)
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, str) or not value:
            raise DatabaseUnavailable(
                f"credential unavailable: {self.describe()} is not JSON with a string {self.source.key!r}"
            )
        return value
