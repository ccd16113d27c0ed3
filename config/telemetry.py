"""Traces with OpenTelemetry: on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, nothing otherwise.

``telemetry_start(service)`` is called once per process where it starts serving (config/wsgi.py,
config/asgi.py, the Celery worker's processes in config/celery.py). With an endpoint it installs
a tracer provider exporting over OTLP/HTTP in batches (the exporter reads the standard
``OTEL_*`` variables: endpoint, headers, timeout, ``OTEL_SERVICE_NAME``…) and the standard
instrumentations: Django's requests, psycopg's queries, Redis, Celery (a task's span is a child
of the request that queued it) and httpx. Without one it installs nothing: the spans the
service starts itself (``runs.execution``'s run, ``runs.providers``'s model calls) go to
OpenTelemetry's no-op tracer, which costs a few microseconds.

What the service adds is in ``runs.tracing``: a span per run and a GenAI client span per model
call. docs/operations.md, "Traces".
"""

from __future__ import annotations

import logging
import os
import threading

from config import logs

logger = logging.getLogger(__name__)

_started = False
_lock = threading.Lock()


def telemetry_enabled() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip())


def telemetry_start(service: str) -> bool:
    """Install the exporter and the instrumentations, once per process; whether tracing is on."""
    global _started
    if not telemetry_enabled():
        return False
    with _lock:
        if _started:
            return True
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        instrument()
        logs.trace_id_source = current_trace_id  # the JSON logs' trace_id field
        _started = True
        logger.info("Tracing on: spans exported over OTLP to %s", _endpoint())
        return True


def _endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits (what a trace backend searches by), or None
    outside a sampled span."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def instrument() -> None:
    """The standard instrumentations (each once; a second call does nothing)."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (
        DjangoInstrumentor(),
        PsycopgInstrumentor(),
        RedisInstrumentor(),
        CeleryInstrumentor(),
        HTTPXClientInstrumentor(),
    ):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
