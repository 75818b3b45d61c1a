"""``gateway policy export`` / ``import``: the state store's managed documents to files for review, and back."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from auditfixture import audit_db, audit_root_query
from statefixture import state_db

from gateway.audit.factory import open_audit_store
from gateway.audit.query import AuditFilter
from gateway.audit.store import Entry
from gateway.audit.verify import verify
from gateway.cli import db as dbcli
from gateway.cli.main import main
from gateway.settings import AuditDatabaseSettings, AuditSettings, StateDatabaseSettings
from gateway.state.store import StateStore

__all__ = ["audit_db", "state_db"]

BASE = 'version: 1\nroles:\n  admin: ["group:db-admins"]\n'
MANAGED = b"""version: 1
# a reviewer's comment survives the round trip
grants:
  - name: reviewed
    subjects: ["user:ann@example.com"]
    target: shop
    access: read
    db_user: reader
"""


def _config(tmp_path: Path, store: StateDatabaseSettings) -> Path:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.yaml").write_text(BASE, encoding="utf-8")
    open_audit_store(AuditSettings(path=tmp_path / "audit.db")).close()  # the gateway's log, as it made it
    config = {
        "dev_mode": True,
        "policies_dir": str(tmp_path / "base"),
        "audit": {"path": str(tmp_path / "audit.db")},
        "targets": {"shop": {"host": "127.0.0.1", "database": "shop"}},
        "state": {"store": "mariadb", "mariadb": json.loads(store.model_dump_json())},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return path


def test_import_then_export_round_trips_bytes_as_new_revisions(
    tmp_path: Path, state_db: StateDatabaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Import writes the reviewed bytes as revision 1; export gives them back byte for byte with that revision."""
    config = _config(tmp_path, state_db)
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED)
    assert main(["policy", "import", "--config", str(config), str(reviewed), "--if-revision", "0"]) == 0
    assert "as revision 1" in capsys.readouterr().out
    out = tmp_path / "out"
    assert main(["policy", "export", "--config", str(config), "--out", str(out)]) == 0
    assert "at revision 1" in capsys.readouterr().out
    assert (out / "managed.yaml").read_bytes() == MANAGED
    # A stale import (the store moved on since revision 0) is refused and changes nothing.
    assert main(["policy", "import", "--config", str(config), str(reviewed), "--if-revision", "0"]) == 1
    assert "precondition_failed" in capsys.readouterr().err
    store = StateStore.open(state_db)
    try:
        assert store.documents() == (1, {"managed.yaml": MANAGED})
    finally:
        store.close()


def test_import_refuses_an_invalid_document_with_its_line(
    tmp_path: Path, state_db: StateDatabaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A document that does not merge cleanly is refused with ``state:<name>:<line>`` and nothing is written."""
    config = _config(tmp_path, state_db)
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED.replace(b"access: read", b"access: admin"))
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 1
    assert "state:managed.yaml:7: " in capsys.readouterr().err
    (reviewed / "managed.yaml").unlink()
    (reviewed / "base.yaml").write_text(BASE, encoding="utf-8")  # a base file's name
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 1
    assert "has the name of the base file base.yaml" in capsys.readouterr().err
    store = StateStore.open(state_db)
    try:
        assert store.documents() == (0, {})
    finally:
        store.close()


def test_db_commands_plan_for_the_policy_in_force_base_and_managed(
    tmp_path: Path, state_db: StateDatabaseSettings
) -> None:
    """``gateway db plan/check`` take the store's managed documents too (a grant the API wrote needs its rights)."""
    config = _config(tmp_path, state_db)
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED)
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 0
    _, policy, _ = dbcli._inputs(argparse.Namespace(config=config, target=[], policies=None))
    assert [(g.name, g.source_file) for g in policy.grants] == [("reviewed", "managed.yaml")]
    _, files_only, _ = dbcli._inputs(argparse.Namespace(config=config, target=[], policies=tmp_path / "base"))
    assert files_only.grants == ()  # --policies DIR: that directory alone, as before


def test_import_checks_against_the_base_about_to_roll_out(
    tmp_path: Path, state_db: StateDatabaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Moving managed.yaml from the base into the store: refused against today's base, accepted with --base."""
    config = _config(tmp_path, state_db)
    (tmp_path / "base" / "managed.yaml").write_bytes(MANAGED)
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED)
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 1
    assert "has the name of the base file managed.yaml" in capsys.readouterr().err
    new_base = tmp_path / "new-base"
    new_base.mkdir()
    (new_base / "base.yaml").write_text(BASE, encoding="utf-8")
    assert main(["policy", "import", "--config", str(config), str(reviewed), "--base", str(new_base)]) == 0
    assert "as revision 1" in capsys.readouterr().out


def _edits(tmp_path: Path) -> list[Entry]:
    """The ``policy_edit`` records of the test's audit log, newest first (its chain verified first)."""
    log = open_audit_store(AuditSettings(path=tmp_path / "audit.db"), readonly=True)
    try:
        assert verify(log).ok
        return log.query(AuditFilter(event="policy_edit")).entries
    finally:
        log.close()


def test_an_import_writes_its_policy_edit_record(
    tmp_path: Path, state_db: StateDatabaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """One policy_edit record per import: action import, via cli, the operator unverified, the diff, revisions."""
    config = _config(tmp_path, state_db)
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED)
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 0
    (record,) = _edits(tmp_path)
    assert (record["action"], record["file"], record["via"], record["user_verified"]) == (
        "import",
        "state:*",
        "cli",
        False,
    )
    assert "@" in record["user"]
    assert record["detail"] == {"documents": ["managed.yaml"], "store_revision": 1, "previous_store_revision": 0}
    assert "+++ b/state:managed.yaml" in record["diff"]
    assert "+  - name: reviewed\n" in record["diff"]
    assert f"(policy {record['new_revision'][:12]})" in capsys.readouterr().out
    (reviewed / "managed.yaml").unlink()
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 0
    latest = _edits(tmp_path)[0]
    assert latest["detail"]["store_revision"] == 2
    assert "-  - name: reviewed\n" in latest["diff"]
    assert latest["policy_revision"] == record["new_revision"]


def test_no_audit_log_here_means_no_import(
    tmp_path: Path, state_db: StateDatabaseSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded audit log is not where the CLI runs: refused, nothing imported, no new log started."""
    config = _config(tmp_path, state_db)
    (tmp_path / "audit.db").unlink()
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED)
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 1
    err = capsys.readouterr().err
    assert "audit_unavailable" in err
    assert "nothing imported" in err
    assert not (tmp_path / "audit.db").exists()
    store = StateStore.open(state_db)
    try:
        assert store.documents() == (0, {})
    finally:
        store.close()


def test_on_the_shared_audit_store_a_failed_record_rolls_the_import_back(
    tmp_path: Path,
    state_db: StateDatabaseSettings,
    audit_db: AuditDatabaseSettings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """audit.store mariadb: the record lands in the shared store; when MariaDB refuses it, nothing is imported."""
    config = _config(tmp_path, state_db)
    settings = json.loads(config.read_text(encoding="utf-8"))
    settings["audit"] = {"store": "mariadb", "mariadb": json.loads(audit_db.model_dump_json())}
    config.write_text(json.dumps(settings), encoding="utf-8")
    reviewed = tmp_path / "reviewed"
    reviewed.mkdir()
    (reviewed / "managed.yaml").write_bytes(MANAGED)
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 0
    rows = audit_root_query(f"SELECT event, user FROM `{audit_db.database}`.audit_log ORDER BY seq")
    assert [r[0] for r in rows] == ["policy_edit"]
    # The shared audit store refuses every new record (a trigger): the import's claim and writes are rolled back.
    audit_root_query(
        f"CREATE TRIGGER `{audit_db.database}`.refuse BEFORE INSERT ON `{audit_db.database}`.audit_log "
        "FOR EACH ROW SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test'"
    )
    (reviewed / "other.yaml").write_bytes(MANAGED.replace(b"reviewed", b"second"))
    assert main(["policy", "import", "--config", str(config), str(reviewed)]) == 1
    err = capsys.readouterr().err
    assert "audit_unavailable" in err
    assert "nothing imported" in err
    store = StateStore.open(state_db)
    try:
        assert store.documents() == (1, {"managed.yaml": MANAGED})
    finally:
        store.close()
