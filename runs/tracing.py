"""The spans a run makes (OpenTelemetry; config/telemetry.py installs an exporter or none).

- ``run {prompt}``: one per run (``runs.execution.run_call``), with the registry's attributes:
  ``promptregistry.prompt.key`` and ``.version``, ``promptregistry.environment``,
  ``promptregistry.release.revision``, ``promptregistry.variant``, ``promptregistry.bucket``
  and ``promptregistry.source`` (run, playground, shadow, eval).
- ``chat {model}``: one per model call, retries and fallbacks each their own (``runs.providers``),
  a client span following OpenTelemetry's GenAI semantic conventions: ``gen_ai.operation.name``
  (``chat``), ``gen_ai.provider.name`` (the registry's provider name), ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` and ``gen_ai.usage.output_tokens``,
  ``error.type`` (the attempt's outcome) with an error status when it failed; and the run's
  registry attributes.

A model call's request carries its ``chat`` span's trace context (``trace_headers``), so a model
server that traces joins the run's trace.

No inputs, outputs, messages or subjects are put on a span: they may hold personal data, and a
trace backend is not where a call's redacted record lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROMPT = "promptregistry.prompt.key"
VERSION = "promptregistry.prompt.version"
ENVIRONMENT = "promptregistry.environment"
REVISION = "promptregistry.release.revision"
VARIANT = "promptregistry.variant"
BUCKET = "promptregistry.bucket"
SOURCE = "promptregistry.source"

tracer = trace.get_tracer("promptregistry.runs")


def tracing_on() -> bool:
    """Whether a tracer provider is installed (``config.telemetry``, or a test's). Until one is,
    every span is a no-op that is still built, entered and ended: a run skips its spans then."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def prompt_attributes(
    *,
    prompt: str,
    version: int,
    environment: str,
    revision: int | None = None,
    variant: str = "",
    bucket: int | None = None,
    source: str = "run",
) -> dict[str, Any]:
    """The registry's attributes of a call, those that are known."""
    attributes: dict[str, Any] = {
        PROMPT: prompt,
        VERSION: version,
        ENVIRONMENT: environment,
        SOURCE: source,
    }
    optional: Mapping[str, Any] = {REVISION: revision, VARIANT: variant, BUCKET: bucket}
    attributes |= {name: value for name, value in optional.items() if value not in (None, "")}
    return attributes


_TRACE_CONTEXT = TraceContextTextMapPropagator()


def trace_headers(span: trace.Span | None) -> dict[str, str]:
    """The W3C trace context naming ``span`` (a model call's) as the parent, as headers for the
    provider's request (``traceparent``, ``tracestate``): a model server that traces, as vLLM
    can, puts its spans in the run's trace. Only the trace context, whatever the propagators
    ``OTEL_PROPAGATORS`` names: a caller's baggage is its own, never sent on to a provider. Empty
    without a span."""
    if span is None:
        return {}
    carrier: dict[str, str] = {}
    _TRACE_CONTEXT.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def model_call_start(*, provider: str, model: str, attributes: Mapping[str, Any]) -> trace.Span:
    """The span of one model call, started now (``model_call_end`` ends it)."""
    return tracer.start_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            **attributes,
        },
    )


def model_call_end(
    span: trace.Span,
    *,
    model: str,
    outcome: str,
    input_tokens: int,
    output_tokens: int,
    ok: bool,
) -> None:
    if span.is_recording():
        span.set_attribute("gen_ai.response.model", model)
        span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if not ok:
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome))
    span.end()
