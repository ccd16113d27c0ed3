"""promptregistry.Prompt: what a local ``get`` answers, its render, and its outcome reports.

Prompts are built as ``Client.get`` builds them, from the bundle the server really serves
(``GET /environments/{e}/bundle``), and compared with the server's own ``render``. Reports are
queued on a real ``Reporter`` with a recording send, then posted to the real events endpoint
(through Django's test client), so what the SDK reports is checked against what the registry
accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.test import Client as DjangoClient
from promptregistry import Prompt, Reporter, VariablesInvalid
from promptregistry.core import Bundle, bundle_from_json, resolve
from promptregistry.reporting import events_sender

from api.services import apikey_create
from runs.calls import subject_hash
from runs.models import Call
from tests.sdk.test_reporting import SETTLE, Recorder, django_transport

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"


def served(client: Any, environment: str) -> Bundle:
    """The environment's bundle as the server serves it, read as the SDK reads it."""
    response = client.get(f"/api/v1/environments/{environment}/bundle")
    assert response.status_code == 200, response.content[:500]
    return bundle_from_json(response.json(), etag=response["ETag"])


def get(
    bundle: Bundle,
    key: str = KEY,
    *,
    subject: str | None = None,
    locale: str | None = None,
    reporter: Reporter | None = None,
) -> Prompt:
    """What ``Client.get`` answers from ``bundle``."""
    return Prompt(
        resolve(bundle.releases[key], subject=subject, locale=locale),
        source="live",
        reporter=reporter,
        environment=bundle.environment,
        subject=subject,
    )


@pytest.fixture
def service(make_client):
    """A service using the SDK: reads prompts, reports outcomes."""
    return make_client("prompts:read", "events:write", name="sdk-service")


@pytest.fixture
def staging(service, released) -> Bundle:
    return served(service, "staging")


class Outcomes:
    """A reporter whose send records the batches, and the registry to post them to."""

    def __init__(self, registry: Callable[[list[dict[str, Any]]], int]) -> None:
        self.send = Recorder()
        self.reporter = Reporter(self.send, interval=60.0)
        self.registry = registry

    def queued(self) -> list[dict[str, Any]]:
        assert self.reporter.flush(SETTLE)
        return self.send.events

    def post(self) -> int:
        """Posts what was queued to the real endpoint; returns how many it refused."""
        return self.registry(self.queued())

    @classmethod
    @contextlib.contextmanager
    def recording(cls) -> Iterator[Outcomes]:
        key = apikey_create(name="sdk-reporting", scopes=["events:write"])[1]
        http = httpx.Client(transport=django_transport(DjangoClient()))
        recorded = cls(events_sender(http, "http://testserver", key))
        try:
            yield recorded
        finally:
            recorded.reporter.close(SETTLE)


@pytest.fixture
def outcomes(released) -> Iterator[Outcomes]:
    with Outcomes.recording() as recorded:
        yield recorded


# --- What was resolved -----------------------------------------------------------------------------


def test_it_says_what_was_resolved_and_why(staging, released):
    prompt = get(staging, subject="user-1", locale="fr-CA")

    assert (prompt.key, prompt.version, prompt.variant, prompt.reason) == (
        KEY,
        2,
        "stable",
        "stable",
    )
    assert (prompt.sticky, prompt.locale, prompt.requested_locale) == (True, "fr", "fr-CA")
    assert prompt.revision == released.release("staging").revision
    assert (prompt.shadow, prompt.bucket, prompt.salt) == ((), None, "")
    assert (prompt.source, prompt.environment, prompt.subject) == ("live", "staging", "user-1")
    assert prompt.model == {
        "provider": "local",
        "model": "echo-1",
        "parameters": {"temperature": 0.2},
        "response_schema": None,
        "fallbacks": [],
    }
    assert [(v["name"], v["type"], v["required"]) for v in prompt.variables] == [
        ("customer_name", "string", True),
        ("order_total", "number", False),
    ]
    assert prompt.sections["instruction"] == "Saluez {{ customer_name }}."
    assert repr(prompt) == f"<Prompt {KEY} v2 variant=stable locale=fr source=live>"


def test_it_answers_what_the_servers_resolve_answers(service, staging):
    answer = service.get(
        f"/api/v1/prompts/{KEY}/resolve", {"environment": "staging", "subject": "user-9"}
    ).json()

    prompt = get(staging, subject="user-9")

    assert (prompt.version, prompt.variant, prompt.locale, prompt.revision) == (
        answer["version"],
        answer["variant"],
        answer["locale"],
        answer["revision"],
    )
    assert (prompt.model, prompt.variables, prompt.sections) == (
        answer["model"],
        answer["variables"],
        answer["sections"],
    )


def test_without_a_subject_it_is_not_sticky(staging):
    prompt = get(staging)

    assert (prompt.sticky, prompt.subject) == (False, None)


def test_what_it_hands_out_are_copies_the_bundle_does_not_share(staging):
    first = get(staging, subject="user-1")

    first.model["parameters"]["temperature"] = 2.0
    first.variables[0]["name"] = "changed"
    first.sections["system"] = "changed"

    second = get(staging, subject="user-1")
    assert second.model["parameters"] == {"temperature": 0.2}
    assert second.variables[0]["name"] == "customer_name"
    assert second.sections["system"] == "You are a support agent (v2)"
    assert first.model["parameters"]["temperature"] == 2.0  # the caller's copy is its own


# --- Rendering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "variables"),
    [
        (None, {"customer_name": "Ana", "order_total": 12.5}),
        (None, {"customer_name": "Zoé"}),
        ("fr-CA", {"customer_name": "Zoé"}),
    ],
)
def test_it_renders_what_the_servers_render_answers(service, staging, locale, variables):
    body = {"environment": "staging", "subject": "user-1", "variables": variables}
    if locale:
        body["locale"] = locale
    answer = service.post(
        f"/api/v1/prompts/{KEY}/render", json.dumps(body), content_type="application/json"
    ).json()

    prompt = get(staging, subject="user-1", locale=locale)

    assert prompt.render_sections(**variables) == answer["rendered"]
    assert prompt.render(**variables) == answer["messages"]


def test_bad_variables_list_every_problem_as_the_server_does(service, staging):
    variables = {"customer_nam": "Ana", "order_total": "ten"}
    answer = service.post(
        f"/api/v1/prompts/{KEY}/render",
        json.dumps({"environment": "staging", "variables": variables}),
        content_type="application/json",
    ).json()

    with pytest.raises(VariablesInvalid) as caught:
        get(staging).render(**variables)

    def problems(errors: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
        return sorted((e["code"], e["pointer"]) for e in errors)

    assert problems(caught.value.errors) == problems(answer["errors"])
    assert len(caught.value.errors) == 3  # unknown, missing and wrong type, all listed


def test_a_variable_may_be_named_like_a_parameter(staging):
    # ``self`` is positional-only, so no declared variable name can collide with it.
    prompt = get(staging)

    with pytest.raises(VariablesInvalid) as caught:
        prompt.render(customer_name="Ana", self="x")

    assert [e["code"] for e in caught.value.errors] == ["unknown_variable"]


# --- Reporting -------------------------------------------------------------------------------------


def test_a_report_queues_an_event_the_registry_stores(staging, released, outcomes):
    prompt = get(staging, subject="user-42", locale="fr-CA", reporter=outcomes.reporter)
    before = datetime.now(UTC)

    queued = prompt.report(
        latency_ms=812.4,
        input_tokens=412,
        output_tokens=96,
        feedback=1,
        output="Bonjour Zoé",
        inputs={"customer_name": "Zoé"},
        time_to_first_token_ms=143.2,
        cost=0.00012,
        request_id="order-A-17",
    )

    assert queued is True
    [queued_event] = outcomes.queued()
    sent = dict(queued_event)
    assert uuid.UUID(sent.pop("event_id")).version == 4
    occurred = datetime.fromisoformat(sent.pop("occurred_at"))
    assert before - timedelta(seconds=1) <= occurred <= datetime.now(UTC)
    assert sent == {
        "prompt": KEY,
        "version": 2,
        "environment": "staging",
        "variant": "stable",
        "sticky": True,
        "subject": "user-42",
        "locale": "fr",
        "release_revision": released.release("staging").revision,
        "status": "ok",
        "latency_ms": 812.4,
        "time_to_first_token_ms": 143.2,
        "input_tokens": 412,
        "output_tokens": 96,
        "cost": 0.00012,
        "feedback": 1,
        "provider": "local",  # the binding's, so the registry can price the tokens
        "model": "echo-1",
        "request_id": "order-A-17",
        "inputs": {"customer_name": "Zoé"},
        "output": "Bonjour Zoé",
    }
    assert outcomes.post() == 0
    call = Call.objects.get()
    assert (call.version, call.environment.name, call.variant, call.sticky) == (
        released.versions[2],
        "staging",
        "stable",
        True,
    )
    assert (call.subject_hash, call.locale, call.release_revision) == (
        subject_hash("user-42"),
        "fr",
        released.release("staging").revision,
    )
    assert (call.latency_ms, call.input_tokens, call.output_tokens, call.feedback) == (
        812.4,
        412,
        96,
        1.0,
    )
    assert (call.request_id, call.status, call.source) == ("order-A-17", "ok", "reported")


def test_a_report_without_a_subject_sends_none_and_is_not_sticky(staging, outcomes):
    get(staging, reporter=outcomes.reporter).report(latency_ms=5)

    [sent] = outcomes.queued()
    assert "subject" not in sent
    assert sent["sticky"] is False
    assert outcomes.post() == 0
    assert (Call.objects.get().sticky, Call.objects.get().subject_hash) == (False, "")


def test_every_report_gets_its_own_event_id(staging, outcomes):
    prompt = get(staging, subject="user-1", reporter=outcomes.reporter)

    for _ in range(3):
        prompt.report(latency_ms=1)

    assert len({e["event_id"] for e in outcomes.queued()}) == 3
    assert outcomes.post() == 0
    assert Call.objects.count() == 3


def test_provider_and_model_can_be_left_out_or_overridden(staging, outcomes):
    prompt = get(staging, reporter=outcomes.reporter)

    prompt.report(provider=None, model=None)
    prompt.report(provider="openai", model="gpt-4o-mini")

    first, second = outcomes.queued()
    assert ("provider" in first, "model" in first) == (False, False)
    assert (second["provider"], second["model"]) == ("openai", "gpt-4o-mini")


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def test_a_report_with_garbage_never_raises_and_the_registry_rejects_it(staging, outcomes):
    prompt = get(staging, subject="user-1", reporter=outcomes.reporter)

    queued = prompt.report(
        latency_ms=float("nan"),
        input_tokens="many",  # type: ignore[arg-type]
        output_tokens=-3,
        feedback=5,
        cost=float("inf"),
        status="meh",
        error_class=object(),  # type: ignore[arg-type]
        inputs={(1, 2): object(), "n": float("-inf")},
        output=b"bytes",  # type: ignore[arg-type]
    )

    assert queued is True
    [sent] = outcomes.queued()
    json.dumps(sent, allow_nan=False)  # JSON the whole batch can carry
    assert outcomes.post() == 1  # refused by the registry, counted
    assert not Call.objects.exists()


def test_a_report_that_cannot_even_be_shaped_returns_false(staging, outcomes):
    prompt = get(staging, reporter=outcomes.reporter)

    assert prompt.report(output=Unprintable()) is False  # type: ignore[arg-type]
    assert prompt.report(inputs={"x": Unprintable()}) is False
    assert outcomes.queued() == []


def test_odd_but_sensible_inputs_are_sent_as_json_and_stored(staging, outcomes):
    prompt = get(staging, reporter=outcomes.reporter)
    when = datetime(2025, 5, 1, 12, tzinfo=UTC)

    prompt.report(
        latency_ms=Decimal("12.5"),  # type: ignore[arg-type]
        inputs={"total": Decimal("42.50"), "when": when, "items": ("a", "b"), 7: {"deep": [1]}},
    )

    [sent] = outcomes.queued()
    assert sent["latency_ms"] == 12.5
    assert sent["inputs"] == {
        "total": 42.5,
        "when": str(when),
        "items": ["a", "b"],
        "7": {"deep": [1]},
    }
    assert outcomes.post() == 0
    assert Call.objects.get().inputs["items"] == ["a", "b"]


def test_without_a_reporter_a_report_is_a_no_op(staging):
    assert get(staging).report(latency_ms=1) is False


def test_a_report_on_a_full_queue_returns_false_without_waiting(staging):
    send = Recorder()
    send.gate.clear()
    reporter = Reporter(send, capacity=1, batch_size=1, interval=60.0)
    prompt = get(staging, reporter=reporter)
    try:
        assert prompt.report(latency_ms=1) is True  # taken by the worker, held in send
        assert send.entered.wait(SETTLE)
        assert prompt.report(latency_ms=2) is True  # queued
        assert prompt.report(latency_ms=3) is False  # the queue is full
        assert reporter.dropped == 1
    finally:
        send.gate.set()
        reporter.close(SETTLE)
    assert reporter.sent == 2


def test_a_prompt_with_no_version_number_reports_nothing(staging, outcomes):
    # A caller's fallback prompt without a version: the registry could not file its outcome.
    resolution = resolve(staging.releases[KEY], subject=None, locale=None)
    prompt = Prompt(
        dataclasses.replace(resolution, number=0), source="fallback", reporter=outcomes.reporter
    )

    assert prompt.report(latency_ms=1) is False
    assert outcomes.queued() == []
