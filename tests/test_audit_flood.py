"""Records of unauthenticated requests cannot flood the audit store (SECURITY rule 29).

The token buckets and aggregates of ``gateway/audit/flood.py`` on an injected
clock, then a real gateway with tight limits: every refused request is still
answered, the first few are recorded one by one, the rest are accounted for
by ``auth_flood`` records (written when their window passes, and at shutdown),
and nothing is lost.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from fuzzprofile import budget
from hypothesis import given, settings
from hypothesis import strategies as st
from oidcfixture import OidcProvider

from gateway.audit.flood import FloodControl
from gateway.audit.records import AuthRecord, Who
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.verify import verify
from gateway.requestids import RequestIds
from gateway.settings import FloodSettings

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += timedelta(seconds=seconds)


def refused(client: str, n: int, code: str = "unauthenticated") -> AuthRecord:
    """The record of one refused request from ``client``."""
    return AuthRecord(who=Who(request_id=f"{client}-{n}", user=None, client=client), code=code, reason=f"bad {n % 3}")


def control(clock: Clock, **limits: float) -> FloodControl:
    """A flood control with ``limits`` over generous defaults."""
    values: dict[str, float] = {
        "per_client_burst": 3,
        "per_client_rate": 0.5,
        "global_burst": 1000,
        "global_rate": 1000,
        **limits,
    }
    return FloodControl(FloodSettings.model_validate(values), clock, RequestIds(b"k" * 32).new)


def test_each_client_has_its_own_bucket() -> None:
    """One address over its burst is aggregated; another address is still recorded one by one."""
    clock = Clock()
    floods = control(clock)
    assert [floods.admit(refused("a", n)) for n in range(5)] == [True, True, True, False, False]
    assert floods.admit(refused("b", 0))
    clock.advance(2)  # 0.5 per second: one more token for "a"
    assert floods.admit(refused("a", 5))
    assert not floods.admit(refused("a", 6))


def test_the_global_bucket_caps_many_addresses() -> None:
    """Fresh addresses each have a full bucket, but together they cannot pass the gateway's own."""
    floods = control(Clock(), global_burst=10, global_rate=0.001)
    admitted = [floods.admit(refused(f"10.0.0.{n}", n)) for n in range(50)]
    assert sum(admitted) == 10
    assert admitted[:10] == [True] * 10


def test_aggregates_wait_for_their_window_and_all_go_at_shutdown() -> None:
    """An aggregate is due once its window has passed; at shutdown every one is, whatever its age."""
    clock = Clock()
    floods = control(clock, per_client_burst=1, window=60)
    for n in range(4):
        floods.admit(refused("a", n, code="unauthenticated" if n < 3 else "payload_too_large"))
    assert floods.due() == []
    clock.advance(59)
    assert floods.due() == []
    clock.advance(1)
    (record,) = floods.due()
    assert (record.EVENT, record.client, record.suppressed) == ("auth_flood", "a", 3)
    assert record.codes == {"unauthenticated": 2, "payload_too_large": 1}
    assert record.sample_request_ids == ("a-1", "a-2", "a-3")
    assert record.sample_reasons == ("bad 1", "bad 2", "bad 0")
    assert (record.window_start, record.window_end) == ("2026-03-01T12:00:00.000000Z",) * 2
    assert (record.decision, record.code, record.user_verified) == ("deny", "auth_flood", False)
    floods.admit(refused("b", 0))
    floods.admit(refused("b", 1))
    assert [r.client for r in floods.due(everything=True)] == ["b"]
    assert floods.pending == 0


def test_many_addresses_share_one_aggregate_beyond_the_limit() -> None:
    """Past ``max_aggregates`` addresses, the rest are counted together under client ``*``."""
    floods = control(Clock(), per_client_burst=1, max_aggregates=2)
    for client in ("a", "b", "c", "d"):
        floods.admit(refused(client, 0))
        floods.admit(refused(client, 1))
    aggregates = {r.client: r.suppressed for r in floods.due(everything=True)}
    assert aggregates == {"a": 1, "b": 1, "*": 2}


@pytest.mark.fuzz
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.floats(0, 30)), max_size=300))
@settings(max_examples=budget(200))
def test_every_refused_request_is_recorded_or_counted(events: list[tuple[str, float]]) -> None:
    """Whatever the traffic: records written one by one plus every aggregate's count equals the requests."""
    clock = Clock()
    floods = control(clock, per_client_burst=2, global_burst=5, global_rate=0.2, max_aggregates=3, window=10)
    written = 0
    for n, (client, pause) in enumerate(events):
        clock.advance(pause)
        written += floods.admit(refused(client, n))
        written += sum(r.suppressed for r in floods.due())
    written += sum(r.suppressed for r in floods.due(everything=True))
    assert written == len(events)


def test_a_flood_against_a_real_gateway_is_answered_and_accounted_for(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase
) -> None:
    """Ten bad tokens, an oversized body and oversized headers from one address: all refused, 3 recorded one by one.

    The other 9 are one auth_flood record once the window has passed (the clock
    is moved, not waited on), a later one is written at shutdown, a valid
    caller is unaffected, and the chain verifies.
    """
    clock = Clock(datetime.now(UTC))
    limits = {"per_client_burst": 3, "per_client_rate": 0.001, "window": 60}
    settings = gateway_settings(
        tmp_path, idp, test_db, audit={"path": tmp_path / "audit.db", "unauthenticated": limits}
    )
    running = start_gateway(settings, idp, test_db, clock=clock)
    try:
        url = running.url
        replies = [httpx.get(f"{url}/v1/me", headers={"Authorization": f"Bearer bad{n}"}) for n in range(10)]
        replies.append(httpx.post(f"{url}/v1/query", content=b"x" * (settings.limits.max_body_bytes + 1)))
        replies.append(httpx.get(f"{url}/v1/me", headers={"X-Big": "h" * 40_000}))
        assert [r.status_code for r in replies] == [401] * 10 + [413, 431]
        clock.advance(61)
        later = httpx.get(f"{url}/v1/me", headers={"Authorization": "Bearer bad-later"})
        assert later.status_code == 401
        with running.client("reader") as http:
            allowed = http.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"})
        assert allowed.status_code == 200
        running.audit_settled()
    finally:
        stop_gateway(running)
    store = SQLiteAuditStore(tmp_path / "audit.db", readonly=True)
    try:
        entries = list(store.iter_entries())
        assert verify(store).ok
    finally:
        store.close()
    ids = [r.headers["x-request-id"] for r in replies]
    one_by_one = [e["request_id"] for e in entries if e["request_id"] in ids]
    assert one_by_one == ids[:3]
    first, last = [e for e in entries if e["event"] == "auth_flood"]
    assert (first["client"], first["suppressed"]) == ("127.0.0.1", 9)
    assert first["codes"] == {"unauthenticated": 7, "payload_too_large": 1, "headers_too_large": 1}
    assert first["sample_request_ids"] == ids[3:8]
    assert (last["suppressed"], last["sample_request_ids"]) == (1, [later.headers["x-request-id"]])
    assert [e["event"] for e in entries if e["request_id"] == allowed.headers["x-request-id"]] == [
        "decision",
        "outcome",
    ]
