"""What may be bound into SQL, and what MariaDB's errors are called (issue 11, item 5).

A JSON integer beyond 64 bits must not reach MariaDB as a rounded double, and
a server error is a ``database_error`` whatever its number: only the client
library's own errors and a lost session mean ``database_unavailable``.
"""

from __future__ import annotations

import orjson
import pytest
from asyncmy import errors as db_errors
from conftest import RunningGateway

from gateway.audit.sqlite import SQLiteAuditStore
from gateway.db import execution
from gateway.errors import DatabaseError, DatabaseUnavailable, InvalidRequest, StatementTimeout
from gateway.sql.statements import analyze

BEYOND = [2**64, -(2**63) - 1, 10**30]
EDGES = [2**64 - 1, -(2**63)]


@pytest.mark.parametrize("value", BEYOND)
def test_an_integer_beyond_64_bits_is_refused_by_the_gateway(gateway: RunningGateway, value: int) -> None:
    """Params beyond BIGINT / BIGINT UNSIGNED: 422 invalid_request naming the param, nothing decided or run."""
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": "SELECT ?", "params": [value]})
        txn = http.post(
            "/v1/transaction", json={"target": "shop", "statements": [{"sql": "SELECT ?", "params": [1, value]}]}
        )
    for answer in (reply, txn):
        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert problem["code"] == "invalid_request"
        assert "integer outside the 64-bit range" in problem["detail"]
    assert "params.0" in reply.json()["detail"]


@pytest.mark.parametrize("value", EDGES)
def test_the_64_bit_edges_are_bound_exactly(gateway: RunningGateway, value: int) -> None:
    """The largest unsigned and the smallest signed 64-bit integers reach MariaDB exactly as sent."""
    with gateway.client("reader") as http:
        reply = http.post(
            "/v1/query", json={"target": "shop", "sql": "SELECT ? = CAST(? AS CHAR)", "params": [value, str(value)]}
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"] == [[1]]


@pytest.mark.parametrize("text", ["[NaN]", "[Infinity]", "[-Infinity]", "[1e400]"])
def test_non_finite_numbers_are_refused(gateway: RunningGateway, text: str) -> None:
    """NaN and infinities (as tokens or by overflow) never become a parameter: 422 invalid_request."""
    body = f'{{"target": "shop", "sql": "SELECT ?", "params": {text}}}'
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", content=body)
    assert (reply.status_code, reply.json()["code"]) == (422, "invalid_request")


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, float("nan"), float("inf")])
def test_bind_refuses_what_it_cannot_bind_exactly(value: object) -> None:
    """The binding step itself refuses the same values, whatever route a parameter took to it."""
    statement = analyze("SELECT ?", default_database="shop")
    with pytest.raises(InvalidRequest):
        execution.bind(statement, [value], conn=None)  # type: ignore[arg-type, list-item]  # refused before the driver


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (db_errors.OperationalError(4015, "Window function is allowed only in SELECT list"), DatabaseError),
        (db_errors.OperationalError(4002, "some 4000-range server error"), DatabaseError),
        (db_errors.OperationalError(3034, "Calling geometry function"), DatabaseError),
        (db_errors.ProgrammingError(1064, "You have an error in your SQL syntax"), DatabaseError),
        (db_errors.OperationalError(2013, "Lost connection to server during query"), DatabaseUnavailable),
        (db_errors.OperationalError(2006, "MySQL server has gone away"), DatabaseUnavailable),
        (db_errors.InterfaceError(0, "Not connected"), DatabaseUnavailable),
        (db_errors.InternalError(1, "Packet sequence number wrong"), DatabaseUnavailable),
        (db_errors.OperationalError(1053, "Server shutdown in progress"), DatabaseUnavailable),
        (db_errors.OperationalError(1969, "max_statement_time exceeded"), StatementTimeout),
    ],
)
def test_errors_are_classified_by_what_they_are(error: db_errors.MySQLError, expected: type) -> None:
    """Client-library and session errors are unavailability; a server error of any number is database_error."""
    assert type(execution.classify(error)) is expected


@pytest.mark.parametrize(
    ("sql", "errno"),
    [
        ("SELECT id FROM items WHERE ROW_NUMBER() OVER () > 1", 4015),
        ("SELECT NTILE(0) OVER (ORDER BY id) FROM items", 4024),
        ("SELECT id FROM items ORDER BY ROW_NUMBER() OVER w", 4009),
    ],
)
@pytest.mark.parametrize("accept", ["application/json", "application/x-ndjson"])
def test_a_4000_range_server_error_is_a_database_error(
    gateway: RunningGateway, sql: str, errno: int, accept: str
) -> None:
    """MariaDB's own 4000-range errors, raised by statements a read grant may send: database_error with errno.

    A buffered reply is a 422 problem; a stream that has sent its header ends with an error line instead.
    """
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", json={"target": "shop", "sql": sql}, headers={"Accept": accept})
    if reply.status_code == 200 and accept == "application/x-ndjson":
        problem = orjson.loads(reply.text.splitlines()[-1])
        assert problem["type"] == "error"
    else:
        assert reply.status_code == 422, reply.text
        problem = reply.json()
    assert (problem["code"], problem["status"]) == ("database_error", 422)
    assert problem["detail"].startswith(f"MariaDB error {errno}: ")


@pytest.mark.parametrize(
    "body",
    [
        {"target": "shop", "sql": "SELECT * FROM items WHERE id = ?", "params": []},
        {"target": "shop", "statements": [{"sql": "SELECT 1"}, {"sql": "SELECT 1", "params": [2]}]},
    ],
    ids=["query-missing-param", "transaction-extra-param"],
)
def test_placeholder_and_param_counts_are_refused_before_the_decision(
    gateway: RunningGateway, body: dict[str, object]
) -> None:
    """A count mismatch is a 422 recorded as a denial (not an allow that fails at bind), before any connection."""
    path = "/v1/transaction" if "statements" in body else "/v1/query"
    with gateway.client("reader") as http:
        reply = http.post(path, json=body)
    assert (reply.status_code, reply.json()["code"]) == (422, "invalid_request"), reply.text
    assert "placeholders but" in reply.json()["detail"]
    gateway.audit_settled()
    store = SQLiteAuditStore(gateway.settings.audit.path, readonly=True)
    try:
        records = [e for e in store.iter_entries() if e.get("request_id") == reply.json()["request_id"]]
    finally:
        store.close()
    assert [(r["event"], r["decision"], r["code"]) for r in records] == [("decision", "deny", "invalid_request")]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/query", '{"target": "shop", "sql": "SELECT * FROM payment_cards", "sql": "SELECT 1"}'),
        ("/v1/query", '{"target": "shop", "sql": "SELECT 1", "s\\u0071l": "SELECT * FROM payment_cards"}'),
        ("/v1/query", '{"target": "shop", "target": "shop", "sql": "SELECT \'10:00:00\'"}'),
        ("/v1/transaction", '{"target": "shop", "statements": [{"sql": "SELECT 1", "params": [], "params": [1]}]}'),
    ],
    ids=["sql-twice", "sql-escaped-twice", "target-twice", "nested-params-twice"],
)
def test_a_member_name_given_twice_is_refused(gateway: RunningGateway, path: str, body: str) -> None:
    """JSON with one member name twice is ambiguous (RFC 8259): 422 invalid_request, whichever member comes first."""
    with gateway.client("reader") as http:
        reply = http.post(path, content=body)
    assert (reply.status_code, reply.json()["code"]) == (422, "invalid_request"), reply.text
    assert reply.json()["detail"] == "a JSON object in the body has the same member name twice"


def test_colons_in_values_do_not_refuse_a_body(gateway: RunningGateway) -> None:
    """Colons inside strings (times, JSON) only trigger the second parse; a body without repeats still runs."""
    body = '{"target": "shop", "sql": "SELECT \'10:00:00\', ?", "params": ["{\\"a\\": 1}"]}'
    with gateway.client("reader") as http:
        reply = http.post("/v1/query", content=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["rows"] == [["10:00:00", '{"a": 1}']]
