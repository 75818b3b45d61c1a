"""Fault suite: the audit store full (SQLite at its page limit) or unwritable (shared store cut, INSERT revoked).

Whatever the store does, no statement runs unrecorded: a write refused with
audit_unavailable is not in the table (checked in MariaDB directly), every
row written has its allow decision in the store, and service resumes when
the store is back.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest
from auditfixture import audit_root_query, scratch_audit_db
from conftest import start_gateway, stop_gateway
from faultfixture import Records, count_lost, fault_settings, records_lost
from faultload import Reply, drive, malformed, mixed, tally
from faultproxy import FaultProxy
from structlog.testing import capture_logs

from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.verify import verify

pytestmark = pytest.mark.faults


def _rows_written(private_db, prefix: str) -> set[str]:
    rows = private_db.server.query(f"SELECT note FROM {private_db.db.name}.orders WHERE note LIKE %s", (f"{prefix}-%",))
    return {row[0] for row in rows}


def _unrecorded(private_db, prefix: str, records: Records, replies: list[Reply]) -> tuple[list[str], list[str]]:
    """Rows in the table without an allow decision; refused writes that are in the table anyway."""
    written = _rows_written(private_db, prefix)
    unrecorded = [n for n in written if not any(e == "decision" and d == "allow" for e, d, _ in records[n])]
    refused = {r.request_id for r in replies if r.job == "write" and r.code == "audit_unavailable"}
    return unrecorded, sorted(refused & written)


def _sqlite_records(path: Path) -> Records:
    store = SQLiteAuditStore(path, readonly=True)
    try:
        records: Records = defaultdict(list)
        for entry in store.iter_entries():
            records[entry.get("client_request_id")].append((entry["event"], entry.get("decision"), entry.get("code")))
        return records
    finally:
        store.close()


def test_sqlite_store_full(tmp_path, idp, private_db, fault_report):
    """The embedded store at its page limit (SQLITE_FULL): statements refused, none unrecorded; then it resumes.

    ``PRAGMA max_page_count`` on the gateway's own store connection caps the
    file at its current size, so SQLite itself answers "database or disk is
    full". While full: only 503 audit_unavailable (or, while the last free
    bytes last, normal replies); no refused write reaches the table. With the
    cap lifted, every request succeeds with both records, and the chain verifies.
    """
    stores: list[SQLiteAuditStore] = []

    def factory() -> SQLiteAuditStore:
        stores.append(SQLiteAuditStore(tmp_path / "audit.db"))
        return stores[-1]

    gw = start_gateway(fault_settings(tmp_path, idp, private_db), idp, private_db.db, audit_store=factory)
    writer = stores[0]  # the lifespan opens the writer's store first, then the auditors' reader
    pick = mixed({"reader": idp.token("reader"), "writer": idp.token("writer")}, writes=5)

    def set_cap(pages: int | None) -> None:
        with writer._lock:
            if pages is None:
                pages = writer._conn.execute("PRAGMA page_count").fetchone()[0]
            writer._conn.execute(f"PRAGMA max_page_count = {pages}")

    try:
        before = asyncio.run(drive(gw.url, pick, clients=4, prefix="full-before", per_client=5))
        gw.audit_settled()  # the last outcome records are queued, not awaited: let them land first
        set_cap(None)
        full = asyncio.run(drive(gw.url, pick, clients=4, prefix="full", per_client=10))
        set_cap(1_073_741_823)
        after = asyncio.run(drive(gw.url, pick, clients=4, prefix="full-after", per_client=5))
    finally:
        stop_gateway(gw)
    records = _sqlite_records(tmp_path / "audit.db")
    unrecorded, ran_refused = _unrecorded(private_db, "full", records, full)
    _report(fault_report, before, full, after, records_lost(tmp_path / "audit.db", before + after))
    fault_report.notes["outcomes_lost_while_full"] = records_lost(tmp_path / "audit.db", full)
    assert malformed(before + full + after) == []
    assert set(tally(before)) == set(tally(after)) == {"200 ok", "403 forbidden"}
    assert tally(full).get("503 audit_unavailable", 0) >= 30
    assert set(tally(full)) <= {"503 audit_unavailable", "200 ok", "403 forbidden"}
    assert unrecorded == []
    assert ran_refused == []
    assert fault_report.records_lost == 0
    store = SQLiteAuditStore(tmp_path / "audit.db", readonly=True)
    try:
        assert verify(store).ok
    finally:
        store.close()


def _mariadb_records(database: str) -> Records:
    rows = audit_root_query(
        # As text: over the binary record column JSON_VALUE answers bytes.
        "SELECT JSON_VALUE(CONVERT(record USING utf8mb4), '$.client_request_id'), event, decision, code"
        f" FROM `{database}`.audit_log ORDER BY seq"
    )
    records: Records = defaultdict(list)
    for request_id, event, decision, code in rows:
        records[request_id].append((event, decision, code))
    return records


def test_shared_store_cut_stalled_and_revoked(tmp_path, idp, private_db, fault_report):
    """The shared MariaDB store unreachable (link down), hung (link stalled) and refusing INSERT (privilege revoked).

    In each phase statements are refused with a well-formed 503
    audit_unavailable within the store's timeouts, and none runs: no refused
    write is in the table, every row written has its allow decision. When the
    link is back and the privilege granted again, service resumes by itself
    and the chain verifies.
    """
    with scratch_audit_db() as direct, FaultProxy(direct.host, direct.port) as proxy:
        via_proxy = direct.model_copy(update={"port": proxy.port, "connect_timeout": 2.0, "query_timeout": 0.5})
        settings = fault_settings(tmp_path, idp, private_db, audit={"store": "mariadb", "mariadb": via_proxy})
        gw = start_gateway(settings, idp, private_db.db)
        pick = mixed({"reader": idp.token("reader"), "writer": idp.token("writer")}, writes=5)
        phases: dict[str, list[Reply]] = {}
        account = f"'{direct.user}'@'%'"
        try:
            phases["before"] = asyncio.run(drive(gw.url, pick, clients=4, prefix="shared-before", per_client=4))
            gw.audit_settled()  # the last outcome records are queued, not awaited: let them land first
            proxy.down()
            phases["down"] = asyncio.run(drive(gw.url, pick, clients=4, prefix="shared-down", per_client=4))
            proxy.stall()
            phases["stalled"] = asyncio.run(drive(gw.url, pick, clients=4, prefix="shared-stall", per_client=1))
            proxy.resume()
            audit_root_query(f"REVOKE INSERT ON `{direct.database}`.* FROM {account}")
            proxy.cut()  # database privileges apply from the next connection's USE on
            phases["revoked"] = asyncio.run(drive(gw.url, pick, clients=4, prefix="shared-revoked", per_client=4))
            audit_root_query(f"GRANT INSERT ON `{direct.database}`.* TO {account}")
            phases["after"] = asyncio.run(drive(gw.url, pick, clients=4, prefix="shared-after", per_client=4))
        finally:
            stop_gateway(gw)
        records = _mariadb_records(direct.database)
        store = MariaDBAuditStore(direct, readonly=True)
        try:
            verified = verify(store)
        finally:
            store.close()
        faulty = phases["down"] + phases["stalled"] + phases["revoked"]
        unrecorded, ran_refused = _unrecorded(private_db, "shared", records, faulty)
        lost = count_lost(records, phases["before"] + phases["after"])
    _report(fault_report, phases["before"], faulty, phases["after"], lost)
    fault_report.notes["by_phase"] = {name: tally(replies) for name, replies in phases.items()}
    fault_report.notes["max_stalled_s"] = round(max(r.seconds for r in phases["stalled"]), 2)
    everything = [r for replies in phases.values() for r in replies]
    assert malformed(everything) == []
    for name in ("down", "stalled", "revoked"):
        assert tally(phases[name]) == {"503 audit_unavailable": len(phases[name])}, name
    assert set(tally(phases["before"])) == set(tally(phases["after"])) == {"200 ok", "403 forbidden"}
    assert max(r.seconds for r in everything) < 15
    assert unrecorded == []
    assert ran_refused == []
    assert lost == 0
    assert verified.ok, verified.problems


@pytest.mark.parametrize("await_outcome", [False, True], ids=["queued-outcomes", "awaited-outcomes"])
def test_store_fails_as_replies_go_out(tmp_path, idp, private_db, fault_report, await_outcome):
    """The shared store goes down the moment replies go out and is back a second later: no record is lost.

    Outcome records are queued, not awaited, by default; a queued outcome
    record is not failed by a failed commit but kept and retried until the
    store takes it. With ``audit.await_outcome: true`` each reply waited for
    its outcome record anyway. Either way every answered request has its
    decision record (nothing ran unrecorded) and its outcome record.
    """
    with scratch_audit_db() as direct, FaultProxy(direct.host, direct.port) as proxy:
        via_proxy = direct.model_copy(update={"port": proxy.port, "connect_timeout": 2.0})
        audit = {"store": "mariadb", "mariadb": via_proxy, "await_outcome": await_outcome}
        gw = start_gateway(fault_settings(tmp_path, idp, private_db, audit=audit), idp, private_db.db)
        pick = mixed({"reader": idp.token("reader"), "writer": idp.token("writer")}, writes=5)
        try:
            asyncio.run(drive(gw.url, pick, clients=4, prefix="onset-warm", per_client=2))
            gw.audit_settled()
            replies = asyncio.run(drive(gw.url, pick, clients=8, prefix="onset", per_client=2))
            proxy.down()
            time.sleep(1.0)  # queued outcome records fail and wait for a retry meanwhile
            proxy.resume()
            assert gw.audit_settled_within(20)
        finally:
            stop_gateway(gw)
        records = _mariadb_records(direct.database)
    lost = count_lost(records, replies)
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = lost
    fault_report.notes["await_outcome"] = await_outcome
    assert malformed(replies) == []
    assert set(tally(replies)) == {"200 ok", "403 forbidden"}
    assert lost == 0


def test_store_still_down_at_shutdown_logs_what_it_could_not_store(tmp_path, idp, private_db, fault_report):
    """The store goes down as replies go out and stays down through shutdown: nothing vanishes.

    Every outcome record the store could not take is logged whole
    (``audit_record_unsaved``) once the close retry window ends, so the log
    stream still carries it.
    """
    with scratch_audit_db() as direct, FaultProxy(direct.host, direct.port) as proxy:
        via_proxy = direct.model_copy(update={"port": proxy.port, "connect_timeout": 1.0})
        gw = start_gateway(
            fault_settings(tmp_path, idp, private_db, audit={"store": "mariadb", "mariadb": via_proxy}),
            idp,
            private_db.db,
        )
        pick = mixed({"reader": idp.token("reader"), "writer": idp.token("writer")}, writes=5)
        try:
            asyncio.run(drive(gw.url, pick, clients=4, prefix="down-warm", per_client=2))
            gw.audit_settled()
            replies = asyncio.run(drive(gw.url, pick, clients=8, prefix="down", per_client=2))
            proxy.down()
        finally:
            with capture_logs() as logs:
                stop_gateway(gw)
        records = _mariadb_records(direct.database)
    unsaved = {e["record"].get("client_request_id") for e in logs if e["event"] == "audit_record_unsaved"}
    missing = {
        r.request_id for r in replies if r.code == "ok" and "outcome" not in {e for e, _, _ in records[r.request_id]}
    }
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = len(missing - unsaved)
    fault_report.notes["outcomes_logged_unsaved"] = len(unsaved)
    assert all(any(e == "decision" for e, _, _ in records[r.request_id]) for r in replies)
    assert missing <= unsaved


def _report(measure, before: list[Reply], faulty: list[Reply], after: list[Reply], lost: int) -> None:
    everything = before + faulty + after
    measure.requests = len(everything)
    measure.replies = tally(everything)
    measure.records_lost = lost
    measure.notes["while_faulty"] = tally(faulty)
