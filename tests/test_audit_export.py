"""`gateway audit export` and `gateway audit verify` on both stores, and the progress bar."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import orjson
import pytest
from auditfixture import audit_db, audit_root_query
from rich.console import Console

from gateway.audit.export import CSV_COLUMNS, csv_value
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.query import DEFAULT_LIMIT, AuditFilter
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.store import AuditPage, Entry
from gateway.audit.verify import verify
from gateway.cli.audit import progress_bar
from gateway.cli.main import main
from gateway.settings import AuditDatabaseSettings

__all__ = ["audit_db"]


def make_record(i: int) -> dict[str, object]:
    """A record with the awkward parts CSV must survive: commas, quotes, newlines, lists, numbers."""
    return {
        "event": "decision" if i % 2 else "outcome",
        "request_id": f"exp-{i}",
        "time": f"2026-04-01T10:00:{i:02d}.000000Z",
        "user": "alice@example.com" if i % 3 else "bob@example.com",
        "user_verified": True,
        "groups": ["analysts", "x,y"],
        "target": "shop",
        "statement": f"SELECT \"a,b\", 'q'\nFROM items WHERE id = {i}",
        "decision": "allow",
        "code": "ok",
        "rows": i,
        "duration_ms": 1.5,
        "custom_field": {"nested": [1, 2]},
    }


class ListStore:
    """Our own AuditStore over exported entries (read only), to verify an export offline."""

    def __init__(self, entries: list[Entry]) -> None:
        self.entries = entries

    def append_batch(self, records: Sequence[Mapping[str, object]]) -> list[Entry]:
        raise NotImplementedError("an export is read only")

    def iter_entries(self, after_seq: int = 0, batch: int = 1000) -> Iterator[Entry]:
        return iter(self.entries)

    def last(self) -> Entry | None:
        return self.entries[-1] if self.entries else None

    def query(
        self, filters: AuditFilter, cursor: str | None = None, limit: int = DEFAULT_LIMIT, *, oldest_first: bool = False
    ) -> AuditPage:
        raise NotImplementedError("verify reads entries in seq order, it never queries")

    def close(self) -> None:
        pass


def write_config(path: Path, audit: str) -> Path:
    """A minimal gateway config whose audit section is ``audit`` (YAML flow mapping)."""
    config = path / "gateway.yaml"
    config.write_text(
        "dev_mode: true\n"
        "listen: {host: 127.0.0.1, port: 1}\n"
        "targets: {shop: {host: 127.0.0.1, database: shop}}\n"
        f"audit: {audit}\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def sqlite_log(tmp_path: Path) -> Path:
    """An embedded audit file with 12 records."""
    path = tmp_path / "audit.db"
    store = SQLiteAuditStore(path)
    store.append_batch([make_record(i) for i in range(1, 13)])
    store.close()
    return path


def stored(path: Path) -> list[Entry]:
    """The entries as the store holds them, in chain order."""
    store = SQLiteAuditStore(path)
    try:
        return list(store.iter_entries())
    finally:
        store.close()


def test_jsonl_export_round_trips_and_verifies_offline(
    sqlite_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSON-lines export holds every entry exactly as stored, so the export itself verifies."""
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--path", str(sqlite_log), "--format", "jsonl", "-o", str(out)]) == 0
    exported = [orjson.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert exported == stored(sqlite_log)
    assert verify(ListStore(exported)).ok
    assert "exported 12 records" in capsys.readouterr().err


def test_csv_export_round_trips(sqlite_log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CSV export (to standard output) reads back to the stored entries, commas and newlines included."""
    assert main(["audit", "export", "--path", str(sqlite_log), "--format", "csv"]) == 0
    reader = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    back: list[dict[str, object]] = []
    for row in reader:
        entry = {k: csv_value(k, v) for k, v in row.items() if k != "extra"}
        extra = csv_value("extra", row["extra"])
        assert extra is None or isinstance(extra, dict)
        entry.update(extra or {})
        back.append({k: v for k, v in entry.items() if v is not None})
    assert back == stored(sqlite_log)


def test_export_filters_oldest_first(sqlite_log: Path, tmp_path: Path) -> None:
    """Filters narrow the export; filtered entries come oldest first."""
    out = tmp_path / "bob.jsonl"
    assert main(["audit", "export", "--path", str(sqlite_log), "--user", "bob@example.com", "-o", str(out)]) == 0
    exported = [orjson.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [e["request_id"] for e in exported] == ["exp-3", "exp-6", "exp-9", "exp-12"]
    out2 = tmp_path / "text.jsonl"
    args = ["--since", "2026-04-01T10:00:05Z", "--until", "2026-04-01T10:00:08Z", "-q", "ID = 6"]
    assert main(["audit", "export", "--path", str(sqlite_log), *args, "-o", str(out2)]) == 0
    assert [orjson.loads(line)["request_id"] for line in out2.read_text(encoding="utf-8").splitlines()] == ["exp-6"]


def test_export_and_verify_read_the_shared_store_from_the_config(
    audit_db: AuditDatabaseSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With audit.store mariadb, export and verify read the shared store; verify exits 1 on a tampered row."""
    store = MariaDBAuditStore(audit_db)
    store.append_batch([make_record(i) for i in range(1, 6)])
    entries = list(store.iter_entries())
    store.close()
    config = write_config(
        tmp_path,
        f"{{store: mariadb, mariadb: {{host: {audit_db.host}, port: {audit_db.port}, "
        f"database: {audit_db.database}, user: {audit_db.user}, secret: {{env: {audit_db.secret.env}}}}}}}",
    )
    out = tmp_path / "shared.jsonl"
    assert main(["audit", "export", "--config", str(config), "-o", str(out)]) == 0
    assert [orjson.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == entries
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith("ok: 5 records")
    audit_root_query(f"DELETE FROM `{audit_db.database}`.audit_log WHERE seq = 2")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "seq 2: missing" in capsys.readouterr().err


def test_progress_bar_draws_on_a_terminal_only() -> None:
    """On a terminal the (rich) bar ends on the final count of the total; off a terminal it writes nothing."""
    drawn_on = io.StringIO()
    with progress_bar("exported", 200, Console(file=drawn_on, force_terminal=True, width=120)) as progress:
        progress(50)
        progress(200)
    drawn = drawn_on.getvalue()
    assert "exported" in drawn
    assert "200/200" in drawn
    assert "100%" in drawn
    quiet = io.StringIO()
    with progress_bar("verified", None, Console(file=quiet, force_terminal=False)) as progress:
        progress(10)
    assert quiet.getvalue() == ""


def test_a_missing_audit_file_is_an_error_not_an_empty_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Verify or export on a file that does not exist fails (exit 2) and creates nothing."""
    missing = tmp_path / "missing.db"
    assert main(["audit", "verify", "--path", str(missing)]) == 2
    assert main(["audit", "export", "--path", str(missing)]) == 2
    assert "audit store file not found" in capsys.readouterr().err
    assert not missing.exists()


# Cells a spreadsheet would evaluate as formulas, and one that must read back with its own leading quote.
FORMULAS = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\t=x", "\r=x", "'=already quoted"]


def test_csv_export_neutralises_formula_cells_and_reads_them_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cells starting with = + - @ tab CR get a leading ' (numbers stay numbers); csv_value restores them exactly."""
    path = tmp_path / "audit.db"
    store = SQLiteAuditStore(path)
    records = [
        {
            "event": "auth",
            "request_id": f"f-{n}",
            "user": formula,
            "user_agent": formula,
            "groups": [formula],
            "reason": formula,
            "rows": -5,
            "custom": formula,
        }
        for n, formula in enumerate(FORMULAS)
    ]
    store.append_batch(records)
    store.close()
    assert main(["audit", "export", "--path", str(path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for row, formula in zip(rows, FORMULAS, strict=True):
        for column in ("user", "user_agent", "reason"):
            assert row[column] == "'" + formula
        assert row["rows"] == "-5"  # a plain number is data, not a formula
        assert all(cell == "" or cell[0] not in "=+-@\t\r" for name, cell in row.items() if name != "rows")
        back = {k: csv_value(k, v) for k, v in row.items()}
        assert (back["user"], back["groups"], back["extra"]) == (formula, [formula], {"custom": formula})
