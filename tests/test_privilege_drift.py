"""The gateway's own privilege check (``gateway.db.drift``): start-up, reload, /readyz, metric, log, refuse mode.

A scratch database of this module's own, with accounts provisioned from the
integration policies' plan (so they start clean); each test gives an account
more on purpose and takes it back after. Gateways run on the real OIDC
provider and MariaDB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    SEQUENCE_TABLES,
    RunningGateway,
    ScratchDatabase,
    gateway_settings,
    integration_policy,
    root_connection,
    root_query,
    run,
    start_gateway,
    stop_gateway,
)
from oidcfixture import OidcProvider
from structlog.testing import capture_logs
from test_dbcheck import scratch_names

from gateway.db.driftstate import AccountState, DriftState
from gateway.db.pools import PoolRegistry
from gateway.db.provision import Account, drop, grant_extra, provision
from gateway.errors import GatewayError
from gateway.policy.decide import Decision
from gateway.settings import SecretSource, TargetSettings


@pytest.fixture(scope="module")
def drift_db() -> Iterator[ScratchDatabase]:
    """A demo-shaped database whose accounts hold exactly the integration policies' plan."""
    name, prefix = scratch_names()

    async def setup() -> dict[str, Account]:
        conn = await root_connection()
        try:
            return await provision(conn, name, prefix, policy=integration_policy, sequence_tables=SEQUENCE_TABLES)
        finally:
            conn.close()

    accounts = run(setup())
    try:
        yield ScratchDatabase(name, prefix, accounts)
    finally:

        async def teardown() -> None:
            conn = await root_connection()
            try:
                await drop(conn, name, prefix)
            finally:
                conn.close()

        run(teardown())


def _grant(db: ScratchDatabase, level: str, table: str) -> None:
    async def give() -> None:
        conn = await root_connection()
        try:
            await grant_extra(conn, db.accounts[level].user, ["SELECT"], db.name, table=table)
        finally:
            conn.close()

    run(give())


def _revoke(db: ScratchDatabase, level: str, table: str) -> None:
    root_query(f"REVOKE SELECT ON `{db.name}`.`{table}` FROM '{db.accounts[level].user}'@'%'")


def _privileges(http: httpx.Client) -> dict[str, Any]:
    return dict(http.get("/readyz").json()["checks"]["privileges"])


def _wait_for(http: httpx.Client, done: Callable[[dict[str, Any]], bool], seconds: float = 20) -> dict[str, Any]:
    """Poll /readyz until ``done(privileges entry)``; fail with the last entry seen."""
    deadline = time.monotonic() + seconds
    while True:
        entry = _privileges(http)
        if done(entry):
            return entry
        if time.monotonic() > deadline:
            pytest.fail(f"privilege check never got there: {entry}")
        time.sleep(0.05)


def _status(db: ScratchDatabase, level: str) -> Callable[[dict[str, Any]], str | None]:
    key = f"shop/{db.accounts[level].user}"
    return lambda entry: entry["accounts"].get(key, {}).get("status")


def _query(gw: RunningGateway, user: str, sql: str) -> httpx.Response:
    with gw.client(user) as http:
        return http.post("/v1/query", json={"target": "shop", "sql": sql})


def test_drift_shows_in_readyz_the_metric_and_a_log_event(
    tmp_path: Path, idp: OidcProvider, drift_db: ScratchDatabase
) -> None:
    """An account holding a denied table: /readyz details, the drift metric and a log event; warn still serves it."""
    reader, writer = drift_db.accounts["reader"].user, drift_db.accounts["writer"].user
    _grant(drift_db, "reader", "payment_cards")
    try:
        with capture_logs() as logs:
            gw = start_gateway(gateway_settings(tmp_path, idp, drift_db, env_prefix="GWDRIFT"), idp, drift_db)
            try:
                with gw.client("admin") as http:  # readiness details are for admins
                    entry = _wait_for(http, lambda e: _status(drift_db, "reader")(e) == "drift")
                    entry = _wait_for(http, lambda e: _status(drift_db, "writer")(e) == "clean")
                    ready = http.get("/readyz")
                    metrics = http.get("/metrics").text
                served = _query(gw, "reader", "SELECT COUNT(*) FROM items")
            finally:
                stop_gateway(gw)
    finally:
        _revoke(drift_db, "reader", "payment_cards")
    excess = [f"SELECT ON `{drift_db.name}`.`payment_cards`"]
    assert ready.status_code == 200  # reported, never gating
    assert entry["ok"] is False
    assert entry["required"] is False
    mine = entry["accounts"][f"shop/{reader}"]
    assert (mine["status"], mine["mode"], mine["excess_count"], mine["excess"]) == ("drift", "warn", 1, excess)
    assert f'gateway_db_privilege_drift{{db_user="{reader}",target="shop"}} 1.0' in metrics
    assert f'gateway_db_privilege_drift{{db_user="{writer}",target="shop"}} 0.0' in metrics
    assert f'gateway_db_privilege_check_failed{{db_user="{reader}",target="shop"}} 0.0' in metrics
    events = [e for e in logs if e["event"] == "db_privilege_drift"]
    assert events
    assert {(e["target"], e["db_user"], e["mode"], e["excess_count"]) for e in events} == {("shop", reader, "warn", 1)}
    assert events[0]["excess"] == excess
    assert events[0]["log_level"] == "warning"
    assert served.status_code == 200, served.text  # warn: reported, still served


def test_refuse_stops_only_the_drifting_account_until_a_recheck_finds_it_clean(
    tmp_path: Path, idp: OidcProvider, drift_db: ScratchDatabase
) -> None:
    """Refuse mode on the target: reader statements get 503 privilege_drift, the writer's run; fixed, it serves."""
    reader = drift_db.accounts["reader"].user
    _grant(drift_db, "reader", "payment_cards")
    settings = gateway_settings(tmp_path, idp, drift_db, env_prefix="GWDRIFT")
    shop = settings.targets["shop"].model_copy(update={"privilege_drift": "refuse"})  # global default stays warn
    gw = start_gateway(settings.model_copy(update={"targets": {"shop": shop}}), idp, drift_db)
    try:
        with gw.client("admin") as http:  # readiness details are for admins
            _wait_for(http, lambda e: _status(drift_db, "reader")(e) == "drift")
            _wait_for(http, lambda e: _status(drift_db, "writer")(e) == "clean")
            refused = _query(gw, "reader", "SELECT COUNT(*) FROM items")
            written = _query(gw, "writer", "SELECT COUNT(*) FROM items")
            with gw.client("reader") as streamer:
                body = {"target": "shop", "sql": "SELECT id FROM items"}
                stream = streamer.post("/v1/query", json=body, headers={"Accept": "application/x-ndjson"})
            _revoke(drift_db, "reader", "payment_cards")
            policy = tmp_path / "policies" / "policy.yaml"
            policy.write_text(policy.read_text(encoding="utf-8") + "# touched: re-check\n", encoding="utf-8")
            entry = _wait_for(http, lambda e: _status(drift_db, "reader")(e) == "clean")
            served = _query(gw, "reader", "SELECT COUNT(*) FROM items")
    finally:
        stop_gateway(gw)
        _revoke_quietly(drift_db, "reader", "payment_cards")
    problem = refused.json()
    assert (refused.status_code, problem["code"]) == (503, "privilege_drift")  # the gateway's own check refused
    assert reader in problem["detail"]
    assert "privileges.drift: refuse" in problem["detail"]
    assert refused.headers["retry-after"] == "30"
    assert (stream.status_code, stream.json()["code"]) == (503, "privilege_drift")
    assert written.status_code == 200, written.text
    assert entry["accounts"][f"shop/{reader}"]["mode"] == "refuse"
    assert served.status_code == 200, served.text


def _revoke_quietly(db: ScratchDatabase, level: str, table: str) -> None:
    rows = root_query(f"SHOW GRANTS FOR '{db.accounts[level].user}'@'%'")
    if any(f"`{table}`" in row[0] for row in rows):
        _revoke(db, level, table)


def test_a_policy_reload_rechecks_every_account(tmp_path: Path, idp: OidcProvider, drift_db: ScratchDatabase) -> None:
    """A policy edit that stops needing a right turns the account into drift, and the edit back clears it."""
    reader = drift_db.accounts["reader"].user
    with capture_logs() as logs:
        gw = start_gateway(gateway_settings(tmp_path, idp, drift_db, env_prefix="GWDRIFT"), idp, drift_db)
        try:
            with gw.client("admin") as http:  # readiness details are for admins
                first = _wait_for(http, lambda e: e["ok"] and len(e["accounts"]) == 3)
                policy = tmp_path / "policies" / "policy.yaml"
                original = policy.read_text(encoding="utf-8")
                narrowed = original.replace('.payment_*"]', '.payment_*", "' + drift_db.name + '.customers"]', 1)
                assert narrowed != original
                policy.write_text(narrowed, encoding="utf-8")
                drifted = _wait_for(http, lambda e: _status(drift_db, "reader")(e) == "drift")
                policy.write_text(original, encoding="utf-8")
                clean = _wait_for(http, lambda e: _status(drift_db, "reader")(e) == "clean")
        finally:
            stop_gateway(gw)
    assert {a["status"] for a in first["accounts"].values()} == {"clean"}
    mine = drifted["accounts"][f"shop/{reader}"]
    assert mine["excess"] == [f"{right} ON `{drift_db.name}`.`customers`" for right in ("SELECT", "SHOW VIEW")]
    assert (
        clean["accounts"][f"shop/{reader}"]["policy_revision"] == first["accounts"][f"shop/{reader}"]["policy_revision"]
    )
    events = [e["event"] for e in logs if e.get("db_user") == reader]
    assert events[:1] == ["db_privileges_clean"]
    assert "db_privilege_drift" in events
    assert events[-1] == "db_privileges_clean"


def test_refuse_mode_serves_only_accounts_checked_clean() -> None:
    """The pool registry's hook: pending or failed checks are database_unavailable, drift is privilege_drift."""
    target = TargetSettings(host="127.0.0.1", database="shop", secrets={"u": SecretSource(env="UNUSED")})
    state = DriftState({"shop": "refuse"})
    decision = Decision(allowed=True, code="allowed", reason="allowed by grant g", target="shop", db_user="u")

    async def outcome() -> str:
        registry = PoolRegistry({"shop": target}, drift=state)
        await registry.open()
        try:
            registry.pool_for(decision)
        except GatewayError as exc:
            return f"{exc.status} {exc.code}: {exc.detail}"
        finally:
            await registry.close()
        return "served"

    assert asyncio.run(outcome()).startswith("503 database_unavailable: the privileges of db_user u")
    state.record("shop", "u", AccountState("error", detail="no answer within 10s"))
    assert asyncio.run(outcome()).endswith("are not verified: no answer within 10s (privileges.drift: refuse)")
    state.record("shop", "u", AccountState("drift", excess=("FILE ON *.*",)))
    assert asyncio.run(outcome()).startswith("503 privilege_drift: db_user u on target shop holds 1 privileges")
    state.record("shop", "u", AccountState("clean"))
    assert asyncio.run(outcome()) == "served"
    warned = DriftState()  # warn (the default) never refuses
    warned.record("shop", "u", AccountState("drift", excess=("FILE ON *.*",)))
    assert warned.refusal("shop", "u") is None
