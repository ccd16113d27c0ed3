"""Traces of a run (issue 16, item 4; runs.tracing): a span per run with the registry's
attributes and a GenAI client span per model call under it, in the request's trace even when the
model is called from a thread of its own; a shadow job is published in the context it was queued
in; the SDK puts a resolved prompt's identity on the caller's span. Spans are read from
OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from config.telemetry import telemetry_start
from runs import outbox as outbox_module
from runs.outbox import Outbox
from tests.api.helpers import sse_events
from tests.conftest import RELEASED_VARIABLES
from tests.factories import make_version
from tests.sdk.test_prompt import get, served

pytestmark = pytest.mark.django_db

URL = "/api/v1/prompts/support.refund-reply/run"
SUBJECT = "customer-4711"
_EXPORTER = InMemorySpanExporter()


class _WhileTesting(SimpleSpanProcessor):
    """Keeps spans only during a test that asked for them: the provider stays installed for the
    rest of the process (OpenTelemetry allows one), and later tests must not fill the exporter."""

    active = False

    def on_end(self, span) -> None:
        if self.active:
            super().on_end(span)


_PROCESSOR = _WhileTesting(_EXPORTER)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The spans finished during the test, kept in memory."""
    if not getattr(trace.get_tracer_provider(), "_registry_test", False):
        provider = TracerProvider()
        provider.add_span_processor(_PROCESSOR)
        provider._registry_test = True  # type: ignore[attr-defined]
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _PROCESSOR.active = True
    yield _EXPORTER
    _PROCESSOR.active = False
    _EXPORTER.clear()


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", "prompts:read", name="runner")


def run(client, **body: Any):
    body = {"environment": "staging", "subject": SUBJECT, "variables": {"customer_name": "Ann"}}
    return client.post(URL, data=json.dumps(body | {}), content_type="application/json")


def by_name(spans: InMemorySpanExporter) -> dict[str, list]:
    found: dict[str, list] = {}
    for span in spans.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_run_is_a_span_with_a_genai_span_per_model_call(spans, released, model_server, runner):
    response = run(runner)
    assert response.status_code == 200, response.content

    named = by_name(spans)
    [run_span] = named["run support.refund-reply"]
    [chat] = named["chat echo-1"]
    assert chat.parent.span_id == run_span.context.span_id
    assert chat.kind is SpanKind.CLIENT
    registry = {
        "promptregistry.prompt.key": "support.refund-reply",
        "promptregistry.prompt.version": 2,
        "promptregistry.environment": "staging",
        "promptregistry.variant": "stable",
        "promptregistry.source": "run",
    }
    assert registry.items() <= dict(run_span.attributes).items()
    assert run_span.attributes["promptregistry.release.revision"] >= 1
    attributes = dict(chat.attributes)
    assert registry.items() <= attributes.items()
    assert {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "local",
        "gen_ai.request.model": "echo-1",
        "gen_ai.response.model": "echo-1",
    }.items() <= attributes.items()
    answer = response.json()
    assert attributes["gen_ai.usage.input_tokens"] == answer["usage"]["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == answer["usage"]["output_tokens"]
    # Neither the subject nor the variables nor the output go on a span.
    for span in (run_span, chat):
        shown = json.dumps(dict(span.attributes))
        assert SUBJECT not in shown
        assert "Ann" not in shown


def test_each_attempt_is_a_span_and_a_failed_one_says_why(
    spans, released, model_server, runner, manager
):
    from releases.services import release_deploy

    version = make_version(
        released.prompt,
        variables=RELEASED_VARIABLES,
        model={
            "provider": "local",
            "model": "fault-500",
            "fallbacks": [{"provider": "local", "model": "echo-1"}],
        },
    )
    release_deploy(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=version.number,
        actor=manager,
    )

    assert run(runner).status_code == 200

    chats = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    failed = [s for s in chats if s.name == "chat fault-500"]
    assert failed  # with its retries, each a span
    for span in failed:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "server_error"
    [answered] = [s for s in chats if s.name == "chat echo-1"]
    assert answered.status.status_code is StatusCode.UNSET


def test_a_streamed_runs_spans_are_in_the_requests_trace(spans, released, model_server, runner):
    tracer = trace.get_tracer("tests")
    body = {"environment": "staging", "variables": {"customer_name": "Ann"}, "stream": True}

    with tracer.start_as_current_span("the caller's request") as request:
        response = runner.post(URL, data=json.dumps(body), content_type="application/json")
        events = sse_events(response)  # the model is called from another thread meanwhile

    assert events[-1][0] == "done"
    [run_span] = by_name(spans)["run support.refund-reply"]
    assert run_span.parent.span_id == request.get_span_context().span_id
    assert run_span.context.trace_id == request.get_span_context().trace_id


@pytest.mark.parametrize("stream", [False, True])
def test_the_model_call_carries_its_spans_trace_context(
    spans, released, model_server, runner, stream: bool
):
    """A model server that traces (vLLM can) puts its spans under the run's ``chat`` span. Only
    the trace context goes: the caller's baggage is not sent on to the provider."""
    body = {"environment": "staging", "variables": {"customer_name": "Ann"}, "stream": stream}
    token = otel_context.attach(baggage.set_baggage("customer", "Ann, private"))
    try:
        response = runner.post(URL, data=json.dumps(body), content_type="application/json")
    finally:
        otel_context.detach(token)
    if stream:
        assert sse_events(response)[-1][0] == "done"
    else:
        assert response.status_code == 200, response.content

    [chat] = by_name(spans)["chat echo-1"]
    [request] = model_server.requests
    version, trace_id, span_id, flags = request.headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) == chat.context.trace_id
    assert int(span_id, 16) == chat.context.span_id
    assert "baggage" not in request.headers


def test_without_tracing_a_model_call_sends_no_trace_context(
    released, model_server, runner, monkeypatch
):
    from runs import providers

    monkeypatch.setattr(providers, "tracing_on", lambda: False)  # another test may have set one
    body = {"environment": "staging", "variables": {"customer_name": "Ann"}}
    response = runner.post(URL, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content

    [request] = model_server.requests
    assert "traceparent" not in request.headers


def test_a_shadow_job_is_published_in_the_context_it_was_queued_in(spans, monkeypatch):
    from runs import tasks

    published: list[int] = []
    done = threading.Event()

    def apply_async(**_: Any) -> None:
        published.append(trace.get_current_span().get_span_context().span_id)
        done.set()

    monkeypatch.setattr(tasks.shadow_run_task, "apply_async", apply_async)
    monkeypatch.setattr(outbox_module, "close_old_connections", lambda: None)
    box = Outbox()

    with trace.get_tracer("tests").start_as_current_span("live call") as live:
        assert box.put({"call_id": 1, "version": 2, "kind": "candidate"})
    assert done.wait(timeout=10)

    assert published == [live.get_span_context().span_id]


def test_the_sdk_puts_the_prompts_identity_on_the_callers_span(spans, released, make_client):
    service = make_client("prompts:read", name="sdk")
    prompt = get(served(service, "staging"), "support.refund-reply", subject=SUBJECT)

    assert prompt.annotate_current_span() is False  # no span: nothing to annotate
    with trace.get_tracer("tests").start_as_current_span("feature") as span:
        assert prompt.annotate_current_span() is True

    attributes = dict(span.attributes)
    assert attributes == prompt.trace_attributes()
    assert attributes["promptregistry.prompt.version"] == 2
    assert SUBJECT not in json.dumps(attributes)


def test_without_an_endpoint_nothing_is_installed(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)

    assert telemetry_start("tests") is False


def test_with_an_endpoint_the_exporter_and_the_instrumentations_are_installed(tmp_path):
    # In a fresh Python: a process installs one tracer provider, and this suite's is the above.
    script = """
import django
django.setup()
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from config.telemetry import telemetry_start
assert telemetry_start("tests") is True
assert telemetry_start("tests") is True  # once
for instrumentor in (DjangoInstrumentor(), PsycopgInstrumentor(), CeleryInstrumentor()):
    assert instrumentor.is_instrumented_by_opentelemetry, instrumentor
provider = trace.get_tracer_provider()
print(provider.resource.attributes["service.name"])
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        # Nothing listens there: the exporter only tries at shutdown, and gives up.
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "tests"


def test_a_log_line_names_the_trace_it_was_written_in(spans):
    from config.telemetry import current_trace_id

    assert current_trace_id() is None  # outside a span
    with trace.get_tracer("tests").start_as_current_span("request") as span:
        inside = current_trace_id()

    assert inside == format(span.get_span_context().trace_id, "032x")
