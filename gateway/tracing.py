"""Optional OpenTelemetry tracing (``tracing.enabled``, off by default).

Each HTTP request is one span (``POST /v1/query``, ...), continuing the
caller's W3C ``traceparent`` when there is one, with a child span per stage
of the statement path: ``authn``, ``policy`` (analysis and decision),
``audit.decision`` (the durable write before anything runs), ``pool.wait``,
``execute`` and ``audit.outcome``. Spans carry the request id, the target,
the decision and the code, never the token or the statement's text.

Off, every span is one shared no-op context manager and OpenTelemetry is not
even imported, so the request path pays nothing for it. On, the SDK's
``TracerProvider`` samples new traces at ``sample_ratio`` (a caller's
sampling decision is kept) and a batch processor exports over OTLP/HTTP
from its own thread; :meth:`Tracing.shutdown` flushes what is pending.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from gateway.settings import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

Attributes = Mapping[str, str | int | float | bool]
_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()


class Tracing:
    """Spans for the request path; a no-op unless built with a tracer."""

    def __init__(self, tracer: Tracer | None = None, provider: TracerProvider | None = None) -> None:
        self._tracer = tracer
        self._provider = provider

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded at all."""
        return self._tracer is not None

    def span(self, name: str, attributes: Attributes | None = None) -> AbstractContextManager[Any]:
        """A child span of the current one (no-op when tracing is off)."""
        if self._tracer is None:
            return _NOTHING
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def request(self, method: str, headers: Mapping[bytes, bytes], request_id: str) -> AbstractContextManager[Any]:
        """The root span of one HTTP request, continuing the caller's ``traceparent`` if sent."""
        if self._tracer is None:
            return _NOTHING
        attributes = {"http.request.method": method, "gateway.request_id": request_id}
        return self._request(self._tracer, method, headers, attributes)

    @staticmethod
    @contextlib.contextmanager
    def _request(tracer: Tracer, name: str, headers: Mapping[bytes, bytes], attributes: Attributes) -> Iterator[Any]:
        from opentelemetry.propagate import extract  # noqa: PLC0415 - only with tracing on
        from opentelemetry.trace import SpanKind  # noqa: PLC0415 - OpenTelemetry is optional: loaded only when tracing is on

        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in headers.items()
            if key in (b"traceparent", b"tracestate")
        }
        with tracer.start_as_current_span(
            name, context=extract(carrier), kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter (blocking: call it off the event loop)."""
        if self._provider is not None:
            self._provider.shutdown()


def annotate(**attributes: str | float | bool | None) -> None:
    """Set attributes on the current span, if one is recording (None values are left out)."""
    from opentelemetry import trace  # noqa: PLC0415 - callers check Tracing.enabled first

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def build(settings: TracingSettings, exporter: SpanExporter | None = None) -> Tracing:
    """The app's tracing: a no-op when off; else a provider exporting to ``exporter`` or OTLP/HTTP."""
    if not settings.enabled:
        return Tracing()
    try:
        import opentelemetry.sdk  # noqa: F401, PLC0415 - OpenTelemetry is optional: imported to check it is installed
    except ImportError:
        raise RuntimeError("tracing.enabled needs the tracing extra: pip install 'db-gateway[tracing]'") from None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415 - OpenTelemetry is optional: loaded only when tracing is on
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - OpenTelemetry is optional: loaded only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - OpenTelemetry is optional: loaded only when tracing is on
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415 - OpenTelemetry is optional: loaded only when tracing is on
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415 - OpenTelemetry is optional: loaded only when tracing is on

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is None:
        exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=settings.export_timeout)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # The app's own provider, not the process-global one: two apps in one process stay apart.
    return Tracing(provider.get_tracer("gateway"), provider)
