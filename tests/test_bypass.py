"""A bypass corpus against a read-only grant, end to end, then MariaDB checked directly.

Each statement tries to get past the lexer, the parser, the classifier or the
policy. Each is labelled with the layer that must refuse it (``analysis``:
400 ``statement_rejected``; ``policy``: 403 ``forbidden``) and a fragment of
the refusal's detail, and is judged by the attack corpus's own rules
(``corpusreplay.refusal_problems``): the status and code of that layer, the
detail, a deny record with that code in the audit log and no allow record.
So a statement the gateway let through is a failure even when MariaDB (whose
least-privilege reader account would refuse most of these) refuses it:
``database_error`` is never a correct answer here. Afterwards the data, the
schema, the accounts and the file system must be exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RunningGateway, root_query
from corpusreplay import LAYERS, Case, Outcome, Replayer, attach_records, refusal_problems

OUTFILE = Path("/tmp/gw-bypass-outfile.txt")  # noqa: S108 - a fixed name, checked to never exist

ANALYSIS, POLICY = "analysis", "policy"
ONE_STATEMENT = "exactly one statement is allowed per request"
EXECUTABLE_COMMENT = "executable comments (/*! */, /*M! */) and optimizer hints (/*+ */) are not allowed"
CANNOT_PARSE = "the statement cannot be parsed"
NOT_UNDERSTOOD = "not allowed: a statement the parser does not understand"
VARIABLES = "'@' (user and system variables, user@host) is not allowed"
NO_WRITE = "no grant allows write on shop"
NO_DDL = "no grant allows ddl on shop"
PAYMENT_CARDS = "table {db}.payment_cards is not allowed by your grants"

# (id, statement, the layer that must refuse it, a fragment of the refusal's detail)
CORPUS: list[tuple[str, str, str, str]] = [
    ("stacked-drop", "SELECT 1; DROP TABLE items", ANALYSIS, ONE_STATEMENT),
    ("stacked-delete-no-space", "SELECT 1;DELETE FROM items", ANALYSIS, ONE_STATEMENT),
    ("exec-comment-stacked", "SELECT 1 /*! ; DROP TABLE items */", ANALYSIS, EXECUTABLE_COMMENT),
    (
        "exec-comment-versioned-union",
        "SELECT 1 /*!50000 UNION SELECT card_number FROM payment_cards */",
        ANALYSIS,
        EXECUTABLE_COMMENT,
    ),
    (
        "exec-comment-mariadb",
        "SELECT 1 /*M!100000 , (SELECT card_number FROM payment_cards LIMIT 1) */",
        ANALYSIS,
        EXECUTABLE_COMMENT,
    ),
    ("optimizer-hint", "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", ANALYSIS, EXECUTABLE_COMMENT),
    ("comment-in-string", "SELECT '/*' ; DROP TABLE items -- */'", ANALYSIS, ONE_STATEMENT),
    ("into-outfile", "SELECT * FROM items INTO OUTFILE '/tmp/gw-bypass-outfile.txt'", ANALYSIS, CANNOT_PARSE),
    ("into-dumpfile", "SELECT name FROM items INTO DUMPFILE '/tmp/gw-bypass-outfile.txt'", ANALYSIS, CANNOT_PARSE),
    ("into-variable", "SELECT id INTO @x FROM items LIMIT 1", ANALYSIS, VARIABLES),
    ("load-file", "SELECT LOAD_FILE('/etc/passwd')", POLICY, "function LOAD_FILE is not allowed"),
    ("load-data-infile", "LOAD DATA INFILE '/etc/passwd' INTO TABLE items", ANALYSIS, CANNOT_PARSE),
    ("load-data-local", "LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE items", ANALYSIS, CANNOT_PARSE),
    ("set-global", "SET GLOBAL read_only = 0", ANALYSIS, "SET statements are not allowed"),
    ("set-session", "SET SESSION tx_read_only = 0", ANALYSIS, "SET statements are not allowed"),
    ("set-user-variable", "SET @x = 1", ANALYSIS, VARIABLES),
    ("set-statement-for", "SET STATEMENT max_statement_time=0 FOR DELETE FROM items", ANALYSIS, NOT_UNDERSTOOD),
    ("prepare", "PREPARE s FROM 'DELETE FROM items'", ANALYSIS, NOT_UNDERSTOOD),
    ("execute", "EXECUTE s", ANALYSIS, NOT_UNDERSTOOD),
    ("call-procedure", "CALL mysql.rds_kill(1)", ANALYSIS, NOT_UNDERSTOOD),
    ("handler", "HANDLER items OPEN", ANALYSIS, CANNOT_PARSE),
    ("lock-tables", "LOCK TABLES items WRITE", ANALYSIS, NOT_UNDERSTOOD),
    ("unlock-tables", "UNLOCK TABLES", ANALYSIS, NOT_UNDERSTOOD),
    ("do-sleep", "DO SLEEP(5)", ANALYSIS, CANNOT_PARSE),
    ("select-sleep", "SELECT SLEEP(5)", POLICY, "function SLEEP is not allowed"),
    ("benchmark", "SELECT BENCHMARK(100000000, MD5('x'))", POLICY, "function BENCHMARK is not allowed"),
    ("get-lock", "SELECT GET_LOCK('x', 10)", POLICY, "function GET_LOCK is not allowed"),
    ("mysql-user", "SELECT * FROM mysql.user", POLICY, "table mysql.user is not allowed by your grants"),
    (
        "processlist-table",
        "SELECT * FROM information_schema.processlist",
        POLICY,
        "table information_schema.processlist is not allowed by your grants",
    ),
    ("denied-table", "SELECT * FROM payment_cards", POLICY, PAYMENT_CARDS),
    ("union-denied-table", "SELECT id FROM items UNION SELECT card_number FROM payment_cards", POLICY, PAYMENT_CARDS),
    ("subquery-denied-table", "SELECT (SELECT card_number FROM payment_cards LIMIT 1)", POLICY, PAYMENT_CARDS),
    ("cte-denied-table", "WITH c AS (SELECT * FROM payment_cards) SELECT * FROM c", POLICY, PAYMENT_CARDS),
    ("cte-delete", "WITH c AS (SELECT 1) DELETE FROM items", POLICY, NO_WRITE),
    ("for-update", "SELECT * FROM items FOR UPDATE", POLICY, NO_WRITE),
    ("lock-in-share-mode", "SELECT * FROM items LOCK IN SHARE MODE", POLICY, NO_WRITE),
    ("delete", "DELETE FROM items", POLICY, NO_WRITE),
    ("update", "UPDATE items SET price = 0", POLICY, NO_WRITE),
    ("insert", "INSERT INTO items (name, price) VALUES ('evil', 0)", POLICY, NO_WRITE),
    ("replace", "REPLACE INTO items (id, name, price) VALUES (1, 'evil', 0)", POLICY, NO_WRITE),
    ("drop-table", "DROP TABLE items", POLICY, NO_DDL),
    ("truncate", "TRUNCATE TABLE items", POLICY, NO_DDL),
    ("alter-table", "ALTER TABLE items ADD COLUMN evil INT", POLICY, NO_DDL),
    ("create-table", "CREATE TABLE evil (id INT)", POLICY, NO_DDL),
    (
        "create-temporary-table",
        "CREATE TEMPORARY TABLE evil (id INT)",
        ANALYSIS,
        "CREATE TEMPORARY TABLE statements are not allowed",
    ),
    ("grant", "GRANT ALL ON *.* TO 'x'@'%'", ANALYSIS, VARIABLES),
    ("create-user", "CREATE USER evil IDENTIFIED BY 'x'", ANALYSIS, NOT_UNDERSTOOD),
    ("kill", "KILL 1", ANALYSIS, "KILL statements are not allowed"),
    ("show-processlist", "SHOW PROCESSLIST", ANALYSIS, "SHOW PROCESSLIST statements are not allowed"),
    ("xa-start", "XA START 'x'", ANALYSIS, CANNOT_PARSE),
    ("analyze-select", "ANALYZE SELECT * FROM items", ANALYSIS, CANNOT_PARSE),
    ("use", "USE mysql", ANALYSIS, "USE statements are not allowed"),
    ("commit", "COMMIT", ANALYSIS, "COMMIT statements are not allowed"),
    ("procedure-analyse", "SELECT * FROM items PROCEDURE ANALYSE()", ANALYSIS, CANNOT_PARSE),
    ("system-variable", "SELECT @@global.read_only", ANALYSIS, VARIABLES),
    ("line-comment-stacked", "SELECT * FROM items WHERE id = 1 -- \n; DELETE FROM items", ANALYSIS, ONE_STATEMENT),
    ("hash-comment-stacked", "SELECT 1 #\n; DELETE FROM items", ANALYSIS, ONE_STATEMENT),
    ("nbsp-stacked", "SELECT\u00a01; DELETE FROM items", ANALYSIS, ONE_STATEMENT),
    ("nul-stacked", "SELECT 1\x00; DELETE FROM items", ANALYSIS, "NUL characters are not allowed in SQL text"),
    ("sequence-nextval", "SELECT NEXTVAL(s)", POLICY, "function NEXTVAL is not allowed"),
    ("stored-function", "SELECT shop_f()", POLICY, "function SHOP_F is not allowed"),
    ("quoted-stacked", "SELECT * FROM `items`; DROP TABLE `items`", ANALYSIS, ONE_STATEMENT),
]
CODES = {ANALYSIS: "statement_rejected", POLICY: "forbidden"}
CASES = [
    Case("bypass", ident, f"{refused_by}: {sql!r}", {"sql": sql}, refused_by, CODES[refused_by], detail, None)
    for ident, sql, refused_by, detail in CORPUS
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


@dataclass
class BypassRun:
    """The replay of the whole corpus: an outcome per case, MariaDB before and after."""

    outcomes: dict[str, Outcome]
    names: dict[str, str]
    before: tuple[object, ...]
    after: tuple[object, ...]


@pytest.fixture(scope="module")
def bypass(gateway: RunningGateway) -> BypassRun:
    """Replay every case once as the reader, with the audit records of each; snapshot MariaDB around it."""
    names = {"db": gateway.db.name, "second": gateway.db.name}  # (this corpus names no second schema)
    before = _snapshot(gateway.db.name, gateway.db.prefix)
    OUTFILE.unlink(missing_ok=True)
    replayer = Replayer(gateway.url, gateway.idp, names)
    try:
        outcomes = {case.id: replayer.send(case) for case in CASES}
    finally:
        replayer.close()
    gateway.audit_settled()
    attach_records(outcomes, gateway.settings.audit.path)
    return BypassRun(outcomes, names, before, _snapshot(gateway.db.name, gateway.db.prefix))


def test_corpus_labels_are_sound() -> None:
    """Distinct ids and statements, each labelled with a layer and code the refusal rules know."""
    assert len({ident for ident, *_ in CORPUS}) == len(CORPUS)
    assert len({sql for _, sql, *_ in CORPUS}) == len(CORPUS)
    for case in CASES:
        assert LAYERS[case.refused_by][case.code] == case.status


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bypass_is_refused_by_the_labelled_layer(bypass: BypassRun, case: Case) -> None:
    """The gateway's analysis or policy refused it as labelled (never MariaDB), with a deny record."""
    outcome = bypass.outcomes[case.id]
    problems = refusal_problems(case, outcome, bypass.names)
    assert problems == [], f"{case.id}: {outcome.status} {outcome.body!r}"


def test_mariadb_is_unchanged_after_the_corpus(bypass: BypassRun) -> None:
    """The data, the schema, the accounts and their privileges are as before; no file was written."""
    assert bypass.after == bypass.before
    assert not OUTFILE.exists()


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT * FROM items WHERE name = '\\' OR 1=1 -- '", []),
        ("SELECT 'a\\'; DROP TABLE items; -- '", [["a'; DROP TABLE items; -- "]]),
        ("SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (a INT PATH '$')) t", [[1]]),
        ('SELECT id FROM items WHERE name = "a""b"', []),
        ("SELECT `id` FROM `items` WHERE `name` = 'pen'", [[1]]),
    ],
)
def test_quoting_edge_cases_run_as_the_harmless_reads_they_are(
    gateway: RunningGateway, sql: str, rows: list[list[object]]
) -> None:
    """Quoting tricks are one string literal, not a second statement: each runs as a read with these rows."""
    before = _snapshot(gateway.db.name, gateway.db.prefix)
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": sql})
    assert reply.status_code == 200, reply.text
    assert (reply.json()["kind"], reply.json()["rows"]) == ("read", rows)
    assert _snapshot(gateway.db.name, gateway.db.prefix) == before
