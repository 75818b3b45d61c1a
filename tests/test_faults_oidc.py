"""Fault suite: the OIDC provider down or stalled, behind a proxy the test controls.

The provider's issuer is the proxy's URL, so discovery, the JWKS and the
token endpoint all go through it; ``proxy.accepted`` counts the gateway's
connections to the IdP (one key refresh is a discovery and a JWKS fetch).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import USERS, ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from faultfixture import Measure, records_lost
from faultload import READ_SQL, Job, Reply, drive, malformed, tally
from faultproxy import FaultProxy
from joserfc.jwk import RSAKey
from oidcfixture import OidcProvider, running_provider

pytestmark = pytest.mark.faults

# One refresh attempt per cooldown (60 s, longer than any test here): a discovery and a JWKS fetch.
MAX_IDP_CONNECTIONS = 2
BOUND = 15.0  # seconds: the longest a request may take (an IdP fetch times out after 5 s, two in a row)


@contextlib.contextmanager
def proxied_provider() -> Iterator[tuple[FaultProxy, OidcProvider]]:
    """The real provider whose public issuer URL is a fault proxy in front of it."""
    with FaultProxy() as proxy, running_provider(users=USERS, issuer=f"http://127.0.0.1:{proxy.port}") as idp:
        proxy.upstream = ("127.0.0.1", idp.port)
        yield proxy, idp


def _rotated_tokens(idp: OidcProvider, count: int) -> list[str]:
    """Tokens for the reader signed by keys the IdP has not published (kids the gateway never saw)."""
    tokens = []
    for i in range(count):
        key = RSAKey.generate_key(2048, parameters={"kid": f"rotated-{i}", "use": "sig", "alg": "RS256"})
        claims = idp.claims(sub="reader", email="reader@example.com", groups=["analysts"], client_id="reader")
        tokens.append(idp.forge(claims, {"alg": "RS256", "typ": "at+jwt", "kid": f"rotated-{i}"}, key=key))
    return tokens


def _jobs(tokens: list[str], name: str) -> Callable[[int, str], Job]:
    def pick(n: int, _request_id: str) -> Job:
        return Job(name, tokens[n], {"target": "shop", "sql": READ_SQL, "params": [n + 1]})

    return pick


def _send_all(url: str, tokens: list[str], name: str, prefix: str, clients: int = 4) -> list[Reply]:
    per_client, rest = divmod(len(tokens), clients)
    assert rest == 0
    return asyncio.run(drive(url, _jobs(tokens, name), clients=clients, prefix=prefix, per_client=per_client))


def test_idp_down_or_stalled_cached_keys_serve(tmp_path: Path, test_db: ScratchDatabase, fault_report: Measure) -> None:
    """With the IdP down, then stalled, the cached keys keep serving and a new kid fails closed.

    Fresh real tokens (never seen by the gateway, signed with a published
    key) are all accepted; tokens with a kid the gateway never saw get a
    well-formed 401 unauthenticated at once (no wait on the dead IdP); the
    gateway opens at most one refresh's worth of connections to the IdP.
    """
    with proxied_provider() as (proxy, idp):
        fresh = [idp.token("reader") for _ in range(33)]
        rotated = _rotated_tokens(idp, 16)
        gw = start_gateway(gateway_settings(tmp_path, idp, test_db), idp, test_db)
        try:
            warm = _send_all(gw.url, fresh[:1], "warm", "idp-warm", clients=1)
            before = proxy.accepted
            proxy.down()
            down_known = _send_all(gw.url, fresh[1:17], "known kid", "idp-down")
            down_new = _send_all(gw.url, rotated[:8], "new kid", "idp-down-kid")
            proxy.stall()
            stalled_known = _send_all(gw.url, fresh[17:33], "known kid", "idp-stall")
            stalled_new = _send_all(gw.url, rotated[8:], "new kid", "idp-stall-kid")
            idp_connections = proxy.accepted - before
            proxy.resume()
        finally:
            stop_gateway(gw)
    everything = warm + down_known + down_new + stalled_known + stalled_new
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", everything)
    fault_report.notes["idp_connections_during_outage"] = idp_connections
    fault_report.notes["max_new_kid_s"] = round(max(r.seconds for r in down_new + stalled_new), 3)
    assert malformed(everything) == []
    assert tally(warm + down_known + stalled_known) == {"200 ok": 33}
    assert tally(down_new + stalled_new) == {"401 unauthenticated": 16}
    assert max(r.seconds for r in everything) < BOUND
    assert idp_connections <= MAX_IDP_CONNECTIONS
    assert fault_report.records_lost == 0


@pytest.mark.slow  # one of the longest fault tests: `make test-long`, `make test-faults`
def test_cold_gateway_with_idp_down_fails_closed_without_hammering(
    tmp_path: Path, test_db: ScratchDatabase, fault_report: Measure
) -> None:
    """A gateway that never reached the IdP refuses every token, tries once per cooldown, never hangs.

    Down (connections reset): 48 requests from 8 clients are all 401
    unauthenticated and the gateway opened at most one refresh's worth of
    connections. Stalled (the IdP accepts and never answers): the concurrent
    requests share one fetch (single flight), fail closed after its timeout,
    later ones at once; again at most one refresh's worth of connections.
    """
    with proxied_provider() as (proxy, idp):
        tokens = [idp.token("reader") for _ in range(96)]
        results = {}
        for phase, fault, batch in (("down", proxy.down, tokens[:48]), ("stalled", proxy.stall, tokens[48:])):
            fault()
            before = proxy.accepted
            gw = start_gateway(gateway_settings(tmp_path / phase, idp, test_db), idp, test_db)
            try:
                started = time.monotonic()
                replies = _send_all(gw.url, batch, "cold", f"cold-{phase}", clients=8)
                results[phase] = (replies, proxy.accepted - before, time.monotonic() - started)
            finally:
                stop_gateway(gw)
            proxy.resume()
    everything = [r for replies, _, _ in results.values() for r in replies]
    fault_report.requests = len(everything)
    fault_report.replies = tally(everything)
    fault_report.records_lost = sum(records_lost(tmp_path / p / "audit.db", results[p][0]) for p in results)
    fault_report.notes["idp_connections"] = {p: results[p][1] for p in results}
    fault_report.notes["seconds"] = {p: round(results[p][2], 1) for p in results}
    assert malformed(everything) == []
    assert tally(everything) == {"401 unauthenticated": 96}
    assert all(connections <= MAX_IDP_CONNECTIONS for _, connections, _ in results.values())
    assert max(r.seconds for r in everything) < BOUND
    assert fault_report.records_lost == 0


def test_cold_gateway_with_slow_idp(tmp_path: Path, test_db: ScratchDatabase, fault_report: Measure) -> None:
    """A slow IdP (every chunk 0.3 s late) only delays the first requests: one shared fetch, then all succeed."""
    with proxied_provider() as (proxy, idp):
        tokens = [idp.token("reader") for _ in range(32)]
        proxy.slow(0.3)
        before = proxy.accepted
        gw = start_gateway(gateway_settings(tmp_path, idp, test_db), idp, test_db)
        try:
            replies = _send_all(gw.url, tokens, "slow idp", "slow-idp", clients=8)
            idp_connections = proxy.accepted - before
        finally:
            stop_gateway(gw)
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = records_lost(tmp_path / "audit.db", replies)
    fault_report.notes["idp_connections"] = idp_connections
    fault_report.notes["max_s"] = round(max(r.seconds for r in replies), 2)
    assert malformed(replies) == []
    assert tally(replies) == {"200 ok": 32}
    assert idp_connections <= MAX_IDP_CONNECTIONS
    assert max(r.seconds for r in replies) < BOUND
    assert fault_report.records_lost == 0
