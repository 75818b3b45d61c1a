"""Execution's own defences, each proven without the classifier in front of it."""

from __future__ import annotations

import orjson
import pytest
from conftest import DB_HOST, DB_PORT, ScratchDatabase, aroot_query, root_query

from gateway.db.credentials import EnvSecret
from gateway.db.execution import Limits, comment_for, run_statement
from gateway.db.pools import ConnectionPool, connector
from gateway.errors import DatabaseError, PayloadTooLarge, StatementTimeout
from gateway.log import scrub_secrets
from gateway.settings import PoolSettings, TargetSettings
from gateway.sql.statements import Kind, Statement


def _pool(db: ScratchDatabase, level: str, monkeypatch: pytest.MonkeyPatch) -> ConnectionPool:
    monkeypatch.setenv(f"GWTEST_EXEC_{level}", db.accounts[level].password)
    target = TargetSettings(host=DB_HOST, port=DB_PORT, database=db.name, pool=PoolSettings(max_size=2))
    return ConnectionPool(
        level, connector(target, db.accounts[level].user, EnvSecret(f"GWTEST_EXEC_{level}")), target.pool
    )


def _raw(sql: str, kind: Kind) -> Statement:
    """A statement as if the classifier had (wrongly) let it through."""
    return Statement(sql, kind, "X", frozenset(), frozenset(), sql, 0, (sql,))


LIMITS = Limits(timeout=5, max_rows=100, max_bytes=1 << 20, read_only=True)


@pytest.mark.anyio
async def test_read_only_session_stops_a_write_the_classifier_missed(
    test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write mislabelled as read, on a write-capable account, is refused by tx_read_only (1792)."""
    pool = _pool(test_db, "writer", monkeypatch)
    async with pool.connection() as conn:
        with pytest.raises(DatabaseError) as err:
            await run_statement(conn, _raw("DELETE FROM orders", Kind.READ), [], LIMITS, comment_for("r1", "u"))
    assert err.value.errno == 1792
    assert await aroot_query(f"SELECT COUNT(*) > 0 FROM `{test_db.name}`.orders") == [(1,)]
    await pool.close()


@pytest.mark.anyio
async def test_reader_account_cannot_write_even_without_read_only(
    test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last layer: the SELECT-only account is refused a write by MariaDB's privileges (1142)."""
    pool = _pool(test_db, "reader", monkeypatch)
    limits = Limits(timeout=5, max_rows=100, max_bytes=1 << 20, read_only=False)
    async with pool.connection() as conn:
        with pytest.raises(DatabaseError) as err:
            await run_statement(conn, _raw("DELETE FROM orders", Kind.WRITE), [], limits, comment_for("r2", "u"))
    assert err.value.errno == 1142
    await pool.close()


def test_gateway_accounts_have_no_dangerous_privileges(test_db: ScratchDatabase) -> None:
    """No account the gateway uses holds FILE, PROCESS, SUPER or CREATE ROUTINE."""
    for account in test_db.accounts.values():
        grants = " ".join(row[0] for row in root_query(f"SHOW GRANTS FOR '{account.user}'@'%'")).upper()
        for privilege in ("FILE", "PROCESS", "SUPER", "CREATE ROUTINE", "ALL PRIVILEGES"):
            assert privilege not in grants, (account.user, privilege)


@pytest.mark.anyio
async def test_max_statement_time_enforced_by_mariadb(
    test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SET STATEMENT max_statement_time stops SLEEP even when the classifier allowed it."""
    pool = _pool(test_db, "reader", monkeypatch)
    limits = Limits(timeout=0.3, max_rows=100, max_bytes=1 << 20, read_only=True)
    async with pool.connection() as conn:
        with pytest.raises(StatementTimeout):
            await run_statement(conn, _raw("SELECT SLEEP(3)", Kind.READ), [], limits, comment_for("r3", "u"))
    async with pool.connection() as conn:
        heavy = _raw("SELECT COUNT(*) FROM items a, items b, items c", Kind.READ)
        with pytest.raises(StatementTimeout):
            await run_statement(conn, heavy, [], limits, comment_for("r4", "u"))
    await pool.close()


@pytest.mark.anyio
async def test_result_bytes_cap(test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    """A result over max_bytes is refused with payload_too_large and the session is discarded."""
    pool = _pool(test_db, "reader", monkeypatch)
    limits = Limits(timeout=5, max_rows=10_000, max_bytes=2_000, read_only=True)
    async with pool.connection() as conn:
        with pytest.raises(PayloadTooLarge):
            await run_statement(conn, _raw("SELECT name FROM items", Kind.READ), [], limits, comment_for("r5", "u"))
        assert conn.discard
    await pool.close()


def test_comment_cannot_be_closed_by_user_text() -> None:
    """The statement comment keeps only safe characters: a hostile user claim cannot end it."""
    comment = comment_for("id-1", "evil */ DROP TABLE x; /*")
    assert comment.count("*/") == 1
    assert comment.endswith("*/")
    assert "DROP TABLE x;" not in comment


def test_log_scrubs_secret_keys() -> None:
    """Log events never carry values under secret-looking keys; token hashes stay."""
    event = scrub_secrets(None, "info", {"password": "p", "access_token": "t", "token_hash": "abc", "user": "u"})
    assert event == {"password": "[redacted]", "access_token": "[redacted]", "token_hash": "abc", "user": "u"}


@pytest.mark.anyio
async def test_every_value_type_encodes_as_the_spec_says(
    test_db: ScratchDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TIME (negative, fractional), DATETIME(6), DATE, DECIMAL, binary, NULL and 64-bit ints as the SPEC fixes."""
    pool = _pool(test_db, "reader", monkeypatch)
    sql = (
        "SELECT CAST('-01:02:03.5' AS TIME(6)), CAST('838:59:59' AS TIME), "
        "CAST('2024-01-02 03:04:05.000006' AS DATETIME(6)), CAST('2024-01-02 03:04:05' AS DATETIME), "
        "CAST('0001-01-01' AS DATE), CAST('12.30' AS DECIMAL(10,2)), X'00FF', NULL, "
        "CAST(18446744073709551615 AS UNSIGNED), -9223372036854775808, 1.5e0, _utf8mb4'h\u00e9'"
    )
    async with pool.connection() as conn:
        result = await run_statement(conn, _raw(sql, Kind.READ), [], LIMITS, comment_for("r6", "u"))
    await pool.close()
    assert orjson.loads(orjson.dumps(result.rows)) == [
        [
            "-01:02:03.500000",
            "838:59:59",
            "2024-01-02T03:04:05.000006",
            "2024-01-02T03:04:05",
            "0001-01-01",
            "12.30",
            "AP8=",
            None,
            18446744073709551615,
            -9223372036854775808,
            1.5,
            "h\u00e9",
        ]
    ]


@pytest.mark.parametrize(("max_rows", "expected", "truncated"), [(2500, 2500, False), (1500, 1500, True), (1, 1, True)])
@pytest.mark.anyio
async def test_rows_over_several_batches_join_into_one_array(
    test_db: ScratchDatabase,
    monkeypatch: pytest.MonkeyPatch,
    max_rows: int,
    expected: int,
    truncated: bool,  # noqa: FBT001 - a parametrized expectation
) -> None:
    """Rows fetched in several batches form one JSON array in order; the cap truncates exactly."""
    pool = _pool(test_db, "reader", monkeypatch)
    limits = Limits(timeout=5, max_rows=max_rows, max_bytes=1 << 24, read_only=True)
    sql = "SELECT seq FROM seq_1_to_2500"
    async with pool.connection() as conn:
        result = await run_statement(conn, _raw(sql, Kind.READ), [], limits, comment_for("r7", "u"))
    await pool.close()
    rows = orjson.loads(orjson.dumps(result.rows))
    assert rows == [[n] for n in range(1, expected + 1)]
    assert (result.row_count, result.truncated) == (expected, truncated)
