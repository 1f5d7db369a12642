"""Tracing, metrics and logging setup."""

from fedmesh.telemetry.logs import JsonFormatter, setup_logging
from fedmesh.telemetry.tracing import (
    OTLP_ENDPOINT_ENV,
    TRACE_FILE_ENV,
    JsonLinesSpanExporter,
    context_from_carrier,
    current_carrier,
    setup_tracing,
    shutdown_tracing,
    tracer,
)

__all__ = [
    "OTLP_ENDPOINT_ENV",
    "TRACE_FILE_ENV",
    "JsonFormatter",
    "JsonLinesSpanExporter",
    "context_from_carrier",
    "current_carrier",
    "setup_logging",
    "setup_tracing",
    "shutdown_tracing",
    "tracer",
]
