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
from dataclasses import dataclass
from pathlib import Path

import pytest
from auditfixture import audit_root_query, scratch_audit_db
from conftest import RunningGateway, start_gateway, stop_gateway
from faultfixture import Measure, PrivateDatabase, Records, count_lost, fault_settings, records_lost
from faultload import POLL, Reply, count, drive, malformed, mixed, tally, until
from faultproxy import FaultProxy
from oidcfixture import OidcProvider
from structlog.testing import capture_logs

from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.verify import verify

pytestmark = pytest.mark.faults

LOAD_BOUND = 30.0  # seconds for the load to warm up, and for an outage to reach it
STALL_BOUND = 15.0  # a request through a stalled store link is answered within this (the store's timeouts), or hangs


def _rows_written(private_db: PrivateDatabase, prefix: str) -> set[str]:
    rows = private_db.server.query(f"SELECT note FROM {private_db.db.name}.orders WHERE note LIKE %s", (f"{prefix}-%",))
    return {str(row[0]) for row in rows}


def _unrecorded(
    private_db: PrivateDatabase, prefix: str, records: Records, replies: list[Reply]
) -> tuple[list[str], list[str]]:
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
            records[str(entry.get("client_request_id"))].append(
                (entry["event"], entry.get("decision"), entry.get("code"))
            )
        return records
    finally:
        store.close()


def test_sqlite_store_full(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
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


@pytest.mark.slow  # one of the longest fault tests: `make test-long`, `make test-faults`
def test_shared_store_cut_stalled_and_revoked(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """The shared MariaDB store unreachable (link down), hung (link stalled) and refusing INSERT (privilege revoked).

    In each phase statements are refused with a well-formed 503
    audit_unavailable within the store's timeouts (past STALL_BOUND a stalled
    request counts as a hang, which fails the phase), and none runs: no refused
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
            stalled = drive(gw.url, pick, clients=4, prefix="shared-stall", per_client=1, request_timeout=STALL_BOUND)
            phases["stalled"] = asyncio.run(stalled)
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
    assert unrecorded == []
    assert ran_refused == []
    assert lost == 0
    assert verified.ok, verified.problems


def _kept_for_retry(gw: RunningGateway) -> int:
    """Records (outcomes) the audit writer keeps across a failed commit, for a retry."""
    return int(gw.services.audit._retrying)


def _writes_waiting(private_db: PrivateDatabase) -> int:
    """The gateway's INSERTs into ``orders`` waiting on MariaDB now (from its processlist)."""
    rows = private_db.server.query(
        "SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s AND command = 'Query' AND info LIKE %s",
        (private_db.db.accounts["writer"].user, "%INSERT INTO orders%"),
    )
    return int(rows[0][0])


async def _load_through_outage(
    gw: RunningGateway, private_db: PrivateDatabase, proxy: FaultProxy, prefix: str, *, resume: bool
) -> Onset:
    """Load the gateway; cut the store's link while statements run; wait until the outage fails their outcomes.

    The timeline is made of conditions, not sleeps: once replies flow, a root
    session locks ``orders``, so the next INSERTs have their decision
    recorded and then wait in MariaDB (seen in its processlist); the store's
    link goes down, the lock is released, those statements finish and queue
    their outcome records into the outage; the wait ends once the writer keeps
    such records across a failed commit (the fault really reached the outcome
    path). ``resume``: the link is back before the load ends (replies waiting
    for their outcome record can then finish).
    """
    pick = mixed({"reader": gw.idp.token("reader"), "writer": gw.idp.token("writer")}, writes=5)
    stop, live = asyncio.Event(), list[Reply]()
    load = asyncio.create_task(drive(gw.url, pick, clients=8, prefix=prefix, stop=stop, replies=live))
    kept, waiting = 0, 0
    try:
        await until(lambda: count(live, "ok") >= 8, LOAD_BOUND, "8 requests succeeded before the outage")
        lock = await asyncio.to_thread(private_db.server.root)
        try:
            await asyncio.to_thread(lock.query, f"LOCK TABLES `{private_db.db.name}`.orders WRITE")
            deadline = time.monotonic() + LOAD_BOUND
            while (waiting := await asyncio.to_thread(_writes_waiting, private_db)) == 0:
                assert time.monotonic() < deadline, "no INSERT waited on the locked table"
                await asyncio.sleep(POLL)
            await asyncio.to_thread(proxy.down)
            down = time.monotonic()
            await asyncio.to_thread(lock.query, "UNLOCK TABLES")
        finally:
            await asyncio.to_thread(lock.close)

        def outcome_failed() -> bool:
            nonlocal kept
            kept = max(kept, _kept_for_retry(gw))
            return kept > 0

        await until(outcome_failed, LOAD_BOUND, "the outage failed a commit of outcome records, kept for a retry")
        if resume:
            await asyncio.to_thread(proxy.resume)
    finally:
        stop.set()
    return Onset(await load, down, kept, waiting)


@dataclass
class Onset:
    """The load across the outage: its replies, when the link went down, most records kept for a retry."""

    replies: list[Reply]
    down: float
    kept: int
    writes_waiting: int  # INSERTs waiting on the locked table when the store went down


@pytest.mark.parametrize("await_outcome", [False, True], ids=["queued-outcomes", "awaited-outcomes"])
def test_store_fails_as_replies_go_out(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure, *, await_outcome: bool
) -> None:
    """The shared store goes down while replies go out and is back soon after: no record is lost.

    Outcome records are queued, not awaited, by default; a queued outcome
    record is not failed by a failed commit but kept and retried until the
    store takes it (the test waits until that has happened). With
    ``audit.await_outcome: true`` each reply waits for its outcome record
    anyway. Either way every answered request has its decision record
    (nothing ran unrecorded) and its outcome record; requests whose decision
    could not be recorded were refused with 503 audit_unavailable.
    """
    with scratch_audit_db() as direct, FaultProxy(direct.host, direct.port) as proxy:
        via_proxy = direct.model_copy(update={"port": proxy.port, "connect_timeout": 2.0})
        audit = {"store": "mariadb", "mariadb": via_proxy, "await_outcome": await_outcome}
        gw = start_gateway(fault_settings(tmp_path, idp, private_db, audit=audit), idp, private_db.db)
        try:
            onset = asyncio.run(_load_through_outage(gw, private_db, proxy, "onset", resume=True))
            assert gw.audit_settled_within(20)
        finally:
            stop_gateway(gw)
        records = _mariadb_records(direct.database)
    replies = onset.replies
    lost = count_lost(records, replies)
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = lost
    fault_report.notes.update(
        await_outcome=await_outcome, writes_waiting=onset.writes_waiting, kept_for_retry=onset.kept
    )
    assert malformed(replies) == []
    assert set(tally(replies)) <= {"200 ok", "403 forbidden", "503 audit_unavailable"}
    assert onset.kept > 0  # the fault happened: outcome records queued in the outage failed to commit
    assert lost == 0


def test_store_still_down_at_shutdown_logs_what_it_could_not_store(
    tmp_path: Path, idp: OidcProvider, private_db: PrivateDatabase, fault_report: Measure
) -> None:
    """The store goes down as replies go out and stays down through shutdown: nothing vanishes.

    The test waits until outcome records of answered requests are kept for a
    retry (the outage really caught them); every outcome record the store
    could not take is then logged whole (``audit_record_unsaved``) once the
    close retry window ends, so the log stream still carries it.
    """
    with scratch_audit_db() as direct, FaultProxy(direct.host, direct.port) as proxy:
        via_proxy = direct.model_copy(update={"port": proxy.port, "connect_timeout": 1.0})
        gw = start_gateway(
            fault_settings(tmp_path, idp, private_db, audit={"store": "mariadb", "mariadb": via_proxy}),
            idp,
            private_db.db,
        )
        try:
            onset = asyncio.run(_load_through_outage(gw, private_db, proxy, "down", resume=False))
        finally:
            with capture_logs() as logs:
                stop_gateway(gw)
        records = _mariadb_records(direct.database)
    replies = onset.replies
    unsaved = {e["record"].get("client_request_id") for e in logs if e["event"] == "audit_record_unsaved"}
    answered = [r for r in replies if r.code in {"ok", "forbidden"}]
    missing = {
        r.request_id for r in replies if r.code == "ok" and "outcome" not in {e for e, _, _ in records[r.request_id]}
    }
    fault_report.requests = len(replies)
    fault_report.replies = tally(replies)
    fault_report.records_lost = len(missing - unsaved)
    fault_report.notes.update(
        outcomes_logged_unsaved=len(unsaved), writes_waiting=onset.writes_waiting, kept_for_retry=onset.kept
    )
    assert set(tally(replies)) <= {"200 ok", "403 forbidden", "503 audit_unavailable"}
    assert all(any(e == "decision" for e, _, _ in records[r.request_id]) for r in answered)
    assert missing  # the fault happened: answered requests whose outcome the store never took
    assert missing <= unsaved


def _report(measure: Measure, before: list[Reply], faulty: list[Reply], after: list[Reply], lost: int) -> None:
    everything = before + faulty + after
    measure.requests = len(everything)
    measure.replies = tally(everything)
    measure.records_lost = lost
    measure.notes["while_faulty"] = tally(faulty)
