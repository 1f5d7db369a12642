"""OpenTelemetry tracing: provider setup, exporters, and trace-context carriers."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

OTLP_ENDPOINT_ENV = "FEDMESH_OTLP_ENDPOINT"
TRACE_FILE_ENV = "FEDMESH_TRACE_FILE"

_configured = False
_lock = threading.Lock()


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span to a file (local runs and tests)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans; each line has name, service, trace and span ids, parent."""
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "service": span.resource.attributes.get("service.name"),
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "attributes": {k: str(v) for k, v in (span.attributes or {}).items()},
                    }
                )
            )
        with self._lock, self._path.open("a") as out:
            out.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""


def setup_tracing(service_name: str) -> TracerProvider:
    """Install the global tracer provider once, exporting as the environment says.

    ``FEDMESH_OTLP_ENDPOINT`` sends spans over OTLP/gRPC; ``FEDMESH_TRACE_FILE``
    appends them as JSON lines. With neither, spans are still created (and carry
    context across calls) but not exported.
    """
    global _configured
    with _lock:
        provider = trace.get_tracer_provider()
        if _configured and isinstance(provider, TracerProvider):
            return provider
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        endpoint = os.environ.get(OTLP_ENDPOINT_ENV)
        if endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True))
            )
        trace_file = os.environ.get(TRACE_FILE_ENV)
        if trace_file:
            provider.add_span_processor(
                SimpleSpanProcessor(JsonLinesSpanExporter(Path(trace_file)))
            )
        trace.set_tracer_provider(provider)
        _configured = True
        _instrument_redis()
        return provider


def _instrument_redis() -> None:
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def shutdown_tracing() -> None:
    """Flush and stop exporting."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def current_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (to put into a message)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> otel_context.Context:
    """The trace context carried in a message."""
    return propagate.extract(dict(carrier))


def tracer(name: str) -> trace.Tracer:
    """A tracer for a module."""
    return trace.get_tracer(name)
