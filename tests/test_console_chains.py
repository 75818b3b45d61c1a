"""The console's auditor pages on the shared store: every replica's chain listed, a record shown in its own chain."""

from __future__ import annotations

import re
from pathlib import Path

from auditfixture import audit_db
from chainsfixture import record
from conftest import ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from consolefixture import MovableClock, sign_in
from oidcfixture import OidcProvider

from gateway import console
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.settings import AuditDatabaseSettings

__all__ = ["audit_db"]
AUDITOR = ("admin@example.com", ("db-admins",))  # auditor by name in the test policies


def test_console_lists_every_chain_and_shows_a_record_in_its_own_chain(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, audit_db: AuditDatabaseSettings
) -> None:
    """Records of another replica's chain appear in the list; each record page walks its own chain by seq."""
    other = MariaDBAuditStore(audit_db, chain="c2")
    try:
        other.append_batch([record(i, "c2") for i in range(1, 4)])
    finally:
        other.close()
    settings = gateway_settings(
        tmp_path,
        idp,
        test_db,
        dev_mode=True,
        dev={"key_file": tmp_path / "dev-key.pem"},
        audit={"store": "mariadb", "mariadb": audit_db.model_dump(), "replica_id": "c1"},
    )
    gateway = start_gateway(settings, idp, test_db, clock=MovableClock(), pages=console.install)
    try:
        auditor = sign_in(gateway.url, *AUDITOR)
        listing = auditor.get("/console/audit", params={"user": "c2@example.com"})
        assert listing.status_code == 200, listing.text[:300]
        assert set(re.findall(r"/console/audit/record/(\d+)\?chain=c2", listing.text)) == {"1", "2", "3"}
        mine = auditor.get("/console/audit")
        assert "/console/audit/record/1?chain=c1" in mine.text  # this replica's own records (the sign-in, reads)

        page = auditor.get("/console/audit/record/2", params={"chain": "c2"})
        assert page.status_code == 200, page.text[:300]
        assert "Audit record 2 of chain c2" in page.text
        assert "c2-2" in page.text  # the record's own request id: chain c2's seq 2, not c1's
        assert "matches the record" in page.text
        assert "links to record 1" in page.text
        assert "/console/audit/record/3?chain=c2" in page.text
        bad = auditor.get("/console/audit/record/2", params={"chain": "C2; DROP"})
        assert bad.status_code == 422  # refused by the route's chain pattern, before any read
        assert "chain" in bad.text
    finally:
        stop_gateway(gateway)
