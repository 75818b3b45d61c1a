"""POST /v1/transaction: every statement authorized first, then all commit or none do."""

from __future__ import annotations

from conftest import RunningGateway, root_query

INSERT_ORDER = "INSERT INTO orders (customer_id, item_id, quantity, ordered_at, note) VALUES"


def _count(gateway: RunningGateway, where: str) -> int:
    return int(root_query(f"SELECT COUNT(*) FROM `{gateway.db.name}`.orders WHERE {where}")[0][0])


def test_transaction_commits_all(gateway: RunningGateway) -> None:
    """Two inserts and a read in one transaction: both rows committed, results per statement."""
    body = {
        "target": "shop",
        "statements": [
            {
                "sql": INSERT_ORDER + " (1, 1, 1, NOW(), ?)",
                "params": ["tx-all"],
            },
            {
                "sql": INSERT_ORDER + " (2, 2, 2, NOW(), ?)",
                "params": ["tx-all"],
            },
            {"sql": "SELECT COUNT(*) FROM orders WHERE note = ?", "params": ["tx-all"]},
        ],
    }
    with gateway.client("writer") as http:
        reply = http.post("/v1/transaction", json=body)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["committed"] is True
    assert [r["kind"] for r in result["results"]] == ["write", "write", "read"]
    assert result["results"][2]["rows"] == [[2]]
    assert _count(gateway, "note = 'tx-all'") == 2


def test_transaction_rolls_back_on_database_error(gateway: RunningGateway) -> None:
    """A failing second statement rolls the first back: nothing is committed."""
    body = {
        "target": "shop",
        "statements": [
            {"sql": INSERT_ORDER + " (1, 1, 1, NOW(), 'tx-none')"},
            {"sql": "INSERT INTO orders (id, customer_id, item_id, quantity, ordered_at) VALUES (1, 1, 1, 1, NOW())"},
        ],
    }
    with gateway.client("writer") as http:
        reply = http.post("/v1/transaction", json=body)
    assert reply.status_code == 422
    assert reply.json()["code"] == "database_error"
    assert _count(gateway, "note = 'tx-none'") == 0


def test_transaction_authorizes_everything_before_running(gateway: RunningGateway) -> None:
    """One statement the grant does not allow refuses the whole batch before any runs."""
    body = {
        "target": "shop",
        "statements": [
            {"sql": INSERT_ORDER + " (1, 1, 1, NOW(), 'tx-auth')"},
            {"sql": "DELETE FROM mysql.user"},
        ],
    }
    with gateway.client("writer") as http:
        reply = http.post("/v1/transaction", json=body)
    assert reply.status_code == 403
    assert _count(gateway, "note = 'tx-auth'") == 0


def test_read_grant_transaction_is_read_only(gateway: RunningGateway) -> None:
    """A read grant holder may run a read-only transaction but not a write inside it."""
    with gateway.client("reader") as http:
        ok = http.post(
            "/v1/transaction",
            json={
                "target": "shop",
                "statements": [
                    {"sql": "SELECT COUNT(*) FROM items"},
                    {"sql": "SELECT COUNT(*) FROM customers"},
                ],
            },
        )
        assert ok.status_code == 200, ok.text
        bad = http.post(
            "/v1/transaction",
            json={
                "target": "shop",
                "statements": [{"sql": "SELECT 1"}, {"sql": "DELETE FROM orders"}],
            },
        )
        assert bad.status_code == 403


def test_ddl_refused_inside_transaction(gateway: RunningGateway) -> None:
    """DDL commits implicitly in MariaDB, so a transaction holding DDL is refused up front."""
    with gateway.client("admin") as http:
        reply = http.post(
            "/v1/transaction",
            json={"target": "shop", "statements": [{"sql": "CREATE TABLE tx_ddl (id INT)"}]},
        )
    assert reply.status_code == 400
    assert reply.json()["code"] == "statement_rejected"


def test_ddl_grant_runs_ddl(gateway: RunningGateway) -> None:
    """The ddl grant (its own account) creates and drops a table; the reader cannot."""
    with gateway.client("admin") as http:
        made = http.post(
            "/v1/query",
            json={"target": "shop", "sql": "CREATE TABLE ddl_probe (id INT PRIMARY KEY)"},
        )
        assert made.status_code == 200, made.text
        assert made.json()["kind"] == "ddl"
        dropped = http.post("/v1/query", json={"target": "shop", "sql": "DROP TABLE ddl_probe"})
        assert dropped.status_code == 200, dropped.text
