"""OpenTelemetry tracing: off costs nothing; on, one trace per request with a span per stage."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from conftest import ScratchDatabase, gateway_settings, start_gateway, stop_gateway
from oidcfixture import OidcProvider
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.settings import Settings, TracingSettings
from gateway.tracing import Tracing, build

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
STAGES = ["authn", "policy", "audit.decision", "pool.wait", "execute", "audit.outcome"]


def test_tracing_off_is_one_shared_no_op() -> None:
    """With tracing off (the default) every span is the same no-op object: nothing is recorded or exported."""
    tracing = build(TracingSettings())
    assert not tracing.enabled
    assert tracing.span("execute") is tracing.span("policy") is Tracing().request("POST", {}, "-")
    with tracing.span("execute") as span:
        assert span is None


def _traced_gateway(tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase, **tracing: object) -> Settings:
    return gateway_settings(tmp_path, idp, test_db, tracing={"enabled": True, **tracing})


def _server_span(spans: Sequence[ReadableSpan], request_id: str) -> ReadableSpan:
    (span,) = [
        s for s in spans if s.kind is SpanKind.SERVER and (s.attributes or {}).get("gateway.request_id") == request_id
    ]
    return span


def _started(span: ReadableSpan) -> int:
    """A finished span's start time (ns), to order spans by."""
    assert span.start_time is not None
    return span.start_time


def test_a_query_is_one_trace_with_a_span_per_stage(
    tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase
) -> None:
    """A query continues the caller's traceparent: a server span with the stages as children, no secrets in it."""
    exporter = InMemorySpanExporter()
    running = start_gateway(_traced_gateway(tmp_path, idp, test_db), idp, test_db, span_exporter=exporter)
    try:
        with running.client("reader") as http:
            token = http.headers["Authorization"].split()[1]
            reply = http.post(
                "/v1/query",
                json={"target": "shop", "sql": "SELECT id FROM items WHERE name = 'secret-literal'"},
                headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "X-Request-ID": "traced-1"},
            )
            denied = http.post(
                "/v1/query",
                json={"target": "shop", "sql": "DELETE FROM items"},
                headers={"X-Request-ID": "traced-2"},
            )
    finally:
        stop_gateway(running)  # shuts the provider down: every span is exported
    assert (reply.status_code, denied.status_code) == (200, 403)
    spans = exporter.get_finished_spans()
    root = _server_span(spans, reply.headers["x-request-id"])
    assert root.name == "POST /v1/query"
    assert format(root.context.trace_id, "032x") == CALLER_TRACE
    assert root.parent is not None
    assert format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert (root.attributes["gateway.decision"], root.attributes["gateway.target"]) == ("allow", "shop")
    children = sorted((s for s in spans if s.parent and s.parent.span_id == root.context.span_id), key=_started)
    assert [s.name for s in children] == STAGES
    assert all(s.context.trace_id == root.context.trace_id for s in children)
    everything = repr([dict(s.attributes or {}) for s in spans])
    assert "secret-literal" not in everything
    assert token not in everything
    denied_root = _server_span(spans, denied.headers["x-request-id"])
    denied_children = [s.name for s in spans if s.parent and s.parent.span_id == denied_root.context.span_id]
    assert sorted(denied_children) == ["audit.decision", "authn", "policy"]
    assert denied_root.attributes is not None
    assert denied_root.attributes["http.response.status_code"] == 403


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver on loopback: keeps every export request's body."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_spans_leave_over_otlp_http(tmp_path: Path, idp: OidcProvider, test_db: ScratchDatabase) -> None:
    """With the default exporter, spans reach an OTLP/HTTP collector as protobuf on its traces URL."""
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}/v1/traces"
    try:
        running = start_gateway(_traced_gateway(tmp_path, idp, test_db, endpoint=endpoint), idp, test_db)
        try:
            with running.client("reader") as http_client:
                assert http_client.post("/v1/query", json={"target": "shop", "sql": "SELECT 1"}).status_code == 200
        finally:
            stop_gateway(running)
    finally:
        collector.shutdown()
        collector.server_close()
    assert _Collector.received, "nothing was exported"
    names = set()
    for path, content_type, body in _Collector.received:
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
            assert service == "db-gateway"
            names |= {s.name for scope in resource_spans.scope_spans for s in scope.spans}
    assert {"POST /v1/query", *STAGES} <= names
