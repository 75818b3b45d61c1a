"""A cap on the rate of new database connections (per target).

RDS throttles IAM logins at around 200 new connections per second per
instance, and a stampede of new connections hurts any database. This is a
GCRA limiter (a token bucket without a background task): each connect
reserves the next free slot; a connect that would have to wait longer than
``max_wait`` is refused at once instead of piling up (SECURITY rule 20).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.errors import DatabaseUnavailable


class ConnectRate:
    """At most ``per_second`` new connections on average, in bursts of up to ``burst``."""

    def __init__(
        self,
        name: str,
        per_second: float,
        *,
        burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._interval = 1.0 / per_second
        self._burst = max(burst, 1)
        self._clock = clock
        self._tat = 0.0  # the theoretical arrival time of the next connect
        self.delayed = 0
        self.refused = 0

    def reserve(self, max_wait: float) -> float:
        """Reserve a slot; return how long to wait for it, or refuse when that is over ``max_wait``."""
        now = self._clock()
        tat = max(self._tat, now)
        wait = tat - now - (self._burst - 1) * self._interval
        wait = max(wait, 0.0)
        if wait > max_wait:
            self.refused += 1
            raise DatabaseUnavailable(
                f"too many new connections to {self.name} (limit {1 / self._interval:g} per second)"
            )
        self._tat = tat + self._interval
        if wait > 0:
            self.delayed += 1
        return wait

    async def wait(self, max_wait: float) -> None:
        """Wait for a connect slot (bounded by ``max_wait``)."""
        delay = self.reserve(max_wait)
        if delay > 0:
            await asyncio.sleep(delay)
