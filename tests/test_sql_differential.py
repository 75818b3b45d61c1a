r"""The text MariaDB runs means what the text as sent means (SECURITY rule 25).

A differential test: hypothesis writes statements from MariaDB's literal
forms (every quoting and escape, hex, bit, national, introducers, numbers with
exponents, typed dates, ``\\N``) placed in expression shapes (comparisons,
functions, casts, intervals, ``IN``, ``CASE``, row constructors, ``WHERE``
clauses, writes). Each statement the gateway accepts is run twice on a
scratch database, once as sent and once as the gateway would execute it
(``Statement.executable_sql``), and the two must agree: the same rows with
the same column types, or both an error (the error numbers may differ where
the regenerated text fails at another point: nothing runs either way); writes run in a
transaction that is rolled back, and must change the same rows the same way.
A statement the gateway refuses is the safe outcome and counts as agreeing;
the test also checks that most statements were accepted, so it cannot pass by
refusing everything.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from conftest import DB_HOST, DB_PORT
from fuzzprofile import budget
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.db.pools import INIT_COMMAND
from gateway.errors import StatementRejected
from gateway.sql.statements import SAFE_FUNCTIONS, analyze

pytestmark = pytest.mark.fuzz

TABLE = """CREATE TABLE t (
    id INT PRIMARY KEY, n INT NULL, s VARCHAR(40) NULL, b VARBINARY(8) NULL,
    d DATE NULL, x DECIMAL(10, 2) NULL, f DOUBLE NULL
)"""
ROWS = [
    (0, 0, "", b"", "2020-01-01", "0.00", 0.0),
    (1, 1, "A", b"\x01", "2020-01-02", "1.50", 1.5),
    (2, 65, "a", b"A", "2024-02-29", "-2.25", 1e3),
    (65, 2, "%_\\", b"\x00\x01", None, None, None),
    (66, None, "é", b"\xff", "2020-12-31", "12.00", -0.5),
]

# --- literal forms -------------------------------------------------------------------------------------

_STRING_PIECES = st.sampled_from(
    [
        "a",
        "A",
        "é",
        "0",
        "1",
        "%",
        "_",
        " ",
        "?",
        "\u2028",
        "-",
        "2020-01-01",
        "10:00",
        "$",
        "\\\\",
        "\\n",
        "\\t",
        "\\0",
        "\\Z",
        "\\%",
        "\\_",
        "\\b",
        "\\r",
        "\\z",
        "\\x",
    ]
)


@st.composite
def string_literal(draw: st.DrawFn) -> str:
    """'...' or "..." with backslash escapes, doubled quotes and the other quote inside."""
    quote = draw(st.sampled_from(["'", '"']))
    pieces = draw(
        st.lists(
            st.one_of(_STRING_PIECES, st.sampled_from([f"\\{quote}", quote * 2, "'" if quote == '"' else '"'])),
            max_size=5,
        )
    )
    return f"{quote}{''.join(pieces)}{quote}"


HEX_DIGITS = st.text("0123456789abcdefABCDEF", max_size=6)
NUMBER = st.one_of(
    st.integers(0, 2**70).map(str),
    st.tuples(st.integers(0, 999), st.text("0123456789", max_size=4)).map(lambda p: f"{p[0]}.{p[1]}"),
    st.text("0123456789", min_size=1, max_size=4).map(lambda d: f".{d}"),
    st.tuples(
        st.sampled_from(["1", "1.5", ".5", "2.", "0", "123"]),
        st.sampled_from(["e", "E"]),
        st.sampled_from(["", "+", "-"]),
        st.integers(0, 400),
    ).map(lambda p: f"{p[0]}{p[1]}{p[2]}{p[3]}"),
    st.sampled_from(["00012", "0.0", "18446744073709551615", "18446744073709551616", "-9223372036854775808"]),
)
LITERAL = st.one_of(
    string_literal(),
    NUMBER,
    HEX_DIGITS.map(lambda d: f"X'{d}'"),
    HEX_DIGITS.map(lambda d: f"x'{d}'"),
    HEX_DIGITS.filter(bool).map(lambda d: f"0x{d}"),
    HEX_DIGITS.filter(bool).map(lambda d: f"0X{d}"),
    st.text("01", max_size=9).map(lambda d: f"B'{d}'"),
    st.text("01", max_size=9).map(lambda d: f"b'{d}'"),
    st.text("012", min_size=1, max_size=9).map(lambda d: f"0b{d}"),
    string_literal().filter(lambda s: s.startswith("'")).map(lambda s: f"N{s}"),
    string_literal().filter(lambda s: s.startswith("'")).map(lambda s: f"n{s}"),
    st.tuples(
        st.sampled_from(["_utf8mb4", "_binary", "_latin1"]),
        st.one_of(string_literal(), HEX_DIGITS.map(lambda d: f"X'{d}'")),
    ).map("".join),
    st.tuples(
        st.sampled_from(["DATE", "TIME", "TIMESTAMP", "DATETIME", "DECIMAL"]),
        st.sampled_from(["'2020-01-01'", "'2020-13-45'", "'10:00:00'", "'2020-01-01 10:00:00'", "'20200101'", "'1.5'"]),
    ).map(" ".join),
    st.sampled_from(["TRUE", "FALSE", "NULL", "\\N", "-1", "- -1", "1--1"]),
)

# --- expression shapes ---------------------------------------------------------------------------------

VALUE_SHAPES = [
    "SELECT {0}",
    "SELECT {0} + 0",
    "SELECT {0} = {1}",
    "SELECT {0} IN ({1}, {2})",
    "SELECT HEX({0})",
    "SELECT CONCAT({0}, {1})",
    "SELECT {0} LIKE {1}",
    "SELECT {0} BETWEEN {1} AND {2}",
    "SELECT CASE WHEN {0} THEN {1} ELSE {2} END",
    "SELECT CASE {0} WHEN {1} THEN 'y' END",
    "SELECT -{0}",
    "SELECT NOT {0}",
    "SELECT {0} DIV {1}",
    "SELECT {0} MOD {1}",
    "SELECT IFNULL({0}, {1})",
    "SELECT COALESCE({0}, {1}, {2})",
    "SELECT CAST({0} AS CHAR)",
    "SELECT CAST({0} AS SIGNED)",
    "SELECT CAST({0} AS DATE)",
    "SELECT BINARY {0}",
    "SELECT CONVERT({0} USING utf8mb4)",
    "SELECT {0} <=> {1}",
    "SELECT {0} & {1}",
    "SELECT {0} XOR {1}",
    "SELECT ~{0}",
    "SELECT {0} || {1}",
    "SELECT {0} REGEXP {1}",
    "SELECT {0} SOUNDS LIKE {1}",
    "SELECT LENGTH({0}), CHAR_LENGTH({0})",
    "SELECT SUBSTR({0}, 2)",
    "SELECT LEFT({0}, 1)",
    "SELECT ROUND({0}, 1)",
    "SELECT GREATEST({0}, {1})",
    "SELECT DATE_ADD({0}, INTERVAL {1} DAY)",
    "SELECT {0} + INTERVAL {1} DAY",
    "SELECT INTERVAL {1} DAY + {0}",
    "SELECT {0} - INTERVAL {1} HOUR_MINUTE",
    "SELECT EXTRACT(DAY FROM {0})",
    "SELECT TRIM({0})",
    "SELECT POSITION({0} IN {1})",
    "SELECT (SELECT {0})",
    "SELECT ({0}, {1}) = ({1}, {0})",
    "SELECT {0} IS NULL",
    "SELECT {0} IS TRUE",
    "SELECT {0} COLLATE utf8mb4_bin",
    "SELECT JSON_EXTRACT({0}, '$')",
    "SELECT {0} {1}",
    "SELECT {0} AS v",
    "SELECT {0} v",
    "SELECT 1 FROM DUAL WHERE {0}",
    "SELECT {0} LIMIT 1",
    "SELECT * FROM (SELECT {0} AS v) AS q",
    "SELECT {0} UNION SELECT {1}",
    "SELECT MAX(n) FROM t HAVING {0}",
    "SELECT COUNT(*) FROM t GROUP BY n HAVING COUNT(*) > {0}",
    "SELECT {0} * {1}",
    "SELECT {0} / {1}",
    "SELECT {0} - {1}",
    "SELECT {0} << 2",
    "SELECT {0} > {1}",
    "SELECT {0} != {1}",
    "SELECT {0} <> {1}",
    "SELECT STRCMP({0}, {1})",
    "SELECT MD5({0})",
    "SELECT UNHEX({0})",
    "SELECT ORD({0})",
    "SELECT QUOTE({0})",
    "SELECT IF({0}, {1}, {2})",
    "SELECT NULLIF({0}, {1})",
    "SELECT LOCATE({0}, {1})",
    "SELECT REPEAT({0}, 2)",
]
WHERE_SHAPES = [
    "SELECT id FROM t WHERE n = {0} ORDER BY id",
    "SELECT id FROM t WHERE s = {0} ORDER BY id",
    "SELECT id FROM t WHERE b = {0} ORDER BY id",
    "SELECT id FROM t WHERE d = {0} ORDER BY id",
    "SELECT id FROM t WHERE x = {0} ORDER BY id",
    "SELECT id FROM t WHERE f = {0} ORDER BY id",
    "SELECT id FROM t WHERE id IN ({0}, {1}) ORDER BY id",
    "SELECT id FROM t WHERE s LIKE {0} ORDER BY id",
    "SELECT id FROM t WHERE n > {0} AND s <> {1} ORDER BY id",
    "SELECT id FROM t WHERE d < {0} - INTERVAL {1} DAY",
    "SELECT id, {0} FROM t ORDER BY id LIMIT 3",
    "SELECT id FROM t WHERE s = {0} COLLATE utf8mb4_bin",
]
# Clauses and special call syntax sqlglot has its own nodes for.
STRUCTURE_SHAPES = [
    "SELECT id FROM t WHERE n IN (SELECT {0}) ORDER BY id",
    "SELECT id FROM t WHERE EXISTS (SELECT {0}) ORDER BY id",
    "SELECT id FROM t WHERE n > ANY (SELECT {0}) ORDER BY id",
    "SELECT id FROM t WHERE n = ALL (SELECT {0}) ORDER BY id",
    "SELECT a.id, b.id FROM t AS a JOIN t AS b ON a.n = b.id + {0} ORDER BY 1, 2",
    "SELECT a.id FROM t a LEFT JOIN t b ON b.id = {0} ORDER BY a.id",
    "SELECT n, COUNT(*) FROM t GROUP BY n WITH ROLLUP",
    "SELECT id FROM t ORDER BY id LIMIT 1, 2",
    "SELECT id FROM t ORDER BY id LIMIT 2 OFFSET 1",
    "SELECT {0} UNION ALL SELECT {1}",
    "SELECT {0} UNION DISTINCT SELECT {1}",
    "SELECT {0} INTERSECT SELECT {1}",
    "SELECT {0} EXCEPT SELECT {1}",
    "WITH c AS (SELECT {0} AS v) SELECT v FROM c",
    "WITH RECURSIVE c (k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM c WHERE k < 3) SELECT k, {0} FROM c",
    "SELECT DISTINCT n FROM t ORDER BY n",
    "SELECT CONVERT({0}, CHAR)",
    "SELECT CAST({0} AS DECIMAL(5, 2))",
    "SELECT CAST({0} AS CHAR CHARACTER SET latin1)",
    "SELECT CAST({0} AS UNSIGNED)",
    "SELECT CAST({0} AS TIME)",
    "SELECT CAST({0} AS DATETIME)",
    "SELECT CAST({0} AS DOUBLE)",
    "SELECT CAST({0} AS BINARY(2))",
    "SELECT CHAR({0} USING latin1)",
    "SELECT CHAR({0}, {1})",
    "SELECT TRIM(BOTH {0} FROM {1})",
    "SELECT TRIM(LEADING {0} FROM {1})",
    "SELECT TRIM(TRAILING {0} FROM {1})",
    "SELECT SUBSTRING({0} FROM 2 FOR 1)",
    "SELECT SUBSTRING({0}, {1}, {2})",
    "SELECT SUBSTR({0} FROM {1})",
    "SELECT GROUP_CONCAT(DISTINCT s ORDER BY s DESC SEPARATOR {0}) FROM t",
    "SELECT GROUP_CONCAT({0}) FROM t",
    "SELECT EXTRACT(YEAR_MONTH FROM {0})",
    "SELECT EXTRACT(HOUR FROM {0})",
    "SELECT POSITION({0} IN s) FROM t ORDER BY id",
    "SELECT {0} NOT LIKE {1}",
    "SELECT {0} LIKE {1} ESCAPE '!'",
    "SELECT {0} NOT BETWEEN {1} AND {2}",
    "SELECT {0} NOT IN ({1})",
    "SELECT {0} IS NOT NULL",
    "SELECT {0} IS UNKNOWN",
    "SELECT ROW({0}, 1) = ROW({1}, 1)",
    "SELECT ({0}, {1}) IN (({1}, {0}))",
    "SELECT TIMESTAMPADD(MINUTE, {0}, {1})",
    "SELECT TIMESTAMPDIFF(MONTH, {0}, {1})",
    "SELECT GET_FORMAT(DATE, {0})",
    "SELECT DATE_SUB({0}, INTERVAL {1} MINUTE)",
    "SELECT COUNT(DISTINCT n, s) FROM t",
    "SELECT AVG(DISTINCT n) FROM t",
    "SELECT SUM(n) FROM t WHERE n < {0}",
    "SELECT id, ROW_NUMBER() OVER (PARTITION BY n ORDER BY id) FROM t ORDER BY id",
    "SELECT id, SUM(n) OVER w FROM t WINDOW w AS (ORDER BY id) ORDER BY id",
    "SELECT id, LAG(n, 1, {0}) OVER (ORDER BY id) FROM t ORDER BY id",
    "SELECT id, SUM(n) OVER (ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t ORDER BY id",
    "SELECT JSON_OBJECT({0}, {1})",
    "SELECT JSON_ARRAY({0}, {1})",
    "SELECT JSON_VALUE({0}, '$.a')",
    "SELECT * FROM JSON_TABLE({0}, '$[*]' COLUMNS (v VARCHAR(10) PATH '$')) AS j",
    "SELECT {0} MOD {1}, {0} % {1}",
    "SELECT !{0} + 1",
    "SELECT NOT {0} + 1",
    "SELECT {0} && {1}",
    "SELECT {0} AND NOT {1}",
    "SELECT (SELECT MAX(id) FROM t WHERE n < {0})",
    "SELECT * FROM (SELECT id FROM t ORDER BY id LIMIT 2) AS q",
    "SELECT id FROM t WHERE s = BINARY {0}",
    "SELECT id FROM t WHERE s COLLATE utf8mb4_bin = {0}",
    "SELECT CASE WHEN n = 1 THEN {0} WHEN n = 2 THEN {1} END FROM t ORDER BY id",
    "SELECT MAX(id) FROM t GROUP BY n HAVING MAX(id) > {0} ORDER BY 1",
]
WRITE_SHAPES = [
    "INSERT INTO t (id, s) SELECT id + 200, {0} FROM t",
    "INSERT IGNORE INTO t (id, s) VALUES (1, {0})",
    "UPDATE t SET n = {0} ORDER BY id DESC LIMIT 2",
    "DELETE FROM t WHERE n > {0} ORDER BY id LIMIT 1",
    "UPDATE t AS a JOIN t AS b ON a.id = b.n SET a.s = {0}",
    "DELETE a FROM t AS a JOIN t AS b ON a.id = b.n WHERE b.id > {0}",
    "INSERT INTO t (id, n) VALUES (1, {0}) ON DUPLICATE KEY UPDATE n = VALUES(n) + 1",
    "REPLACE INTO t (id, s) SELECT id, {0} FROM t WHERE id = 2",
    "INSERT INTO t SET id = 103, s = {0}",
    "UPDATE t SET s = CONCAT(s, {0}), n = n * 2 WHERE id IN (1, 2)",
    "DELETE FROM t WHERE s LIKE {0}",
    "UPDATE t SET n = n + 1 WHERE n = {0}",
    "UPDATE t SET s = {0} WHERE id = 1",
    "DELETE FROM t WHERE b = {0}",
    "INSERT INTO t (id, s) VALUES (100, {0})",
    "INSERT INTO t (id, b) VALUES (101, {0})",
    "UPDATE t SET x = {0} WHERE id = {1}",
    "DELETE FROM t WHERE id = {0}",
    "REPLACE INTO t (id, s) VALUES (1, {0})",
    "INSERT INTO t (id, n) VALUES (102, {0}) ON DUPLICATE KEY UPDATE n = {1}",
    "UPDATE t SET d = {0} WHERE id = 2",
]

# Every safe built-in with one, two and three arguments: sqlglot renames some calls (IFNULL -> COALESCE,
# LCASE -> LOWER), which must keep their meaning. Calls whose value changes from one call to the next are left out.
_SPECIAL = {"CASE", "CAST", "CONVERT", "EXISTS", "MATCH", "ROW", "COLLATE", "EXTRACT", "POSITION", "TRIM", "JSON_TABLE"}
_VOLATILE = {
    "RAND",
    "UUID",
    "SYS_GUID",
    "NOW",
    "SYSDATE",
    "CURDATE",
    "CURTIME",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "UNIX_TIMESTAMP",
}
FUNCTION_SHAPES = [
    f"SELECT {name}({args})"
    for name in sorted(SAFE_FUNCTIONS - _SPECIAL - _VOLATILE)
    for args in ("{0}", "{0}, {1}", "{0}, {1}, {2}")
]

LINK_ERRORS = {0, 2006, 2013}  # no error number, server gone, connection lost

SHAPES = st.one_of(
    st.sampled_from(VALUE_SHAPES).map(lambda s: ("value", s)),
    st.sampled_from(FUNCTION_SHAPES).map(lambda s: ("value", s)),
    st.sampled_from(WHERE_SHAPES).map(lambda s: ("where", s)),
    st.sampled_from(STRUCTURE_SHAPES).map(lambda s: ("value", s)),
    st.sampled_from(WRITE_SHAPES).map(lambda s: ("write", s)),
)


class Scratch:
    """A scratch database with table ``t``, on connections set up as the gateway sets up its own."""

    def __init__(self) -> None:
        self.name = f"gwdiff_{secrets.token_hex(4)}"
        self.conn = self.connect()
        with self.conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{self.name}`")
            cur.execute(TABLE)
            cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s)", ROWS)

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        """A new connection like the gateway's (its sql_mode, utf8mb4, autocommit)."""
        return pymysql.connect(
            host=DB_HOST,
            port=DB_PORT,
            user=os.environ.get("GATEWAY_TEST_DB_ROOT_USER", "root"),
            password=os.environ.get("GATEWAY_TEST_DB_ROOT_PASSWORD", ""),
            database=database,
            charset="utf8mb4",
            init_command=INIT_COMMAND,
            autocommit=True,
        )

    def outcome(self, sql: str, *, write: bool) -> tuple[Any, ...]:
        """What MariaDB makes of ``sql``: rows and column types, or affected rows and the table after; or the error.

        A result the client library cannot read (text that is not UTF-8) ends its connection: that is an
        outcome too ("lost"), and the next statement gets a new connection.
        """
        try:
            return _outcome(self.conn, sql, write=write)
        except (pymysql.MySQLError, UnicodeDecodeError) as error:
            self.conn.close()
            self.conn = self.connect(self.name)
            return ("lost", type(error).__name__)

    def drop(self) -> None:
        """Drop the scratch database."""
        with self.conn.cursor() as cur:
            cur.execute(f"DROP DATABASE `{self.name}`")
        self.conn.close()


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    """The scratch database for this module, dropped after."""
    database = Scratch()
    try:
        yield database
    finally:
        database.drop()


def _outcome(conn: pymysql.connections.Connection, sql: str, *, write: bool) -> tuple[Any, ...]:
    with conn.cursor() as cur:
        try:
            if write:
                cur.execute("START TRANSACTION")
                try:
                    cur.execute(sql)
                    affected = cur.rowcount
                    cur.execute("SELECT * FROM t ORDER BY id")
                    return ("ok", affected, cur.fetchall())
                finally:
                    conn.rollback()
            cur.execute(sql)
            types = tuple(d[1] for d in cur.description or ())
            return ("ok", types, cur.fetchall())
        except pymysql.MySQLError as error:
            errno = error.args[0] if error.args and isinstance(error.args[0], int) else 0
            if conn.open and errno not in LINK_ERRORS:
                return ("error", errno)
            raise


SEEN: Counter[str] = Counter()


@settings(max_examples=budget(600), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=SHAPES, literals=st.lists(LITERAL, min_size=3, max_size=3))
def test_executed_text_means_what_was_sent(scratch: Scratch, shape: tuple[str, str], literals: list[str]) -> None:
    """As sent and as executed, MariaDB returns the same rows and types, changes the same rows, or fails alike."""
    kind, template = shape
    sql = template.format(*literals)
    try:
        statement = analyze(sql, default_database="diff")
    except StatementRejected:
        SEEN["refused"] += 1
        return
    SEEN["accepted"] += 1
    assert statement.placeholders == 0
    write = kind == "write"
    sent = scratch.outcome(sql, write=write)
    executed = scratch.outcome(statement.executable_sql, write=write)
    if sent[0] == executed[0] == "error":
        # Nothing ran either way; where the regenerated text fails at another point the numbers differ.
        SEEN["both failed" if sent == executed else "both failed, other errno"] += 1
        return
    assert executed == sent, f"{sql!r} ran as {statement.executable_sql!r}"


def test_the_differential_mostly_compares_rather_than_refuses() -> None:
    """Most generated statements were accepted and compared: the test above cannot pass by refusing all."""
    total = SEEN["accepted"] + SEEN["refused"]
    assert total >= budget(600) // 2, SEEN
    assert SEEN["accepted"] >= total * 0.6, SEEN


def test_every_safe_function_is_a_mariadb_builtin(scratch: Scratch) -> None:
    """Each allow-listed name is native to MariaDB, so no stored function can stand behind it (rule 13).

    A name MariaDB does not know as a built-in answers 1305 ("FUNCTION db.name does not exist"): such a
    name, called unqualified, would run a stored function of the current database if one existed.
    """
    unknown = [n for n in sorted(SAFE_FUNCTIONS) if scratch.outcome(f"SELECT {n}()", write=False) == ("error", 1305)]
    assert unknown == []
    assert scratch.outcome("SELECT no_such_builtin()", write=False) == ("error", 1305)  # the probe can fail
