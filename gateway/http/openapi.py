"""The OpenAPI document at ``/openapi.json``: what FastAPI cannot see in the route signatures.

The statement, admin and access-request routes read their JSON body in a
dependency (so ``curl -d`` works whatever its content type), the bearer
token and ``If-Match`` are read from the headers by hand, and every error is
an RFC 9457 problem rather than FastAPI's ``HTTPValidationError``. FastAPI's
own document therefore shows no request bodies, no authentication and the
wrong error shape. ``install`` adds them, so the document describes what the
routes do (for generated clients, ``/docs`` in dev mode, and
``tests/test_fuzz_api.py``, which fuzzes the gateway from it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from gateway.db.streaming import NDJSON
from gateway.http.access import DecisionBody, RequestBody
from gateway.http.admin import GrantBody, RevocationBody
from gateway.http.bodies import QueryBody, TransactionBody
from gateway.http.problems import PROBLEM
from gateway.http.reviews import VerdictBody

if TYPE_CHECKING:
    from fastapi import FastAPI
    from pydantic import BaseModel

__all__ = ["install"]

# (method, path) -> the model its JSON body is validated with, and an example body.
BODIES: dict[tuple[str, str], tuple[type[BaseModel], dict[str, Any]]] = {
    ("post", "/v1/query"): (
        QueryBody,
        {"target": "shop", "sql": "SELECT * FROM items WHERE id = ?", "params": [42], "max_rows": 100},
    ),
    ("post", "/v1/transaction"): (
        TransactionBody,
        {"target": "shop", "statements": [{"sql": "UPDATE items SET price = ? WHERE id = ?", "params": ["2.50", 1]}]},
    ),
    ("post", "/v1/grants"): (
        GrantBody,
        {
            "name": "analysts-read-shop",
            "subjects": ["group:analysts"],
            "target": "shop",
            "access": "read",
            "db_user": "gw_reader",
            "tables": {"allow": ["shop.*"], "deny": ["shop.payment_*"]},
            "max_rows": 10000,
            "statement_timeout": "30s",
            "expires": "2026-12-31T23:59:59Z",
        },
    ),
    ("post", "/v1/revocations"): (
        RevocationBody,
        {"subject": "user:bob@example.com", "target": "*", "reason": "left the team"},
    ),
    ("post", "/v1/access-requests"): (
        RequestBody,
        {"target": "shop", "access": "read", "duration": "8h", "reason": "incident 1234"},
    ),
    ("post", "/v1/access-requests/{request_id}/approve"): (DecisionBody, {"reason": "on call this week"}),
    ("post", "/v1/access-requests/{request_id}/deny"): (DecisionBody, {"reason": "use the replica"}),
    ("post", "/v1/reviews/{review_id}/approve"): (VerdictBody, {"comment": "matches ticket 4711"}),
    ("post", "/v1/reviews/{review_id}/reject"): (VerdictBody, {"comment": "touches every row: add a WHERE"}),
}
# Policy edits name the revision they start from (428 without, 412 when stale).
IF_MATCH = {
    ("post", "/v1/grants"),
    ("delete", "/v1/grants/{name}"),
    ("post", "/v1/revocations"),
    ("delete", "/v1/revocations/{subject}"),
}
PUBLIC = {"/healthz", "/readyz"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem with the gateway's error code and the request id.",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"type": "string", "description": "The gateway's own id (also in X-Request-ID)"},
        "client_request_id": {"type": "string", "description": "The caller's X-Request-ID, when it sent a sane one"},
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_RETRY_AFTER = {"Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}}


def install(app: FastAPI) -> None:
    """Serve the completed document as ``app.openapi()`` (built once, on first use)."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            version = app.openapi_version
            app.openapi_schema = complete(
                get_openapi(title=app.title, version=app.version, openapi_version=version, routes=app.routes)
            )
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]  # FastAPI documents replacing app.openapi


def complete(doc: dict[str, Any]) -> dict[str, Any]:
    """Add bodies, authentication, ``If-Match`` and problem responses to FastAPI's document."""
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    mode: Literal["validation"] = "validation"
    models = [(model, mode) for model, _ in BODIES.values()]
    _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas.update(definitions.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            _complete_operation(path, method, operation)
    return doc


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    body = BODIES.get((method, path))
    if body is not None:
        model, example = body
        schema = {"$ref": f"#/components/schemas/{model.__name__}"}
        content = {"application/json": {"schema": schema, "example": example}}
        operation["requestBody"] = {"required": True, "content": content}
    if (method, path) in IF_MATCH:
        operation.setdefault("parameters", []).append(
            {
                "name": "If-Match",
                "in": "header",
                "required": True,
                "description": "The policy revision the edit starts from (the ETag of GET /v1/policy).",
                "schema": {"type": "string"},
            }
        )
    responses = operation.setdefault("responses", {})
    if path == "/v1/query":  # with `Accept` NDJSON, CSV or TSV the rows stream
        ok = responses.setdefault("200", {"description": "Successful Response"})
        for media in (NDJSON, "text/csv", "text/tab-separated-values"):
            ok.setdefault("content", {})[media] = {"schema": {"type": "string"}}
    responses.pop("422", None)  # FastAPI's HTTPValidationError: the gateway answers a problem instead
    problem = {"description": "An error (codes: see the README)", "content": {PROBLEM: {"schema": _PROBLEM_REF}}}
    responses["4XX"] = problem
    if path not in PUBLIC:
        operation["security"] = [{"bearer": []}]
        # database_unavailable, pool_exhausted, audit_unavailable, policy_write_failed
        responses["503"] = {**problem, "description": "Unavailable: retry later", "headers": _RETRY_AFTER}
    if path in {"/v1/query", "/v1/transaction"}:
        responses["504"] = {**problem, "description": "statement_timeout"}
        responses["202"] = {
            "description": "Held for review (the grant's review rule): nothing ran; the review and its dry run",
            "headers": {"Location": {"schema": {"type": "string"}, "description": "/v1/reviews/<id>"}},
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    if path == "/readyz":
        # Anyone may ask; a bearer token with the admin role also gets the checks behind the answer.
        operation["security"] = [{}, {"bearer": []}]
        responses["503"] = {"description": "Not ready (an admin also sees the failing checks)"}
