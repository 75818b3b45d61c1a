"""What an audit record may hold and what verification covers (SECURITY rules 22, 23 and 29).

Every field of every record is capped before either store sees it; literal
redaction covers every field that carries statement text (a transaction's
statements too); and ``verify`` compares every plain column a row keeps for
filters with its hashed record, in both real stores.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from auditfixture import audit_db, audit_root_query
from fuzzprofile import budget
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.caps import RecordCaps, bound_record, cut_text
from gateway.audit.format import format_time
from gateway.audit.log import AuditLog
from gateway.audit.mariadb import MariaDBAuditStore
from gateway.audit.records import AuditReadRecord, AuthRecord, DecisionRecord, OutcomeRecord, Who
from gateway.audit.sqlite import SQLiteAuditStore
from gateway.audit.verify import verify
from gateway.settings import AuditDatabaseSettings

__all__ = ["audit_db"]

NOW = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
MB8 = 8 * 1024 * 1024


def record(i: int, **extra: object) -> dict[str, object]:
    """A decision record with every filter column set."""
    return {
        "event": "decision",
        "request_id": f"req-{i}",
        "time": format_time(NOW.replace(second=i % 60)),
        "user": "alice@example.com",
        "target": "shop",
        "decision": "allow",
        "code": "ok",
        "statement": f"SELECT name FROM users WHERE id = {i}",
        **extra,
    }


@pytest.mark.anyio
async def test_an_8mb_field_is_stored_cut_with_a_marker(tmp_path: Path) -> None:
    """An 8 MB user agent, claimed user or reason is stored as its first 4,096 characters plus a marker."""
    log = AuditLog(SQLiteAuditStore(tmp_path / "audit.db"), clock=lambda: NOW)
    huge = "A" * MB8
    who = Who(request_id="r-1", user_agent=huge, user=huge, client="10.0.0.1")
    entry = await log.append(AuthRecord(who=who, code="unauthenticated", reason=huge))
    await log.close()
    for name in ("user_agent", "user", "reason"):
        assert entry[name] == "A" * 4096 + f"…[truncated, {MB8} chars]"
    with closing(sqlite3.connect(tmp_path / "audit.db")) as conn:
        (size,) = conn.execute("SELECT length(record) FROM audit").fetchone()
    assert size < 16 * 1024  # three capped fields, not 24 MB


@pytest.mark.anyio
async def test_lists_nested_values_and_statements_are_bounded(tmp_path: Path) -> None:
    """Long lists keep their first entries plus a count; deep nesting is cut; a statement has its own cap."""
    caps = RecordCaps(text=10, statement=20, items=3, depth=2)
    log = AuditLog(SQLiteAuditStore(tmp_path / "audit.db"), caps=caps)
    who = Who(request_id="r-1", user=None, groups=tuple(f"group-{n}" for n in range(10)))
    entry = await log.append(
        DecisionRecord(
            who=who,
            target="t",
            statement=("SELECT 1 FROM t WHERE x = 'abcdefghijkl'", "SELECT 2"),
            transaction=True,
            decision="deny",
            code="forbidden",
        )
    )
    read = await log.append(
        AuditReadRecord(who=who, reason="q", filters={"deep": {"deeper": {"deepest": 1}}, "k" * 50: "v"})
    )
    await log.close()
    assert entry["groups"] == ["group-0", "group-1", "group-2", "…[+7 more]"]
    assert entry["statement"] == [cut_text("SELECT 1 FROM t WHERE x = 'abcdefghijkl'", 20), "SELECT 2"]
    assert read["filters"] == {"deep": {"deeper": "…[nested too deep]"}, cut_text("k" * 50, 10): "v"}


@pytest.mark.fuzz
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=60),
        lambda inner: st.lists(inner, max_size=12) | st.dictionaries(st.text(max_size=30), inner, max_size=12),
        max_leaves=60,
    )
)
@settings(max_examples=budget(200))
def test_every_bounded_record_fits_its_caps(value: object) -> None:
    """Whatever a field holds, the bounded record has no string, list or mapping over its cap."""
    caps = RecordCaps(text=16, statement=32, items=4, depth=3)
    bounded = bound_record({"event": "x", "field": value, "statement": value}, caps)

    def check(item: object, text_cap: int, depth: int) -> None:
        if isinstance(item, str):
            assert len(item) <= text_cap + len("…[truncated, 99999 chars]")
        elif isinstance(item, list):
            assert depth <= caps.depth
            assert len(item) <= caps.items + 1
            for inner in item:
                check(inner, text_cap, depth + 1)
        elif isinstance(item, dict):
            assert depth <= caps.depth
            assert len(item) <= caps.items + 1
            for key, inner in item.items():
                check(key, caps.text, depth + 1)
                check(inner, caps.text, depth + 1)

    check(bounded["field"], caps.text, 1)
    check(bounded["statement"], caps.statement, 1)
    orjson.dumps(bounded)


@pytest.mark.anyio
async def test_redaction_covers_transactions_and_database_errors(tmp_path: Path) -> None:
    """With redact_literals on, a transaction's statements and a MariaDB error message lose their literals."""
    log = AuditLog(SQLiteAuditStore(tmp_path / "audit.db"), redact_literals=True)
    who = Who(request_id="r-1", user="alice")
    decision = await log.append(
        DecisionRecord(
            who=who,
            target="t",
            transaction=True,
            statement=("UPDATE t SET pw = 'hunter2' WHERE id = 7", "DELETE FROM t WHERE card = '4111'"),
            decision="allow",
            code="ok",
        )
    )
    outcome = await log.append(
        OutcomeRecord(
            who=who,
            target="t",
            duration_ms=1.0,
            code="database_error",
            error="(1062) Duplicate entry 'hunter2' for key 'PRIMARY'",
        )
    )
    await log.close()
    assert decision["statement"] == ["UPDATE t SET pw = ? WHERE id = ?", "DELETE FROM t WHERE card = ?"]
    assert outcome["error"] == "(?) Duplicate entry ? for key ?"
    with closing(sqlite3.connect(tmp_path / "audit.db")) as conn:
        stored = b"".join(r[0] for r in conn.execute("SELECT record FROM audit"))
        (column,) = conn.execute("SELECT statement FROM audit WHERE seq = 1").fetchone()
    assert b"hunter2" not in stored
    assert b"4111" not in stored
    assert "hunter2" not in column


# Each filter column, and a value an attacker might set it to so that the row drops out of a filter.
COLUMN_EDITS = [
    ("user", "'nobody@example.com'"),
    ("time", "'1999-01-01T00:00:00.000000Z'"),
    ("request_id", "'req-other'"),
    ("event", "'outcome'"),
    ("target", "'other'"),
    ("decision", "'deny'"),
    ("code", "'forbidden'"),
    ("statement", "'SELECT 1'"),
    ("user", "NULL"),
]


@pytest.mark.parametrize(("column", "value"), COLUMN_EDITS)
def test_sqlite_verify_finds_an_edited_filter_column(tmp_path: Path, column: str, value: str) -> None:
    """Editing a plain column of the SQLite store (the record left alone) hides the row from filters: verify says so."""
    path = tmp_path / "audit.db"
    store = SQLiteAuditStore(path)
    store.append_batch([record(i) for i in range(1, 8)])
    assert verify(store).ok
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"UPDATE audit SET {column} = {value} WHERE seq = 4")
    result = verify(store)
    store.close()
    assert not result.ok
    assert result.problems == [f"seq 4: stored column(s) {column} differ from the hashed record (row edited)"]


def test_sqlite_verify_finds_a_renumbered_row(tmp_path: Path) -> None:
    """Changing a row's seq column (its record says otherwise) is found."""
    store = SQLiteAuditStore(tmp_path / "audit.db")
    store.append_batch([record(i) for i in range(1, 4)])
    with closing(sqlite3.connect(tmp_path / "audit.db")) as conn, conn:
        conn.execute("UPDATE audit SET seq = 50 WHERE seq = 3")
    result = verify(store)
    store.close()
    assert not result.ok
    assert "seq 3: stored column(s) seq differ from the hashed record (row edited)" in result.problems


@pytest.mark.parametrize(
    ("column", "value"),
    [*((c, v) for c, v in COLUMN_EDITS if c != "time"), ("time", "'1999-01-01 00:00:00'")],
)
def test_mariadb_verify_finds_an_edited_filter_column(audit_db: AuditDatabaseSettings, column: str, value: str) -> None:
    """Editing a plain column of the shared MariaDB store is found by verify, for every filter column."""
    store = MariaDBAuditStore(audit_db, chain="r1")
    try:
        store.append_batch([record(i) for i in range(1, 8)])
        assert verify(store).ok
        audit_root_query(f"UPDATE `{audit_db.database}`.audit_log SET {column} = {value} WHERE seq = 4")
        result = verify(store)
    finally:
        store.close()
    assert not result.ok
    assert result.problems == [
        f"chain 'r1': seq 4: stored column(s) {column} differ from the hashed record (row edited)"
    ]


def test_mariadb_columns_cut_to_width_still_verify(audit_db: AuditDatabaseSettings) -> None:
    """A value longer than its column is stored cut; verify compares it cut the same way, so a clean log passes."""
    store = MariaDBAuditStore(audit_db)
    try:
        store.append_batch([record(1, user="u" * 1000, target="t" * 500, code="c" * 100)])
        result = verify(store)
    finally:
        store.close()
    assert result.ok, result.problems
