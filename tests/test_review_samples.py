"""Statement review's dry-run samples (issue 16): the rows a write would change, before and after, bounded.

Real MariaDB, the real OIDC provider, a real gateway (``reviewfixture.env``).
The samples come from reads the gateway derives from the write's own tree and
runs inside the dry-run transaction; each read is decided and recorded by the
authorizer like any read (a ``decision`` record naming the review); MariaDB
is unchanged afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import root_query
from reviewfixture import Env, ask, audit, env

from gateway.pipeline.sampling import bounded
from gateway.sql.sample import SampleRead, by_primary_key, derive
from gateway.sql.statements import analyze

__all__ = ["env"]  # the module-scoped fixture
WIDE_ROWS = 25  # more than the default review_sample_rows (20)


@pytest.fixture(scope="module")
def tables(env: Env) -> Iterator[None]:
    """``wide`` (25 rows, a composite primary key, text) and ``nokey`` (no primary key) beside the ledger."""
    db = env.db.name
    root_query(f"CREATE TABLE `{db}`.wide (a INT, b VARCHAR(8), note TEXT, PRIMARY KEY (a, b))")
    values = ", ".join(f"({i}, 'k{i}', 'n{i}')" for i in range(1, WIDE_ROWS + 1))
    root_query(f"INSERT INTO `{db}`.wide VALUES {values}")
    root_query(f"CREATE TABLE `{db}`.nokey (v INT)")
    root_query(f"INSERT INTO `{db}`.nokey VALUES (1), (2)")
    yield
    root_query(f"DROP TABLE `{db}`.wide, `{db}`.nokey")


def only(body: dict[str, Any]) -> dict[str, Any]:
    """The dry run's one statement."""
    statements: list[dict[str, Any]] = body["dry_run"]["statements"]
    assert len(statements) == 1
    return statements[0]


def test_an_update_shows_its_rows_before_and_after_and_changes_nothing(env: Env) -> None:
    """Same WHERE and ORDER BY; after: the same rows by primary key; stored with the review; MariaDB unchanged."""
    before = env.amounts()
    body = ask(env, "UPDATE ledger SET amount = amount + ? WHERE id <= ? ORDER BY id DESC", [5, 3])
    assert env.amounts() == before
    step = only(body)
    assert step["rows_affected"] == 3
    assert step["sample"] == {
        "columns": ["id", "amount"],
        "primary_key": ["id"],
        "before": [[3, before[3]], [2, before[2]], [1, before[1]]],
        "after": [[3, before[3] + 5], [2, before[2] + 5], [1, before[1] + 5]],
        "more": False,
    }
    assert step["sample_note"] is None
    with env.client("rex") as http:
        stored = http.get(f"/v1/reviews/{body['review']['id']}").json()["review"]["dry_run"]
    assert stored == body["dry_run"]


def test_each_sample_read_is_decided_and_recorded_like_any_read(env: Env) -> None:
    """Two reads (before, after), each with its own allow decision record naming the review, on the same table."""
    body = ask(env, "UPDATE ledger SET amount = 7 WHERE id = ?", [4])
    review = body["review"]["id"]
    reads = [e for e in reversed(audit(env, "decision")) if e.get("review") == review]
    assert [(e["decision"], e["code"], e["kind"], e["grant"]) for e in reads] == [
        ("allow", "allowed", "read", "eng-write"),
        ("allow", "allowed", "read", "eng-write"),
    ]
    assert [e["tables"] for e in reads] == [[f"{env.db.name}.ledger"]] * 2
    assert reads[0]["statement"] == "SELECT * FROM ledger WHERE id = ? LIMIT 21"
    assert reads[1]["statement"] == "SELECT * FROM ledger WHERE (`id` = ?)"
    assert {e["request_id"] for e in reads} == {body["request_id"]}
    assert only(body)["sample"]["after"] == [[4, 7]]


def test_a_sample_read_the_policy_gives_to_another_account_does_not_run(env: Env) -> None:
    """The policy decides each sample read: a read grant on the reader account now decides it, so it is not run.

    The write is still the write grant's (a read grant does not cover it): it is held and dry-run as before.
    """
    extra = env.gateway.settings.policies_dir / "a-read.yaml"
    reader = env.db.accounts["reader"].user
    extra.write_text(
        "version: 1\ngrants:\n"
        f'  - {{name: eng-read, subjects: ["group:engineers"], target: shop, access: read, db_user: {reader}}}\n',
        encoding="utf-8",
    )
    env.reload_policy()
    try:
        body = ask(env, "UPDATE ledger SET amount = 8 WHERE id = ?", [6])
    finally:
        extra.unlink()
        env.reload_policy()
    step = only(body)
    assert (step["rows_affected"], step["sample"]) == (1, None)
    assert step["sample_note"] == "the sample read is decided by grant eng-read on another account: counts only"
    review = body["review"]["id"]
    reads = [e for e in audit(env, "decision") if e.get("review") == review]
    assert [(e["kind"], e["grant"], e["db_user"]) for e in reads] == [("read", "eng-read", reader)]
    assert body["analysis"]["grant"] == "eng-write"


@pytest.mark.usefixtures("tables")
def test_a_sample_is_bounded_and_says_there_are_more(env: Env) -> None:
    """25 rows touched: 20 shown, ``more``; a composite key, text values encoded like query results."""
    body = ask(env, "UPDATE wide SET note = CONCAT(note, '!') ORDER BY a")
    step = only(body)
    assert step["rows_affected"] == WIDE_ROWS
    sample = step["sample"]
    assert (sample["primary_key"], sample["more"], len(sample["before"])) == (["a", "b"], True, 20)
    assert sample["before"][0] == [1, "k1", "n1"]
    assert sample["after"][0] == [1, "k1", "n1!"]
    assert root_query(f"SELECT note FROM `{env.db.name}`.wide WHERE a = 1") == [("n1",)]


@pytest.mark.usefixtures("tables")
def test_a_delete_shows_its_rows_and_a_limit_bounds_them(env: Env) -> None:
    """DELETE: the rows before, none after (null); its LIMIT is the read's."""
    step = only(ask(env, "DELETE FROM wide WHERE a > ? ORDER BY a LIMIT 2", [10]))
    assert step["sample"] == {
        "columns": ["a", "b", "note"],
        "primary_key": ["a", "b"],
        "before": [[11, "k11", "n11"], [12, "k12", "n12"]],
        "after": None,
        "more": False,
    }
    assert root_query(f"SELECT COUNT(*) FROM `{env.db.name}`.wide") == [(WIDE_ROWS,)]


@pytest.mark.usefixtures("tables")
def test_counts_only_without_a_primary_key_for_inserts_and_over_several_tables(env: Env) -> None:
    """No sample, and the reply says why; no sample read was decided or run."""
    cases = {
        "UPDATE nokey SET v = 3": "has no primary key: counts only",
        "INSERT INTO ledger VALUES (99, 1)": "INSERT: counts only",
        "DELETE FROM ledger WHERE id IN (SELECT a FROM wide)": "a write over several tables: counts only",
    }
    for sql, note in cases.items():
        body = ask(env, sql)
        step = only(body)
        assert step["sample"] is None, sql
        assert note in step["sample_note"], sql
        review = body["review"]["id"]
        assert not [e for e in audit(env, "decision") if e.get("review") == review and e.get("kind") == "read"]


def test_a_transaction_samples_each_statement_in_order(env: Env) -> None:
    """Each statement sees the work of the ones before it (one transaction, rolled back)."""
    before = env.amounts()
    with env.client("ann") as http:
        reply = http.post(
            "/v1/transaction",
            json={
                "target": "shop",
                "statements": [
                    {"sql": "UPDATE ledger SET amount = 1 WHERE id = 5"},
                    {"sql": "UPDATE ledger SET amount = amount + 1 WHERE id = 5"},
                ],
            },
        )
    assert reply.status_code == 202, reply.text
    first, second = reply.json()["dry_run"]["statements"]
    assert (first["sample"]["before"], first["sample"]["after"]) == ([[5, before[5]]], [[5, 1]])
    assert (second["sample"]["before"], second["sample"]["after"]) == ([[5, 1]], [[5, 2]])
    assert env.amounts() == before


@pytest.mark.parametrize(
    ("sql", "params", "read"),
    [
        (
            "UPDATE shop.t AS x SET v = v + ?, w = ? WHERE x.id > ? AND n = 'a?' ORDER BY id DESC LIMIT ?",
            [1, "z", 3, 5],
            SampleRead(
                "SELECT * FROM shop.t AS x WHERE x.id > ? AND n = 'a?' ORDER BY id DESC LIMIT 5",
                (3,),
                "shop.t",
                "shop.t",
            ),
        ),
        (
            "DELETE FROM t WHERE k = ? AND b = X'41'",
            ["q"],
            SampleRead("SELECT * FROM t WHERE k = ? AND b = X'41' LIMIT 21", ("q",), "shop.t", "t"),
        ),
        (
            "UPDATE `My T` SET v = 1 LIMIT 500",
            [],
            SampleRead("SELECT * FROM `My T` LIMIT 21", (), "shop.my t", "`My T`"),
        ),
    ],
)
def test_the_sample_read_is_the_writes_own_table_where_order_and_limit(
    sql: str, params: list[Any], read: SampleRead
) -> None:
    """Pure: the derived read takes only the params of the write's WHERE / ORDER BY; literals are its own."""
    derived = derive(analyze(sql, default_database="shop"), params, 20)
    assert derived == read
    again = analyze(read.sql, default_database="shop")
    assert (again.kind.value, again.tables, again.placeholders) == ("read", frozenset({read.table}), len(read.params))


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE t JOIN u ON t.id = u.id SET t.v = 1",
        "DELETE t FROM t JOIN u ON t.id = u.id",
        "DELETE FROM t WHERE id = 1 RETURNING id",
        "REPLACE INTO t VALUES (1)",
        "UPDATE t SET v = 1 WHERE id IN (SELECT id FROM u)",
        "UPDATE t SET v = 1 LIMIT ?",
    ],
)
def test_no_sample_read_for_other_writes(sql: str) -> None:
    """Joins, RETURNING, REPLACE, subqueries over other tables, a LIMIT that is not an integer: counts only."""
    params: list[Any] = ["x"] * analyze(sql, default_database="shop").placeholders
    assert isinstance(derive(analyze(sql, default_database="shop"), params, 20), str)


def test_the_read_after_quotes_its_names() -> None:
    """Key columns from the catalogue are quoted (a backtick doubled); the table as the write wrote it; values are ?."""
    read = by_primary_key("`d`.`t``x`", ["a`b"], 2)
    assert read == "SELECT * FROM `d`.`t``x` WHERE (`a``b` = ?) OR (`a``b` = ?)"
    again = analyze(read, default_database="shop")
    assert (again.kind.value, again.tables, again.placeholders) == ("read", frozenset({"d.t`x"}), 2)


def test_the_samples_of_a_review_stay_under_the_byte_cap() -> None:
    """Rows past the cap are dropped from the end (``more`` set, a note); a later sample gets what is left."""

    def sample(rows: int) -> dict[str, Any]:
        before = [[i, "x" * 100] for i in range(rows)]
        return {"columns": ["k", "v"], "primary_key": ["k"], "before": before, "after": list(before), "more": False}

    first, second = sample(3), sample(10)
    out = bounded([(first, None), (None, "INSERT: counts only"), (second, None)], 2000)
    (kept, note), (absent, why), (trimmed, cut) = out
    assert (kept, note) == (sample(3), None)  # about 700 bytes: whole
    assert (absent, why) == (None, "INSERT: counts only")
    assert trimmed is not None
    assert trimmed["more"] is True
    assert 0 < len(trimmed["before"]) == len(trimmed["after"]) < 10
    assert cut is not None
    assert "byte cap" in cut
    total = sum(len(orjson.dumps(s)) for s, _ in out if s is not None)
    assert total <= 2000
