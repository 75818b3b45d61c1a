"""A bypass corpus against a read-only grant, end to end, then MariaDB checked directly.

Each statement tries to get past the parser, the classifier, the policy or
the read-only session. Each must be refused (400/403/422/504, never 200 and
never 500), and afterwards the data, the schema and the file system must be
exactly as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunningGateway, root_query

OUTFILE = Path("/tmp/gw-bypass-outfile.txt")  # noqa: S108 - checked to never exist

# (statement, codes that count as a correct refusal)
REJECT = {"statement_rejected"}
DENY = {"forbidden", "statement_rejected"}
CORPUS: list[tuple[str, set[str]]] = [
    ("SELECT 1; DROP TABLE items", REJECT),
    ("SELECT 1;DELETE FROM items", REJECT),
    ("SELECT 1 /*! ; DROP TABLE items */", REJECT),
    ("SELECT 1 /*!50000 UNION SELECT card_number FROM payment_cards */", REJECT),
    ("SELECT 1 /*M!100000 , (SELECT card_number FROM payment_cards LIMIT 1) */", REJECT),
    ("SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", REJECT),
    ("SELECT '/*' ; DROP TABLE items -- */'", REJECT),
    ("SELECT * FROM items INTO OUTFILE '/tmp/gw-bypass-outfile.txt'", REJECT),
    ("SELECT name FROM items INTO DUMPFILE '/tmp/gw-bypass-outfile.txt'", REJECT),
    ("SELECT id INTO @x FROM items LIMIT 1", REJECT),
    ("SELECT LOAD_FILE('/etc/passwd')", DENY),
    ("LOAD DATA INFILE '/etc/passwd' INTO TABLE items", DENY),
    ("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE items", DENY),
    ("SET GLOBAL read_only = 0", DENY),
    ("SET SESSION tx_read_only = 0", DENY),
    ("SET @x = 1", DENY),
    ("SET STATEMENT max_statement_time=0 FOR DELETE FROM items", DENY),
    ("PREPARE s FROM 'DELETE FROM items'", DENY),
    ("EXECUTE s", DENY),
    ("CALL mysql.rds_kill(1)", DENY),
    ("HANDLER items OPEN", DENY),
    ("LOCK TABLES items WRITE", DENY),
    ("UNLOCK TABLES", DENY),
    ("DO SLEEP(5)", DENY),
    ("SELECT SLEEP(5)", DENY),
    ("SELECT BENCHMARK(100000000, MD5('x'))", DENY),
    ("SELECT GET_LOCK('x', 10)", DENY),
    ("SELECT * FROM mysql.user", DENY),
    ("SELECT * FROM information_schema.processlist", DENY),
    ("SELECT * FROM payment_cards", DENY),
    ("SELECT id FROM items UNION SELECT card_number FROM payment_cards", DENY),
    ("SELECT (SELECT card_number FROM payment_cards LIMIT 1)", DENY),
    ("WITH c AS (SELECT * FROM payment_cards) SELECT * FROM c", DENY),
    ("WITH c AS (SELECT 1) DELETE FROM items", DENY),
    ("SELECT * FROM items FOR UPDATE", DENY),
    ("SELECT * FROM items LOCK IN SHARE MODE", DENY),
    ("DELETE FROM items", DENY),
    ("UPDATE items SET price = 0", DENY),
    ("INSERT INTO items (name, price) VALUES ('evil', 0)", DENY),
    ("REPLACE INTO items (id, name, price) VALUES (1, 'evil', 0)", DENY),
    ("DROP TABLE items", DENY),
    ("TRUNCATE TABLE items", DENY),
    ("ALTER TABLE items ADD COLUMN evil INT", DENY),
    ("CREATE TABLE evil (id INT)", DENY),
    ("CREATE TEMPORARY TABLE evil (id INT)", DENY),
    ("GRANT ALL ON *.* TO 'x'@'%'", DENY),
    ("CREATE USER evil IDENTIFIED BY 'x'", DENY),
    ("KILL 1", DENY),
    ("SHOW PROCESSLIST", DENY),
    ("XA START 'x'", DENY),
    ("ANALYZE SELECT * FROM items", DENY),
    ("USE mysql", DENY),
    ("COMMIT", DENY),
    ("SELECT * FROM items PROCEDURE ANALYSE()", DENY),
    ("SELECT @@global.read_only", REJECT | DENY),
    ("SELECT * FROM items WHERE id = 1 -- \n; DELETE FROM items", REJECT),
    ("SELECT 1 #\n; DELETE FROM items", REJECT),
    ("SELECT\u00a01; DELETE FROM items", REJECT),
    ("SELECT 1\x00; DELETE FROM items", REJECT),
    ("SELECT NEXTVAL(s)", DENY),
    ("SELECT shop_f()", DENY),
    ("SELECT * FROM `items`; DROP TABLE `items`", REJECT),
]


def _snapshot(db: str, prefix: str) -> tuple[object, ...]:
    tables = root_query(
        "SELECT table_name, table_rows IS NOT NULL FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
        (db,),
    )
    columns = root_query(
        "SELECT table_name, column_name, column_type FROM information_schema.columns "
        "WHERE table_schema = %s ORDER BY 1, 2",
        (db,),
    )
    checksums = root_query("CHECKSUM TABLE " + ", ".join(f"`{db}`.`{t[0]}`" for t in tables) + " EXTENDED")
    # Only accounts this run owns or the corpus tries to create: other test runs may share the server.
    users = root_query(
        "SELECT user, host FROM mysql.user WHERE user LIKE %s OR user IN ('evil', 'x') ORDER BY 1, 2", (f"{prefix}%",)
    )
    privileges = root_query(
        "SELECT grantee, privilege_type FROM information_schema.user_privileges WHERE grantee LIKE %s ORDER BY 1, 2",
        (f"'{prefix}%",),
    )
    read_only = root_query("SELECT @@global.read_only")
    return (tables, columns, checksums, users, privileges, read_only)


def test_corpus_is_large_enough():
    """The corpus has at least 30 distinct hostile statements, as the issue asks."""
    assert len({sql for sql, _ in CORPUS}) >= 30


def test_bypass_corpus_against_read_grant(gateway: RunningGateway):
    """Every corpus statement is refused with a clean error; MariaDB is unchanged after."""
    before = _snapshot(gateway.db.name, gateway.db.prefix)
    OUTFILE.unlink(missing_ok=True)
    wrong: list[tuple[str, int, str]] = []
    with gateway.client("reader") as http:
        for sql, allowed_codes in CORPUS:
            reply = http.post("/v1/query", json={"target": "shop", "sql": sql})
            code = reply.json().get("code", "?") if reply.status_code != 200 else "OK"
            if reply.status_code not in {400, 403, 422} or code not in allowed_codes | {"database_error"}:
                wrong.append((sql, reply.status_code, code))
    assert wrong == []
    assert _snapshot(gateway.db.name, gateway.db.prefix) == before
    assert not OUTFILE.exists()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM items WHERE name = '\\' OR 1=1 -- '",
        "SELECT 'a\\'; DROP TABLE items; -- '",
        "SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$')) t",
        'SELECT id FROM items WHERE name = "a""b"',
        "SELECT `id` FROM `items` WHERE `name` = 'pen'",
    ],
)
def test_quoting_edge_cases_are_read_only(gateway: RunningGateway, sql: str):
    """Quoting tricks either run as the harmless read they are or are refused; never a write."""
    before = _snapshot(gateway.db.name, gateway.db.prefix)
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": sql})
    assert reply.status_code in {200, 400, 403, 422}
    if reply.status_code == 200:
        assert reply.json()["kind"] == "read"
    assert _snapshot(gateway.db.name, gateway.db.prefix) == before
