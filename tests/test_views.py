"""Views are resolved to the tables they read, and table rules apply to both (SECURITY rule 28).

A view runs with its definer's rights, so the reader account could read a
denied table through one; the gateway must see through it. The test views live
in the session's test database; the analysts' grant there denies
``payment_*``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DB_HOST, DB_PORT, RunningGateway, ScratchDatabase, root_query

from gateway.audit.sqlite import SQLiteAuditStore
from gateway.db.catalog import ViewCatalog
from gateway.db.pools import PoolRegistry
from gateway.policy.decide import Decision
from gateway.settings import SecretSource, TargetSettings
from gateway.sql.statements import analyze


@pytest.fixture(scope="module")
def views(test_db: ScratchDatabase) -> Iterator[ScratchDatabase]:
    """Views over allowed and denied tables, nested; the reader may see the definition of some of them."""
    db, reader = test_db.name, test_db.accounts["reader"].user
    statements = [
        f"CREATE VIEW `{db}`.v_items AS SELECT id, name FROM `{db}`.items",
        f"CREATE VIEW `{db}`.v_cards AS SELECT c.card_number FROM `{db}`.payment_cards AS c",
        f"CREATE VIEW `{db}`.v_nested AS SELECT * FROM `{db}`.v_cards",
        f"CREATE VIEW `{db}`.v_hidden AS SELECT id FROM `{db}`.items",
        f"CREATE VIEW `{db}`.v_const AS SELECT 1 AS one",
    ]
    for statement in statements:
        root_query(statement)
    # As `gateway db plan` would grant them (SELECT, SHOW VIEW), and as a careless DBA might: the reader may
    # select the views over payment_cards too, so only the gateway stands in the way; v_hidden: no SHOW VIEW.
    for view in ("v_items", "v_cards", "v_nested", "v_const"):
        root_query(f"GRANT SELECT, SHOW VIEW ON `{db}`.`{view}` TO '{reader}'@'%'")
    root_query(f"GRANT SELECT ON `{db}`.`v_hidden` TO '{reader}'@'%'")
    yield test_db
    for view in ("v_items", "v_cards", "v_nested", "v_const", "v_hidden"):
        root_query(f"REVOKE ALL PRIVILEGES ON `{db}`.`{view}` FROM '{reader}'@'%'")
    root_query(f"DROP VIEW IF EXISTS `{db}`.v_items, `{db}`.v_cards, `{db}`.v_nested, `{db}`.v_hidden, `{db}`.v_const")


def _query(gateway: RunningGateway, sql: str) -> tuple[int, dict[str, Any]]:
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": sql})
    body: dict[str, Any] = reply.json()
    return reply.status_code, body


def test_a_view_over_an_allowed_table_reads(gateway: RunningGateway, views: ScratchDatabase) -> None:
    """The view and its base table are both allowed: the rows come back, and the record lists both."""
    status, body = _query(gateway, "SELECT id, name FROM v_items WHERE id = 1")
    assert (status, body.get("rows")) == (200, [[1, "pen"]]), body
    gateway.audit_settled()
    store = SQLiteAuditStore(gateway.settings.audit.path, readonly=True)
    try:
        decision = next(
            e for e in store.iter_entries() if e.get("request_id") == body["request_id"] and e["event"] == "decision"
        )
    finally:
        store.close()
    assert set(decision["tables"]) == {f"{views.name}.v_items", f"{views.name}.items"}


@pytest.mark.parametrize("view", ["v_cards", "v_nested"])
def test_a_view_over_a_denied_table_is_refused_by_the_gateway(
    gateway: RunningGateway, views: ScratchDatabase, view: str
) -> None:
    """`payment_cards` is denied; reading it through a view (or a view of a view) is refused by policy, not MariaDB."""
    status, body = _query(gateway, f"SELECT * FROM {view}")
    assert (status, body["code"]) == (403, "forbidden"), body
    assert body["detail"] == f"table {views.name}.payment_cards is not allowed by your grants"
    # MariaDB itself would have answered: the account may select the view (definer's rights).
    assert root_query(f"SELECT COUNT(*) FROM `{views.name}`.`{view}`")[0][0] == 2


def test_a_view_hidden_inside_a_subquery_or_join_is_resolved(gateway: RunningGateway, views: ScratchDatabase) -> None:
    """Every table of every subquery and join is expanded, not only the first."""
    status, body = _query(gateway, "SELECT i.id FROM items AS i JOIN (SELECT * FROM v_nested) AS n ON 1 LIMIT 1")
    assert (status, body["code"]) == (403, "forbidden"), body
    assert "payment_cards" in body["detail"]


def test_a_view_whose_definition_cannot_be_seen_is_refused(gateway: RunningGateway, views: ScratchDatabase) -> None:
    """Without SHOW VIEW the account cannot see what the view reads: unknown, so refused (fail closed)."""
    status, body = _query(gateway, "SELECT id FROM v_hidden")
    assert (status, body["code"]) == (400, "statement_rejected"), body
    assert "v_hidden cannot be resolved" in body["detail"]
    assert "SHOW VIEW" in body["detail"]


def test_a_view_of_no_table_reads(gateway: RunningGateway, views: ScratchDatabase) -> None:
    """A view that reads no table adds nothing to check."""
    status, body = _query(gateway, "SELECT one FROM v_const")
    assert (status, body.get("rows")) == (200, [[1]]), body


def test_a_view_redefined_through_the_gateway_is_seen_at_once(gateway: RunningGateway, views: ScratchDatabase) -> None:
    """DDL run through the gateway drops what was cached of the target's views."""
    with gateway.client("admin") as http:
        reply = http.post(
            "/v1/query",
            json={
                "target": "shop",
                "sql": "CREATE OR REPLACE VIEW v_items AS SELECT card_number AS name FROM payment_cards",
            },
        )
        assert reply.status_code == 200, reply.text
    try:
        status, body = _query(gateway, "SELECT name FROM v_items")
        assert (status, body["code"]) == (403, "forbidden"), body
        assert "payment_cards" in body["detail"]
    finally:
        root_query(f"CREATE OR REPLACE VIEW `{views.name}`.v_items AS SELECT id, name FROM `{views.name}`.items")
        reader = views.accounts["reader"].user
        root_query(f"GRANT SELECT, SHOW VIEW ON `{views.name}`.v_items TO '{reader}'@'%'")


@pytest.fixture
def function_views(views: ScratchDatabase) -> Iterator[ScratchDatabase]:
    """Views whose definitions call a stored function over a denied table, and SLEEP; the reader may use them."""
    db, reader = views.name, views.accounts["reader"].user
    root_query(
        f"CREATE FUNCTION `{db}`.f_card() RETURNS VARCHAR(32) READS SQL DATA "
        f"RETURN (SELECT card_number FROM `{db}`.payment_cards WHERE id = 1)"
    )
    root_query(f"CREATE VIEW `{db}`.v_fn AS SELECT `{db}`.f_card() AS card")
    root_query(f"CREATE VIEW `{db}`.v_fn_nested AS SELECT card FROM `{db}`.v_fn")
    root_query(f"CREATE VIEW `{db}`.v_sleep AS SELECT SLEEP(0) AS slept")
    for view in ("v_fn", "v_fn_nested", "v_sleep"):
        root_query(f"GRANT SELECT, SHOW VIEW ON `{db}`.`{view}` TO '{reader}'@'%'")
    yield views
    for view in ("v_fn", "v_fn_nested", "v_sleep"):
        root_query(f"REVOKE ALL PRIVILEGES ON `{db}`.`{view}` FROM '{reader}'@'%'")
    root_query(f"DROP VIEW IF EXISTS `{db}`.v_fn, `{db}`.v_fn_nested, `{db}`.v_sleep")
    root_query(f"DROP FUNCTION IF EXISTS `{db}`.f_card")


@pytest.mark.parametrize(
    ("view", "function"), [("v_fn", "{db}.`F_CARD`"), ("v_fn_nested", "{db}.`F_CARD`"), ("v_sleep", "SLEEP")]
)
def test_the_functions_a_view_calls_are_checked(
    gateway: RunningGateway, function_views: ScratchDatabase, view: str, function: str
) -> None:
    """The functions a view's definition calls are checked as if the statement called them.

    A view runs its calls with the definer's rights: a stored function (reading a denied table) or SLEEP in
    its definition is refused by the function rules (the attack corpus found this bypass). MariaDB stores
    the definition with quoted names, so the call is named as a quoted one (``DB.`F_CARD```).
    """
    status, body = _query(gateway, f"SELECT * FROM {view}")
    assert (status, body["code"]) == (403, "forbidden"), body
    assert body["detail"] == f"function {function.format(db=function_views.name.upper())} is not allowed"


@pytest.mark.anyio
async def test_a_statement_without_views_is_decided_once(views: ScratchDatabase, tmp_path: Path) -> None:
    """No view among the tables: the catalogue hands back the very statement, which the pipeline does not decide again.

    A view among them: a new statement, with the view's base tables added.
    """
    reader = views.accounts["reader"]
    secret = tmp_path / "reader.secret"
    secret.write_text(reader.password, encoding="utf-8")
    target = TargetSettings(
        host=DB_HOST, port=DB_PORT, database=views.name, secrets={reader.user: SecretSource(file=secret)}
    )
    registry = PoolRegistry({"shop": target})
    await registry.open()
    try:
        catalog = ViewCatalog(registry)
        decision = Decision(allowed=True, code="allowed", reason="ok", target="shop", grant="g", db_user=reader.user)
        plain = analyze("SELECT id FROM items WHERE id = 1", default_database=views.name)
        assert await catalog.expand_statement(decision, plain) is plain
        through = analyze("SELECT id FROM v_items", default_database=views.name)
        expanded = await catalog.expand_statement(decision, through)
        assert expanded is not through
        assert expanded.tables == {f"{views.name}.v_items", f"{views.name}.items"}
    finally:
        await registry.close()
