"""RDS IAM auth tokens for one ``(target, db_user)``: minted off the event loop, reused, never logged.

A token is a SigV4-presigned ``connect`` request that RDS accepts for 15
minutes; boto3 signs it locally with whatever credentials its normal chain
finds (env, profile, web identity / IRSA, instance role). Minting is
synchronous and the first call builds a boto3 client, so it runs in a
thread. A token is cached and reused for ``ttl`` seconds (well under its
15 minutes): RDS throttles IAM *logins*, but reusing a token is free, so
under steady load almost no request pays for a mint.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from cachetools import TTLCache

from gateway.errors import DatabaseUnavailable


def _rds_client(region: str) -> Any:  # noqa: ANN401 - boto3 is untyped
    return boto3.session.Session().client("rds", region_name=region)


class IamTokenProvider:
    """Gives an RDS IAM auth token for ``db_user`` at ``host:port``, cached for ``ttl`` seconds."""

    def __init__(
        self,
        host: str,
        port: int,
        db_user: str,
        region: str,
        *,
        ttl: float,
        client_factory: Callable[[str], Any] = _rds_client,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.db_user = db_user
        self.region = region
        self._cache: TTLCache[str, str] = TTLCache(maxsize=1, ttl=ttl, timer=timer)
        self._client_factory = client_factory
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = asyncio.Lock()
        self.mints = 0
        self.mint_seconds = 0.0

    def describe(self) -> str:
        """Say which token this is (never the token)."""
        return f"RDS IAM token for {self.db_user}@{self.host}:{self.port} ({self.region})"

    async def password(self) -> str:
        """The cached token, or a fresh one minted in a thread (one mint at a time)."""
        token = self._cache.get("token")
        if token is not None:
            return token
        async with self._lock:
            token = self._cache.get("token")
            if token is None:
                token = await asyncio.to_thread(self._mint)
                self._cache["token"] = token
            return token

    def invalidate(self) -> None:
        """Forget the cached token (the database refused it)."""
        self._cache.clear()

    def _mint(self) -> str:
        started = time.perf_counter()
        try:
            with self._client_lock:
                if self._client is None:
                    self._client = self._client_factory(self.region)
            token = self._client.generate_db_auth_token(
                DBHostname=self.host, Port=self.port, DBUsername=self.db_user, Region=self.region
            )
        except (BotoCoreError, ClientError) as exc:
            # botocore's messages name the missing piece (e.g. "Unable to locate
            # credentials"), never a key.
            raise DatabaseUnavailable(
                f"credential unavailable: cannot mint the {self.describe()} ({type(exc).__name__}: {exc})"
            ) from None
        self.mints += 1
        self.mint_seconds += time.perf_counter() - started
        return str(token)
