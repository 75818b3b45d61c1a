"""The OpenAPI document describes what the routes really take and answer (``gateway/http/openapi.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.http.app import create_app
from gateway.settings import AuditSettings, IssuerSettings, SecretSource, Settings, TargetSettings

BODIES = {
    ("post", "/v1/query"): "QueryBody",
    ("post", "/v1/transaction"): "TransactionBody",
    ("post", "/v1/grants"): "GrantBody",
    ("post", "/v1/revocations"): "RevocationBody",
    ("post", "/v1/access-requests"): "RequestBody",
    ("post", "/v1/access-requests/{request_id}/approve"): "DecisionBody",
    ("post", "/v1/access-requests/{request_id}/deny"): "DecisionBody",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document of an app that is never started (building it needs no lifespan)."""
    shop = TargetSettings(host="127.0.0.1", database="shop", secrets={"gw_reader": SecretSource(env="UNUSED")})
    settings = Settings(
        issuers=(IssuerSettings(issuer="https://idp.invalid", audience="gateway"),),
        policies_dir=Path("policies"),
        targets={"shop": shop},
        audit=AuditSettings(path=Path("unused-audit.db")),
    )
    return create_app(settings).openapi()


@pytest.mark.parametrize(("operation", "model"), BODIES.items())
def test_json_bodies_are_documented(document: dict[str, Any], operation: tuple[str, str], model: str) -> None:
    """Routes that read their JSON body by hand still document it, with its model and an example."""
    method, path = operation
    content = document["paths"][path][method]["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": f"#/components/schemas/{model}"}
    assert model in document["components"]["schemas"]
    assert content["example"]


def test_errors_are_problems_and_v1_routes_need_a_token(document: dict[str, Any]) -> None:
    """Every 4xx is problem+json with code and request_id (not FastAPI's 422 shape); /v1 routes declare bearer auth.

    /readyz takes an optional token: without one it says ready or not; an admin's also gets the checks.
    """
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert {"code", "request_id"} <= set(document["components"]["schemas"]["Problem"]["required"])
    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            assert "422" not in responses
            assert responses["4XX"]["content"] == {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            }
            if path == "/readyz":  # anyone, or an admin's token for the details
                assert operation["security"] == [{}, {"bearer": []}]
            else:
                assert ("security" in operation) == path.startswith("/v1/"), path


def test_policy_edits_need_if_match_and_creations_answer_201(document: dict[str, Any]) -> None:
    """Edits document the required If-Match header; POSTs that create document 201, which is what they answer."""
    paths = document["paths"]
    edits = [
        ("post", "/v1/grants"),
        ("delete", "/v1/grants/{name}"),
        ("post", "/v1/revocations"),
        ("delete", "/v1/revocations/{subject}"),
    ]
    for method, path in edits:
        parameters = [(p["name"], p["in"], p["required"]) for p in paths[path][method]["parameters"]]
        assert ("If-Match", "header", True) in parameters
    for path in ("/v1/grants", "/v1/revocations", "/v1/access-requests"):
        assert set(paths[path]["post"]["responses"]) & {"200", "201"} == {"201"}


def test_query_documents_the_ndjson_stream(document: dict[str, Any]) -> None:
    """POST /v1/query answers JSON or, when asked, an NDJSON stream."""
    content = document["paths"]["/v1/query"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "application/x-ndjson"} <= content.keys()
