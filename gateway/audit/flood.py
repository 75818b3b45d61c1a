"""Records of unauthenticated requests cannot flood the audit store (SECURITY rule 29).

Anyone who can reach the gateway can send requests without a valid token
(401), with an oversized body (413) or oversized headers (431), and each is
recorded before it is answered. Unchecked, a flood of them fills the store. So
each such record first asks :meth:`FloodControl.admit`: two token buckets, one
per client address and one for the whole gateway, each refilled at its
``rate`` per second up to its ``burst``. A record both buckets admit is
written one by one, as before, before the answer. Beyond that the caller still
gets its 401/413/431, and the record is counted into one aggregate per client
address and window instead:

    {"event": "auth_flood", "client": "203.0.113.9", "decision": "deny",
     "code": "auth_flood", "suppressed": 4711, "codes": {"unauthenticated": 4711},
     "window_start": "...", "window_end": "...", "sample_reasons": [...],
     "sample_request_ids": [...]}

Nothing is dropped silently: ``suppressed`` says how many records the
aggregate stands for. An aggregate is written once its window (``window``
seconds from its first suppressed record) has passed, when the next record of
an unauthenticated request arrives or the periodic flush runs, and at
shutdown whatever its age. At most ``max_aggregates`` addresses get an
aggregate of their own per window; the rest share one with ``client: "*"``.
Bucket state is kept for the ``max_clients`` most recent addresses.

Time comes from the injected clock (the app's), so tests move it instead of
waiting. The bound this gives, whatever the flood: at most ``global_burst`` +
``global_rate`` x seconds individual records, plus at most
``max_aggregates + 1`` aggregates per window, each within the field caps of
``gateway/audit/caps.py``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.audit.format import format_time
from gateway.audit.records import AuthFloodRecord

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from gateway.audit.records import AuthRecord, RouteDenied
    from gateway.settings import FloodSettings

SAMPLES = 5  # reasons and request ids an aggregate keeps as examples
SAMPLE_CHARS = 200  # characters of each sample reason
OTHER_CLIENTS = "*"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float

    def take(self, now: float, rate: float, burst: int) -> bool:
        self.tokens = min(float(burst), self.tokens + max(now - self.updated, 0.0) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(slots=True)
class _Aggregate:
    started: datetime
    last: datetime
    suppressed: int = 0
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    reasons: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)


class FloodControl:
    """Token buckets per client address and for the gateway; aggregates of what they refuse."""

    def __init__(self, settings: FloodSettings, clock: Callable[[], datetime], new_id: Callable[[], str]) -> None:
        self.settings = settings
        self._clock = clock
        self._new_id = new_id
        self._global = _Bucket(float(settings.global_burst), clock().timestamp())
        self._clients: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._aggregates: dict[str, _Aggregate] = {}

    def admit(self, record: AuthRecord | RouteDenied) -> bool:
        """Whether ``record`` (of an unauthenticated request) is written; if not, it is counted."""
        moment = self._clock()
        now = moment.timestamp()
        client = record.who.client or "unknown"
        s = self.settings
        bucket = self._clients.pop(client, None) or _Bucket(float(s.per_client_burst), now)
        self._clients[client] = bucket  # most recent last
        if len(self._clients) > s.max_clients:
            self._clients.popitem(last=False)
        # Both buckets must have a token; the client's is asked first, so one busy address
        # empties its own bucket, not the gateway's.
        if bucket.take(now, s.per_client_rate, s.per_client_burst) and self._global.take(
            now, s.global_rate, s.global_burst
        ):
            return True
        self._count(client, moment, record)
        return False

    def _count(self, client: str, moment: datetime, record: AuthRecord | RouteDenied) -> None:
        key = client if client in self._aggregates or len(self._aggregates) < self.settings.max_aggregates else None
        aggregate = self._aggregates.get(key or OTHER_CLIENTS)
        if aggregate is None:
            aggregate = self._aggregates[key or OTHER_CLIENTS] = _Aggregate(moment, moment)
        aggregate.suppressed += 1
        aggregate.last = moment
        aggregate.codes[record.code] += 1
        reason = str(record.reason)[:SAMPLE_CHARS]
        if len(aggregate.reasons) < SAMPLES and reason not in aggregate.reasons:
            aggregate.reasons.append(reason)
        if len(aggregate.request_ids) < SAMPLES:
            aggregate.request_ids.append(record.who.request_id)

    @property
    def pending(self) -> int:
        """Records counted into aggregates not yet written."""
        return sum(a.suppressed for a in self._aggregates.values())

    def due(self, *, everything: bool = False) -> list[AuthFloodRecord]:
        """The aggregate records whose window has passed (all of them with ``everything``), now taken out."""
        moment = self._clock()
        window = self.settings.window
        ready = [
            client
            for client, a in self._aggregates.items()
            if everything or (moment - a.started).total_seconds() >= window
        ]
        return [self._record(client, self._aggregates.pop(client), moment) for client in ready]

    def _record(self, client: str, aggregate: _Aggregate, moment: datetime) -> AuthFloodRecord:
        return AuthFloodRecord(
            request_id=self._new_id(),
            time=moment,
            client=client,
            user=None,
            suppressed=aggregate.suppressed,
            codes=dict(aggregate.codes),
            window_start=format_time(aggregate.started),
            window_end=format_time(aggregate.last),
            window_seconds=self.settings.window,
            sample_reasons=tuple(aggregate.reasons),
            sample_request_ids=tuple(aggregate.request_ids),
        )
