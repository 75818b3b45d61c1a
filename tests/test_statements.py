from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import PayloadTooLarge, StatementRejected
from gateway.sql.statements import SAFE_FUNCTIONS, Kind, Statement, analyze

DB = "shop"


def run(sql: str, database: str = DB) -> Statement:
    """Analyse ``sql`` for a target whose default database is ``database``."""
    return analyze(sql, default_database=database)


def read_grant_refuses(statement: Statement) -> bool:
    """What the policy does for a read grant with no extra functions."""
    return statement.kind is not Kind.READ or not statement.functions <= SAFE_FUNCTIONS


# --- classification -------------------------------------------------------------------------

CLASSIFIED = [
    ("SELECT 1", Kind.READ, "SELECT"),
    ("SELECT 1;", Kind.READ, "SELECT"),
    ("  select a from t where b = ?  ", Kind.READ, "SELECT"),
    ("SELECT 1 UNION SELECT 2", Kind.READ, "UNION"),
    ("SELECT 1 INTERSECT SELECT 2", Kind.READ, "INTERSECT"),
    ("SELECT 1 EXCEPT SELECT 2", Kind.READ, "EXCEPT"),
    ("(SELECT 1) UNION (SELECT 2) ORDER BY 1", Kind.READ, "UNION"),
    ("(SELECT a FROM t)", Kind.READ, "SELECT"),
    ("WITH c AS (SELECT 1) SELECT * FROM c", Kind.READ, "SELECT"),
    ("TABLE t", Kind.READ, "SELECT"),
    ("VALUES ROW(1, 2)", Kind.READ, "VALUES"),
    ("SELECT 1 FROM DUAL", Kind.READ, "SELECT"),
    ("INSERT INTO t (a) VALUES (?)", Kind.WRITE, "INSERT"),
    ("INSERT INTO t SET a = 1", Kind.WRITE, "INSERT"),
    ("INSERT INTO t SELECT * FROM u", Kind.WRITE, "INSERT"),
    ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)", Kind.WRITE, "INSERT"),
    ("REPLACE INTO t (a) VALUES (1)", Kind.WRITE, "REPLACE"),
    ("replace t SET a = ?", Kind.WRITE, "REPLACE"),
    ("UPDATE t SET a = 1 WHERE b = 2", Kind.WRITE, "UPDATE"),
    ("DELETE FROM t WHERE a = 1", Kind.WRITE, "DELETE"),
    ("DELETE FROM t RETURNING *", Kind.WRITE, "DELETE"),
    ("WITH x AS (SELECT 1) DELETE FROM t", Kind.WRITE, "DELETE"),
    ("SELECT * FROM t FOR UPDATE", Kind.WRITE, "SELECT FOR UPDATE"),
    ("SELECT * FROM t LOCK IN SHARE MODE", Kind.WRITE, "SELECT LOCK IN SHARE MODE"),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) AS x", Kind.WRITE, "SELECT FOR UPDATE"),
    ("CREATE TABLE t (a INT)", Kind.DDL, "CREATE TABLE"),
    ("CREATE OR REPLACE TABLE t (a INT) ENGINE=InnoDB", Kind.DDL, "CREATE TABLE"),
    ("CREATE TABLE t AS SELECT * FROM u", Kind.DDL, "CREATE TABLE"),
    ("CREATE VIEW v AS SELECT * FROM t", Kind.DDL, "CREATE VIEW"),
    ("CREATE INDEX i ON t (a)", Kind.DDL, "CREATE INDEX"),
    ("ALTER TABLE t ADD COLUMN b INT", Kind.DDL, "ALTER TABLE"),
    ("ALTER VIEW v AS SELECT 2", Kind.DDL, "ALTER VIEW"),
    ("DROP TABLE IF EXISTS t", Kind.DDL, "DROP TABLE"),
    ("DROP VIEW v", Kind.DDL, "DROP VIEW"),
    ("DROP INDEX i ON t", Kind.DDL, "DROP INDEX"),
    ("TRUNCATE TABLE t", Kind.DDL, "TRUNCATE TABLE"),
    ("TRUNCATE t", Kind.DDL, "TRUNCATE TABLE"),
    ("CREATE TEMPORARY TABLE t (a INT)", Kind.OTHER, "CREATE TEMPORARY TABLE"),
    ("DROP TEMPORARY TABLE t", Kind.OTHER, "DROP TEMPORARY TABLE"),
    ("CREATE FUNCTION f() RETURNS INT RETURN 1", Kind.OTHER, "CREATE FUNCTION"),
    ("CREATE PROCEDURE p() SELECT 1", Kind.OTHER, "CREATE PROCEDURE"),
    ("CREATE DATABASE d", Kind.OTHER, "CREATE DATABASE"),
    ("DROP DATABASE d", Kind.OTHER, "DROP DATABASE"),
    ("DROP FUNCTION f", Kind.OTHER, "DROP FUNCTION"),
    ("CREATE SEQUENCE s", Kind.OTHER, "CREATE SEQUENCE"),
    ("SET GLOBAL read_only = 0", Kind.OTHER, "SET"),
    ("SET SESSION tx_read_only = 0", Kind.OTHER, "SET"),
    ("SET NAMES latin1", Kind.OTHER, "SET"),
    ("SET TRANSACTION READ WRITE", Kind.OTHER, "SET"),
    ("USE mysql", Kind.OTHER, "USE"),
    ("SHOW PROCESSLIST", Kind.OTHER, "SHOW PROCESSLIST"),
    ("SHOW TABLES", Kind.OTHER, "SHOW TABLES"),
    ("KILL 1", Kind.OTHER, "KILL"),
    ("KILL QUERY 1", Kind.OTHER, "KILL"),
    ("COMMIT", Kind.OTHER, "COMMIT"),
    ("ROLLBACK", Kind.OTHER, "ROLLBACK"),
    ("BEGIN", Kind.OTHER, "START TRANSACTION"),
    ("START TRANSACTION", Kind.OTHER, "START TRANSACTION"),
    ("EXPLAIN SELECT * FROM t", Kind.OTHER, "DESCRIBE"),
    ("EXPLAIN ANALYZE SELECT * FROM t", Kind.OTHER, "DESCRIBE"),
    ("DESCRIBE t", Kind.OTHER, "DESCRIBE"),
    ("ANALYZE TABLE t", Kind.OTHER, "ANALYZE"),
]


@pytest.mark.parametrize(("sql", "kind", "command"), CLASSIFIED)
def test_statements_are_classified_from_an_allow_list(sql: str, kind: Kind, command: str) -> None:
    """Reads, writes (incl. writes in WITH, REPLACE, locking reads), DDL and the rest (rule 11)."""
    statement = run(sql)
    assert (statement.kind, statement.command) == (kind, command)


# --- tables -----------------------------------------------------------------------------------

TABLES = [
    ("SELECT * FROM items", {"shop.items"}),
    ("SELECT * FROM Shop.Items AS I", {"shop.items"}),
    ("SELECT * FROM `Items` i JOIN other.`T` USING (id)", {"shop.items", "other.t"}),
    ("SELECT * FROM INFORMATION_SCHEMA.TABLES", {"information_schema.tables"}),
    ("SELECT * FROM mysql.user", {"mysql.user"}),
    ("SELECT * FROM t AS x, t AS y", {"shop.t"}),
    (
        "SELECT * FROM t t1 LEFT JOIN u ON t1.a = u.a RIGHT JOIN v USING (a) CROSS JOIN w NATURAL JOIN z",
        {"shop.t", "shop.u", "shop.v", "shop.w", "shop.z"},
    ),
    ("SELECT (SELECT MAX(a) FROM u) FROM t", {"shop.t", "shop.u"}),
    ("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM db2.u WHERE u.a = t.a)", {"shop.t", "db2.u"}),
    ("SELECT a FROM t GROUP BY a HAVING COUNT(*) > (SELECT COUNT(*) FROM u)", {"shop.t", "shop.u"}),
    ("SELECT * FROM (SELECT * FROM (SELECT * FROM deep) AS a) AS b", {"shop.deep"}),
    ("SELECT a FROM t UNION SELECT a FROM u UNION ALL SELECT a FROM db2.v", {"shop.t", "shop.u", "db2.v"}),
    ("SELECT 1 FROM DUAL", set()),
    ("SELECT 1 FROM `DUAL`", {"shop.dual"}),
    ("SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$')) AS jt", set()),
    ("SELECT NEXTVAL(seq), LASTVAL(db2.seq2)", {"shop.seq", "db2.seq2"}),
    ("INSERT INTO t (a) SELECT a FROM u WHERE a IN (SELECT a FROM v)", {"shop.t", "shop.u", "shop.v"}),
    ("UPDATE t AS a JOIN u AS b ON a.id = b.id SET a.x = b.y", {"shop.t", "shop.u"}),
    ("UPDATE t SET a = (SELECT MAX(b) FROM u)", {"shop.t", "shop.u"}),
    ("DELETE a FROM t AS a JOIN u ON a.x = u.x", {"shop.t", "shop.u"}),
    ("DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a", {"shop.t1", "shop.t2"}),
    ("DELETE FROM t WHERE id IN (SELECT id FROM u)", {"shop.t", "shop.u"}),
    ("REPLACE INTO t SELECT * FROM db2.u", {"shop.t", "db2.u"}),
    ("CREATE VIEW v AS SELECT * FROM t JOIN db2.u USING (id)", {"shop.v", "shop.t", "db2.u"}),
    ("CREATE TABLE t2 LIKE t", {"shop.t2", "shop.t"}),
    ("CREATE TABLE t (a INT, FOREIGN KEY (a) REFERENCES u (b))", {"shop.t", "shop.u"}),
    ("ALTER TABLE t RENAME TO u", {"shop.t", "shop.u"}),
    ("ALTER TABLE t DROP INDEX i", {"shop.t"}),
    ("DROP TABLE a, db2.b", {"shop.a", "db2.b"}),
    ("DROP INDEX i ON t", {"shop.t"}),
    ("CREATE INDEX i ON db2.t (a)", {"db2.t"}),
    ("DROP DATABASE other", set()),
]


@pytest.mark.parametrize(("sql", "tables"), TABLES)
def test_every_table_is_listed_lower_case_and_qualified(sql: str, tables: set[str]) -> None:
    """Joins, subqueries, unions, DML targets, DDL objects; default db filled in (rule 14)."""
    assert run(sql).tables == tables


CTES = [
    ("WITH c AS (SELECT * FROM t) SELECT * FROM c", {"shop.t"}),
    ("WITH c AS (SELECT * FROM t) SELECT * FROM c UNION SELECT * FROM c", {"shop.t"}),
    ("WITH a AS (SELECT * FROM t), b AS (SELECT * FROM a) SELECT * FROM b", {"shop.t"}),
    ("WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r", set()),
    # a CTE does not see itself without RECURSIVE, nor the CTEs after it
    ("WITH c AS (SELECT * FROM c) SELECT * FROM c", {"shop.c"}),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", {"shop.b"}),
    # a CTE shadows only inside its own query
    ("SELECT * FROM c WHERE EXISTS (WITH c AS (SELECT 1) SELECT * FROM c)", {"shop.c"}),
    ("SELECT * FROM (WITH c AS (SELECT * FROM t) SELECT * FROM c) AS d JOIN c ON 1", {"shop.c", "shop.t"}),
    # qualified names and DML targets are always tables; names compare exactly
    ("WITH t AS (SELECT 1) SELECT * FROM shop.t", {"shop.t"}),
    ("WITH c AS (SELECT 1) DELETE FROM c", {"shop.c"}),
    ("WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t", {"shop.t"}),
    ("WITH C AS (SELECT 1) SELECT * FROM c", {"shop.c"}),
]


@pytest.mark.parametrize(("sql", "tables"), CTES)
def test_cte_names_are_excluded_only_where_they_are_in_scope(sql: str, tables: set[str]) -> None:
    """CTE references are not tables, but a same-named table outside the CTE's scope is listed."""
    assert run(sql).tables == tables


def test_the_default_database_is_per_call() -> None:
    """Unqualified names take the database given; qualified ones keep theirs."""
    assert run("SELECT * FROM t JOIN db2.u", database="Other").tables == {"other.t", "db2.u"}


@pytest.mark.parametrize(
    ("sql", "database", "detail"),
    [
        ("SELECT * FROM t", "", "needs a database"),
        ("SELECT * FROM a.b.c", DB, "three-part"),
        ("SELECT * FROM `a.b`", DB, "containing '.'"),
        ("SELECT * FROM `x.y`.t", DB, "containing '.'"),
    ],
)
def test_ambiguous_table_names_are_rejected(sql: str, database: str, detail: str) -> None:
    """A table name that cannot be written unambiguously as `db.table` is refused."""
    with pytest.raises(StatementRejected, match=detail):
        run(sql, database=database)


# --- functions ----------------------------------------------------------------------------------

EVERYDAY = [
    "SELECT COUNT(*), COUNT(DISTINCT a), SUM(a), AVG(a), MIN(a), MAX(a), GROUP_CONCAT(a) FROM t",
    "SELECT IFNULL(a, 1), COALESCE(a, b), NULLIF(a, 1), IF(a, 1, 2), CASE WHEN a THEN 1 END FROM t",
    "SELECT CAST(a AS CHAR), CONVERT(a, UNSIGNED), CONVERT(a USING utf8mb4), 'x' COLLATE utf8mb4_bin",
    "SELECT CONCAT(a, b), CONCAT_WS(',', a), LOWER(a), UPPER(a), LCASE(a), TRIM(a), LTRIM(a), LENGTH(a)",
    "SELECT SUBSTRING(a, 1, 2), SUBSTR(a, 1), LEFT(a, 1), REPLACE(a, 'x', 'y'), LPAD(a, 2, 'x'), INSTR(a, 'b')",
    "SELECT NOW(), CURDATE(), CURTIME(), CURRENT_TIMESTAMP, SYSDATE(), UTC_TIMESTAMP(), UNIX_TIMESTAMP()",
    "SELECT DATE_FORMAT(d, '%Y-%m-%d'), STR_TO_DATE('2020', '%Y'), DATE_ADD(d, INTERVAL 1 DAY), DATEDIFF(a, b)",
    "SELECT YEAR(d), MONTH(d), DAY(d), HOUR(d), EXTRACT(YEAR FROM d), DATE(d), TIMESTAMPDIFF(SECOND, a, b)",
    "SELECT ROUND(1.5), FLOOR(1), CEIL(1), ABS(-1), MOD(5, 2), POW(2, 3), SQRT(4), RAND(), UUID()",
    "SELECT JSON_EXTRACT(a, '$.x'), JSON_UNQUOTE(a), JSON_OBJECT('a', 1), JSON_ARRAY(1), JSON_VALUE(a, '$')",
    "SELECT ROW_NUMBER() OVER (ORDER BY a), RANK() OVER w, LAG(a) OVER w FROM t WINDOW w AS (ORDER BY a)",
    "SELECT MD5(a), SHA2(a, 256), HEX(a), GREATEST(1, 2), LEAST(1, 2), DATABASE() FROM t WHERE a REGEXP 'x'",
    "SELECT * FROM t WHERE EXISTS (SELECT 1) AND a IN (SELECT b FROM u) AND c BETWEEN 1 AND 2",
    "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$')) AS jt",
]


@pytest.mark.parametrize("sql", EVERYDAY)
def test_everyday_builtins_come_out_in_the_safe_list(sql: str) -> None:
    """The names sqlglot reports for common MariaDB builtins are all in SAFE_FUNCTIONS."""
    statement = run(sql)
    assert statement.functions, sql
    assert statement.functions <= SAFE_FUNCTIONS


@pytest.mark.parametrize(
    ("sql", "functions"),
    [
        ("SELECT COUNT(*) FROM t", {"COUNT"}),
        ("SELECT IFNULL(a, 1)", {"IFNULL"}),  # calls run as written
        ("SELECT DATE_FORMAT(d, '%Y')", {"DATE_FORMAT"}),
        ("SELECT CONCAT(a, LOWER(b))", {"CONCAT", "LOWER"}),
        ("SELECT NOW()", {"NOW"}),
        ("SELECT a FROM t WHERE a REGEXP 'x'", {"REGEXP"}),
        ("SELECT a FROM t WHERE a = 1 AND b = 2 OR c XOR d", set()),
        ("SELECT shop.f(1)", {"SHOP.F"}),
        ("SELECT `my db`.f(1)", {"MY DB.F"}),
        ("SELECT a.b.c(1)", {"A.B.C"}),
        ("SELECT `sleep`(1)", {"`SLEEP`"}),
        ("SELECT my_udf(1)", {"MY_UDF"}),
        ("SELECT sleep(1)", {"SLEEP"}),
    ],
)
def test_functions_are_named_as_mariadb_will_call_them(sql: str, functions: set[str]) -> None:
    """Upper case; qualified calls keep their database; quoted names keep their backticks."""
    assert run(sql).functions == functions


def test_dangerous_and_stateful_functions_are_not_safe() -> None:
    """SLEEP, BENCHMARK, LOAD_FILE, locks, sequences, session state and UDF-shaped names."""
    unsafe = {
        "SLEEP", "BENCHMARK", "LOAD_FILE", "GET_LOCK", "RELEASE_LOCK", "RELEASE_ALL_LOCKS",
        "IS_FREE_LOCK", "IS_USED_LOCK", "MASTER_POS_WAIT", "MASTER_GTID_WAIT", "NEXTVAL",
        "SETVAL", "LASTVAL", "SYS_EVAL", "SYS_EXEC", "LAST_INSERT_ID", "ROW_COUNT", "FOUND_ROWS",
        "REGEXP_LIKE", "JSON_EXTRACT_SCALAR",
    }  # fmt: skip
    assert not unsafe & SAFE_FUNCTIONS
    assert all(name.isupper() and "." not in name for name in SAFE_FUNCTIONS)


def test_regexp_runs_as_the_mariadb_operator_with_its_precedence_kept() -> None:
    """REGEXP runs as MariaDB's operator, parenthesised, not as sqlglot's REGEXP_LIKE (absent in MariaDB)."""
    statement = run("SELECT a REGEXP 'x' + 1, NOT b RLIKE c, (d REGEXP ?) FROM t")
    assert statement.executable_sql == "SELECT (a REGEXP ('x' + 1)), NOT (b REGEXP c), (d REGEXP ?) FROM t"


# --- placeholders and regeneration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "placeholders"),
    [
        ("SELECT * FROM t WHERE a = ? AND b IN (?, ?) LIMIT ?", 4),
        ("SELECT '?', `?` FROM t WHERE a = ? -- ?", 1),
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)", 4),
        ("UPDATE t SET a = ? WHERE b = 'it''s ?'", 1),
        ("SELECT 1", 0),
    ],
)
def test_placeholders_are_counted_in_the_executable_sql(sql: str, placeholders: int) -> None:
    """`?` inside literals or comments is not a placeholder; parts rebuild the executable SQL."""
    statement = run(sql)
    assert statement.placeholders == placeholders
    assert len(statement.sql_parts) == placeholders + 1
    assert "?".join(statement.sql_parts) == statement.executable_sql


def test_executable_sql_is_the_regenerated_statement_without_comments() -> None:
    """What runs is what sqlglot understood: comments dropped, literals as the caller wrote them, `?` kept."""
    statement = run("SELECT /* hi */ 'it\\'s', \"q\" -- bye\nFROM t WHERE a = ?")
    assert statement.executable_sql == "SELECT 'it\\'s', \"q\" FROM t WHERE a = ?"
    assert statement.sql_parts == ("SELECT 'it\\'s', \"q\" FROM t WHERE a = ", "")
    assert statement.sql == "SELECT /* hi */ 'it\\'s', \"q\" -- bye\nFROM t WHERE a = ?"


def test_mariadb_gaps_in_sqlglots_output_are_patched() -> None:
    """`FROM DUAL` stays unquoted, hex literals keep their form, shared locks are written the MariaDB way."""
    assert run("SELECT 1 FROM DUAL").executable_sql == "SELECT 1 FROM DUAL"
    assert run("SELECT flags & 0x04, X'41', x'' FROM t").executable_sql == "SELECT flags & 0x04, X'41', x'' FROM t"
    assert run("SELECT * FROM t FOR SHARE").executable_sql == "SELECT * FROM t LOCK IN SHARE MODE"
    assert run("REPLACE t SET a = ?").executable_sql == "REPLACE INTO t (a) VALUES (?)"


# --- limits, caching, contract -----------------------------------------------------------------------


def test_sql_over_the_byte_cap_is_too_large() -> None:
    """The cap counts UTF-8 bytes, so multi-byte text hits it sooner (rule 16)."""
    analyze("SELECT 'abc'", default_database=DB, max_sql_bytes=12)
    with pytest.raises(PayloadTooLarge):
        analyze("SELECT 'abcd'", default_database=DB, max_sql_bytes=12)
    with pytest.raises(PayloadTooLarge):
        analyze("SELECT 'é€'", default_database=DB, max_sql_bytes=12)


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    """Parenthesis depth is checked before parsing; parser recursion never escapes as a crash."""
    analyze("SELECT " + "(" * 8 + "1" + ")" * 8, default_database=DB, max_depth=8)
    with pytest.raises(StatementRejected, match="nested deeper than 8"):
        analyze("SELECT " + "(" * 9 + "1" + ")" * 9, default_database=DB, max_depth=8)
    with pytest.raises(StatementRejected, match="nested"):
        run("SELECT " + "(" * 60 + "1" + ")" * 60)
    with pytest.raises(StatementRejected, match="nested too deeply"):
        run("SELECT " + "NOT " * 2000 + "1")
    with pytest.raises(StatementRejected, match="nested too deeply"):
        run("SELECT " + "- " * 5000 + "1")


def test_results_are_cached_and_rejections_repeat() -> None:
    """The same text and database give the same frozen Statement; a rejection raises every time."""
    first = run("SELECT a FROM cached_t WHERE b = ?")
    assert run("SELECT a FROM cached_t WHERE b = ?") is first
    assert run("SELECT a FROM cached_t WHERE b = ?", database="other").tables == {"other.cached_t"}
    for _ in range(2):
        with pytest.raises(StatementRejected, match="exactly one"):
            run("SELECT 1; SELECT 2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.kind = Kind.WRITE  # type: ignore[misc]  # assigning a frozen field is what this test proves fails


def test_long_statements_are_analysed_without_the_cache() -> None:
    """Statements too long to cache are still analysed (and give equal results each time)."""
    sql = "SELECT a FROM t WHERE a IN (" + ", ".join(["?"] * 2000) + ")"
    first = run(sql)
    assert first.placeholders == 2000
    assert run(sql) == first


# --- the bypass corpus ------------------------------------------------------------------------------

REJECTED = "rejected"
BYPASS: list[tuple[str, str]] = [
    # stacked statements, in every disguise
    ("SELECT 1; DROP TABLE x", REJECTED),
    ("SELECT 1;DELETE FROM items", REJECTED),
    ("SELECT 1;;", REJECTED),
    ("; SELECT 1", REJECTED),
    ("SELECT 1; -- trailing", REJECTED),
    ("SELECT '/*' ; DROP TABLE t -- */'", REJECTED),
    ("SELECT 'a\\\\'; DROP TABLE items; -- '", REJECTED),
    ("SELECT 1 -- \n; DROP TABLE t", REJECTED),
    ("SELECT 1 --x\n; DROP TABLE t", REJECTED),
    ("SELECT 1 #\n; DELETE FROM items", REJECTED),
    ("SELECT\u00a01; DELETE FROM items", REJECTED),
    ("REPLACE INTO t VALUES (1); DROP TABLE t", REJECTED),
    # executable comments and hints
    ("/*! DROP TABLE t */", REJECTED),
    ("SELECT 1 /*! ; DROP TABLE items */", REJECTED),
    ("SELECT 1 /*!50000 UNION SELECT card_number FROM payment_cards */", REJECTED),
    ("SELECT 1 /*M!100000 , (SELECT card_number FROM payment_cards) */", REJECTED),
    ("SELECT 1 /*M! , 2 */", REJECTED),
    ("SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", REJECTED),
    ("SELECT 1 --/*! , (SELECT 2) */", REJECTED),
    # files and variables
    ("SELECT * FROM items INTO OUTFILE '/tmp/x'", REJECTED),
    ("SELECT * INTO OUTFILE '/tmp/x' FROM items", REJECTED),
    ("SELECT name FROM items INTO DUMPFILE '/tmp/x'", REJECTED),
    ("SELECT id INTO @x FROM items LIMIT 1", REJECTED),
    ("SELECT * INTO evil FROM items", REJECTED),  # sqlglot would write CREATE TABLE evil AS ...
    ("SELECT id FROM items LIMIT 1 INTO @x", REJECTED),
    ("SELECT * FROM items PROCEDURE ANALYSE()", REJECTED),
    ("LOAD DATA INFILE '/etc/passwd' INTO TABLE items", REJECTED),
    ("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE items", REJECTED),
    ("LOAD XML INFILE '/etc/passwd' INTO TABLE items", REJECTED),
    ("SELECT @@global.read_only", REJECTED),
    ("SELECT @@version", REJECTED),
    ("SELECT @x := 1", REJECTED),
    ("SET @x = 1", REJECTED),
    ("SET @@session.sql_mode = ''", REJECTED),
    # session and server state
    ("SET GLOBAL read_only = 0", "other"),
    ("SET SESSION tx_read_only = 0", "other"),
    ("SET NAMES latin1", "other"),
    ("SET STATEMENT max_statement_time=0 FOR DELETE FROM items", REJECTED),
    ("SET ROLE admin", REJECTED),
    ("PREPARE s FROM 'DELETE FROM items'", REJECTED),
    ("EXECUTE s", REJECTED),
    ("EXECUTE IMMEDIATE 'DELETE FROM items'", REJECTED),
    ("DEALLOCATE PREPARE s", REJECTED),
    ("CALL mysql.rds_kill(1)", REJECTED),
    ("HANDLER items OPEN", REJECTED),
    ("LOCK TABLES items WRITE", REJECTED),
    ("UNLOCK TABLES", REJECTED),
    ("DO SLEEP(5)", REJECTED),
    ("USE mysql", "other"),
    ("COMMIT", "other"),
    ("ROLLBACK", "other"),
    ("START TRANSACTION", "other"),
    ("SAVEPOINT a", REJECTED),
    ("XA START 'x'", REJECTED),
    ("KILL 1", "other"),
    ("SHOW PROCESSLIST", "other"),
    ("FLUSH PRIVILEGES", REJECTED),
    ("SHUTDOWN", REJECTED),
    ("RESET MASTER", REJECTED),
    ("BINLOG 'x'", REJECTED),
    ("INSTALL PLUGIN x SONAME 'y'", REJECTED),
    ("INSTALL SONAME 'ha_connect'", REJECTED),
    ("CHANGE MASTER TO MASTER_HOST='x'", REJECTED),
    ("ANALYZE SELECT * FROM items", REJECTED),
    ("EXPLAIN ANALYZE DELETE FROM items", "other"),
    ("OPTIMIZE TABLE items", REJECTED),
    # accounts and routines
    ("GRANT ALL ON *.* TO 'x'@'%'", REJECTED),
    ("REVOKE ALL ON *.* FROM x", REJECTED),
    ("CREATE USER evil IDENTIFIED BY 'x'", REJECTED),
    ("DROP USER x", REJECTED),
    ("ALTER USER x IDENTIFIED BY 'y'", REJECTED),
    ("CREATE FUNCTION f() RETURNS INT RETURN 1", "other"),
    ("CREATE PROCEDURE p() BEGIN DELETE FROM items; END", REJECTED),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1", REJECTED),
    ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t", REJECTED),
    ("CREATE DEFINER=root VIEW v AS SELECT 1", REJECTED),
    ("CREATE SERVER s FOREIGN DATA WRAPPER mysql OPTIONS (HOST 'x')", REJECTED),
    # writes and DDL dressed as reads
    ("WITH x AS (SELECT 1) DELETE FROM t", "write"),
    ("WITH x AS (SELECT 1) UPDATE t SET a = 1", "write"),
    ("SELECT * FROM items FOR UPDATE", "write"),
    ("SELECT * FROM items LOCK IN SHARE MODE", "write"),
    ("SELECT * FROM (SELECT * FROM items FOR UPDATE) AS x", "write"),
    ("SELECT * FROM items UNION SELECT * FROM t FOR UPDATE", "write"),
    ("REPLACE INTO items (id) VALUES (1)", "write"),
    ("REPLACE INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = 1", REJECTED),
    ("DELETE FROM items RETURNING *", "write"),
    ("CREATE TEMPORARY TABLE evil (id INT)", "other"),
    ("CREATE TABLE evil (a INT) ENGINE=CONNECT TABLE_TYPE=CSV FILE_NAME='/etc/passwd'", REJECTED),
    ("CREATE TABLE evil (a INT) ENGINE=FEDERATED CONNECTION='mysql://u:p@h/d/t'", REJECTED),
    ("ALTER TABLE items ENGINE=SPIDER", REJECTED),
    ("CREATE TABLE evil (a INT) DATA DIRECTORY='/tmp'", REJECTED),
    ("ALTER TABLE items CONNECTION='mysql://u:p@h/d/t'", REJECTED),
    ("DROP DATABASE shop", "other"),
    ("TRUNCATE TABLE items", "ddl"),
    # functions a read grant must refuse
    ("SELECT LOAD_FILE('/etc/passwd')", "unsafe"),
    ("SELECT SLEEP(5)", "unsafe"),
    ("SELECT `sleep`(5)", "unsafe"),
    ("SELECT BENCHMARK(100000000, MD5('x'))", "unsafe"),
    ("SELECT GET_LOCK('x', 10)", "unsafe"),
    ("SELECT RELEASE_LOCK('x')", "unsafe"),
    ("SELECT MASTER_POS_WAIT('f', 1)", "unsafe"),
    ("SELECT NEXTVAL(seq)", "unsafe"),
    ("SELECT SETVAL(seq, 1)", "unsafe"),
    ("SELECT LAST_INSERT_ID(5)", "unsafe"),
    ("SELECT SYS_EVAL('id')", "unsafe"),
    ("SELECT shop.f(1)", "unsafe"),
    ("SELECT a FROM t WHERE SLEEP(1) = 0", "unsafe"),
    ("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT 1 FROM r) SELECT SLEEP(1) FROM r", "unsafe"),
    ("SELECT * FROM t WHERE a = (SELECT BENCHMARK(1, 1))", "unsafe"),
    ("SELECT NEXT VALUE FOR seq", REJECTED),
    # lexer and encoding tricks
    ("SELECT 1\x00; DROP TABLE t", REJECTED),
    ("SELECT 1 -- x\x00\n", REJECTED),
    ("SELECT 'unterminated", REJECTED),
    ("SELECT `a``", REJECTED),
    ("SELECT 1 /* unterminated", REJECTED),
    ("SELECT \\N", REJECTED),
    ("SELECT \uff07 1", REJECTED),
    ("SELECT 1\u037e DELETE FROM items", REJECTED),
    ("SELECT '\ud800'", REJECTED),
    ("SELECT :name", REJECTED),
    ("SELECT " + "(" * 100 + "1" + ")" * 100, REJECTED),
    ("", REJECTED),
    ("   \n\t", REJECTED),
    ("-- only a comment", REJECTED),
    ("/* only a comment */", REJECTED),
    ("MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE", REJECTED),
    ("PRAGMA x", REJECTED),
    ("COPY t FROM 'x'", REJECTED),
]


def outcome(sql: str) -> str:
    """``rejected``, ``unsafe`` (a read calling a function outside SAFE_FUNCTIONS) or the kind."""
    try:
        statement = run(sql)
    except StatementRejected:
        return REJECTED
    if statement.kind is Kind.READ:
        return "unsafe" if not statement.functions <= SAFE_FUNCTIONS else "read"
    return statement.kind.value


@pytest.mark.parametrize(("sql", "expected"), BYPASS)
def test_bypass_corpus_is_rejected_or_refused_by_a_read_grant(sql: str, expected: str) -> None:
    """Each hostile statement is rejected, or classified so that a read grant refuses it."""
    assert outcome(sql) == expected
    if expected != REJECTED:
        assert read_grant_refuses(run(sql))


LITERAL_TRICKS = [
    ("SELECT 'a\\'; DROP TABLE items; -- '", "SELECT 'a\\'; DROP TABLE items; -- '"),
    ('SELECT "a\\"; DROP TABLE t; -- "', 'SELECT "a\\"; DROP TABLE t; -- "'),
    ("SELECT 'a'' ; DROP TABLE t ; '''", "SELECT 'a'' ; DROP TABLE t ; '''"),
    ("SELECT `a``; DROP TABLE t; ``` FROM t", "SELECT `a``; DROP TABLE t; ``` FROM t"),
    ("SELECT '/*! DROP TABLE t */'", "SELECT '/*! DROP TABLE t */'"),
    ("SELECT 'x\\\\', '?'", "SELECT 'x\\\\', '?'"),
    ("SELECT 1 --\t/*! DROP TABLE t */", "SELECT 1"),
    ("SELECT 1 --x", "SELECT 1 - -x"),
]


@pytest.mark.parametrize(("sql", "executable"), LITERAL_TRICKS)
def test_quoting_tricks_stay_inside_one_literal(sql: str, executable: str) -> None:
    """Backslash escapes, doubled quotes and comments read as MariaDB reads them: one harmless read."""
    statement = run(sql)
    assert (statement.kind, statement.executable_sql, statement.placeholders) == (Kind.READ, executable, 0)


# --- regeneration is stable ------------------------------------------------------------------------

UNSTABLE = {"VALUES ROW(1, 2)"}  # MySQL-only syntax; sqlglot writes VALUES (ROW(1, 2))
ACCEPTED = [sql for sql, _, _ in CLASSIFIED if sql not in UNSTABLE] + [sql for sql, _ in TABLES + CTES] + EVERYDAY
ACCEPTED += [sql for sql, expected in BYPASS if expected != REJECTED] + [sql for sql, _ in LITERAL_TRICKS]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_regenerated_sql_analyses_the_same(sql: str) -> None:
    """Re-analysing executable_sql gives the same kind, tables, functions and placeholders."""
    first = run(sql)
    again = run(first.executable_sql)
    assert (again.kind, again.tables, again.functions, again.placeholders) == (
        first.kind,
        first.tables,
        first.functions,
        first.placeholders,
    )
    assert again.executable_sql == first.executable_sql


# --- placeholders stand only where values stand (SECURITY rule 24) --------------------------------------

PLACEHOLDERS_AS_NAMES = [
    "SELECT * FROM hr.?",
    "SELECT * FROM ?",
    "SELECT * FROM ?.t",
    "SELECT ?.a FROM t",
    "SELECT a.? FROM t",
    "SELECT `a`.? FROM t",
    "SELECT a FROM t AS ?",
    "SELECT a AS ? FROM t",
    "SELECT * FROM t JOIN hr.? ON 1",
    "WITH c AS (SELECT 1) SELECT * FROM hr.?",
    "SELECT * FROM t WHERE a IN (SELECT b FROM hr.?)",
    "SELECT * FROM t ORDER BY ?",
    "SELECT a FROM t GROUP BY ?",
    "SELECT a COLLATE ? FROM t",
    "INSERT INTO hr.? VALUES (1)",
    "INSERT INTO t (?) VALUES (1)",
    "UPDATE t SET ? = 1",
    "UPDATE hr.? SET a = 1",
    "DELETE FROM hr.? WHERE 1",
    "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE ? = 1",
    "SELECT * FROM t USE INDEX (?)",
    "SELECT * FROM t PARTITION (?)",
    "SELECT * FROM (SELECT 1) AS ?",
    "SELECT * FROM t AS x (?)",
    "SELECT MATCH(?) AGAINST ('x') FROM t",
    "SELECT ROW_NUMBER() OVER (PARTITION BY ? ORDER BY a) FROM t",
    "SELECT ROW_NUMBER() OVER ? FROM t",
    "SELECT * FROM t t1 JOIN t t2 USING (?)",
    "CREATE TABLE hr.? (a INT)",
    "CREATE TABLE t (? INT)",
    "ALTER TABLE t ADD COLUMN ? INT",
    "SELECT * FROM t FOR UPDATE OF ?",
]


@pytest.mark.parametrize("sql", PLACEHOLDERS_AS_NAMES)
def test_a_placeholder_where_a_name_belongs_is_refused_before_binding(sql: str) -> None:
    """`hr.?` with [2024] would run `hr.2024`: the analyser refuses a `?` in any name position (or cannot parse it)."""
    with pytest.raises(StatementRejected) as refused:
        run(sql)
    assert "placeholder" in refused.value.detail or "cannot be parsed" in refused.value.detail


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ? FROM t",
        "SELECT ? AS x",
        "SELECT * FROM t WHERE a = ? AND b IN (?, ?) AND c BETWEEN ? AND ?",
        "SELECT * FROM t LIMIT ? OFFSET ?",
        "SELECT * FROM t ORDER BY ? + 0",
        "SELECT CAST(? AS CHAR), CONCAT(?, 'x'), -?, NOT ?, ? IS NULL",
        "SELECT a FROM t WHERE a LIKE ? ESCAPE ?",
        "SELECT CASE ? WHEN ? THEN ? ELSE ? END",
        "SELECT DATE_ADD(a, INTERVAL ? DAY) FROM t",
        "SELECT a FROM t WHERE a = ? COLLATE utf8mb4_bin",
        "SELECT MATCH(a) AGAINST (?) FROM t",
        "SELECT 1 FROM t HAVING ?",
        "INSERT INTO t VALUES (?, ?)",
        "INSERT INTO t SET a = ?",
        "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = ?",
        "UPDATE t SET a = ? WHERE b = ?",
        "SELECT * FROM t WHERE (a, b) = (?, ?)",
        "CREATE TABLE t (a INT DEFAULT ?)",
    ],
)
def test_placeholders_in_value_positions_are_accepted(sql: str) -> None:
    """Everywhere MariaDB takes a value, `?` stays a placeholder to bind."""
    statement = run(sql)
    assert statement.placeholders == sql.count("?")


def test_the_regenerated_text_never_puts_a_placeholder_next_to_a_name() -> None:
    """A second check on the text itself: `?` beside `.` or a backtick is refused whatever the tree said."""
    from gateway.sql.placeholders import check_executable  # noqa: PLC0415 - the helper under test

    for sql in ["SELECT a FROM hr.?", "SELECT a FROM ? .t", "SELECT `x`?", "SELECT ?`x`"]:
        with pytest.raises(StatementRejected, match="placeholder"):
            check_executable(sql, (sql.index("?"),))
    check_executable("SELECT '.' = ?", (len("SELECT '.' = "),))


# --- the text that runs means what was checked (SECURITY rule 25) ---------------------------------------


@pytest.mark.parametrize(
    ("sql", "executable"),
    [
        ("SELECT X'01', x'41', 0x01, 0xAbC", "SELECT X'01', x'41', 0x01, 0xAbC"),
        ("SELECT B'101', b'', 0b101", "SELECT B'101', b'', 0b101"),
        ("SELECT N'x', n'y', _binary'ab', _utf8mb4 X'41'", "SELECT N'x', n'y', _binary 'ab', _utf8mb4 X'41'"),
        ("SELECT '\\%', '\\_', 'a''b', \"q\\\"\"", "SELECT '\\%', '\\_', 'a''b', \"q\\\"\""),
        ("SELECT 1e3, 1.5E-2, 00012, 18446744073709551616", "SELECT 1e3, 1.5E-2, 00012, 18446744073709551616"),
        ("SELECT DATE'2024-01-01', TIME '10:00', TIMESTAMP'2024-01-01 00:00:00'",
         "SELECT DATE '2024-01-01', TIME '10:00', TIMESTAMP '2024-01-01 00:00:00'"),
        ("SELECT d + INTERVAL 1.5 DAY FROM t", "SELECT d + INTERVAL 1.5 DAY FROM t"),
        ("SELECT INTERVAL 1 DAY + d FROM t", "SELECT INTERVAL 1 DAY + d FROM t"),
        ("SELECT CHARACTER_LENGTH(s), IFNULL(a, 1), LCASE(s), CHR(65) FROM t",
         "SELECT CHARACTER_LENGTH(s), IFNULL(a, 1), LCASE(s), CHR(65) FROM t"),
        ("SELECT IF(a, 1) FROM t", "SELECT IF(a, 1) FROM t"),
    ],
)  # fmt: skip
def test_literals_and_calls_run_as_written(sql: str, executable: str) -> None:
    """Hex, bit, national, escaped and typed literals, numbers, intervals and calls keep MariaDB's meaning."""
    assert run(sql).executable_sql == executable


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT 0X1", "not one MariaDB reads the same way"),  # MariaDB: a name, not hex
        ("SELECT X'0'", "not one MariaDB reads the same way"),  # odd digits: an error in MariaDB
        ("SELECT DECIMAL '1.5'", "is not a MariaDB literal"),
        ("SELECT DATETIME '2024-01-01 00:00:00'", "is not a MariaDB literal"),
        ("SELECT N'a' 'b'", "adjacent string literals"),
        ("SELECT 'a' 'b'", "adjacent string literals"),
        ("SELECT 0 TRUE", "reserved word"),
        ("SELECT BINARY DATE '2024-01-01'", "needs AS"),
        ("SELECT 1 'one'", "needs AS"),
        ("SELECT d + INTERVAL 1 FORTNIGHT FROM t", "cannot be parsed"),
    ],
)
def test_forms_sqlglot_would_read_differently_are_refused(sql: str, reason: str) -> None:
    """Where sqlglot's reading and MariaDB's differ and cannot be kept as written, the statement is refused."""
    with pytest.raises(StatementRejected, match=reason):
        run(sql)


def test_quoted_reserved_words_and_string_aliases_with_as_are_fine() -> None:
    """Backticks make a reserved word a name; `AS 'x'` is an alias for both readers."""
    assert run("SELECT `key`, 1 AS 'one' FROM t").executable_sql == "SELECT `key`, 1 AS `one` FROM t"
