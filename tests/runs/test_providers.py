"""runs.providers.complete(): retries, fallbacks, schema repair and streaming against the fake.

Every call goes to runs.fake_provider on loopback (no proxy from the environment), so nothing
leaves the machine. Sleeping is faked (``providers._sleep`` records the waits) so retry tests run
instantly and can assert the backoff and Retry-After values themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from registry.content import ModelBinding, ModelTarget
from runs import providers, retries
from runs.fake_provider import FakeProvider
from runs.models import Provider
from runs.providers import Outcome, ProviderUnavailable, complete

pytestmark = pytest.mark.django_db

PROMPT = "Summarise the release notes for version two"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]
CHAT = "/v1/chat/completions"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer", "minimum": 1}},
    "required": ["title", "score"],
    "additionalProperties": False,
}


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses complete() asked for, instead of taking them."""
    recorded: list[float] = []
    monkeypatch.setattr(providers, "_sleep", recorded.append)
    return recorded


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_seconds=5) as server:
        yield server


def add_provider(name: str, fake: FakeProvider, **fields: Any) -> Provider:
    fields = {"timeout_seconds": 5.0, "max_retries": 2, **fields}
    return Provider.objects.create(name=name, base_url=fake.base_url, **fields)


@pytest.fixture
def local(fake: FakeProvider) -> Provider:
    return add_provider("local", fake)


def binding(model: str, *fallbacks: str, provider: str = "local", **extra: Any) -> ModelBinding:
    """``binding("fault-500", "local/echo-small")``: fallbacks as ``provider/model``."""
    targets = tuple(ModelTarget(*spec.split("/", 1)) for spec in fallbacks)
    return ModelBinding(provider=provider, model=model, fallbacks=targets, **extra)


def outcomes(attempts: Any) -> list[tuple[str, str]]:
    return [(attempt.model, attempt.outcome) for attempt in attempts]


def test_a_call_answers_with_usage_and_latency(fake: FakeProvider, local: Provider) -> None:
    result = complete(binding=binding("echo-1"), messages=MESSAGES)

    assert result.text == f"echo-1: {PROMPT}"
    assert (result.provider, result.model, result.parsed) == ("local", "echo-1", None)
    assert result.input_tokens == math.ceil(len("You are terse.") / 4) + math.ceil(len(PROMPT) / 4)
    assert result.output_tokens == math.ceil(len(result.text) / 4)
    assert result.latency_ms > 0
    assert result.time_to_first_token_ms is None
    assert outcomes(result.attempts) == [("echo-1", Outcome.OK)]
    assert result.attempts[0].latency_ms > 0


def test_the_binding_parameters_are_passed_through(fake: FakeProvider, local: Provider) -> None:
    parameters = {"temperature": 0.2, "max_tokens": 50, "seed": 7, "stop": ["\n\n"]}

    complete(binding=binding("echo-1", parameters=parameters), messages=MESSAGES)

    body = fake.requests.for_path(CHAT)[0].body
    assert {name: body[name] for name in parameters} == parameters
    assert "response_format" not in body


def test_a_rate_limit_is_retried_after_the_servers_retry_after(
    fake: FakeProvider, local: Provider, waits: list[float]
) -> None:
    fake.faults.push("echo-1", "429", count=2)

    result = complete(binding=binding("echo-1"), messages=MESSAGES)

    assert result.text == f"echo-1: {PROMPT}"
    assert [a.outcome for a in result.attempts] == [
        Outcome.RATE_LIMITED,
        Outcome.RATE_LIMITED,
        Outcome.OK,
    ]
    assert "HTTP 429" in result.attempts[0].detail
    assert waits == [1.0, 1.0]  # the fake's Retry-After: 1
    assert len(fake.requests.for_path(CHAT)) == 3


def test_retry_after_ms_wins_over_retry_after(local: Provider, waits: list[float]) -> None:
    with FakeProvider(retry_after_ms=50) as fast:
        Provider.objects.filter(pk=local.pk).update(base_url=fast.base_url)
        fast.faults.push("echo-1", "429", count=1)

        complete(binding=binding("echo-1"), messages=MESSAGES)

    assert waits == [0.05]


def test_server_errors_exhaust_the_retries_then_the_fallback_answers(
    fake: FakeProvider, local: Provider, waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The top of each jitter range: the waits show the exponential backoff itself.
    monkeypatch.setattr(retries.random, "uniform", lambda low, high: high)

    result = complete(binding=binding("fault-500", "local/echo-small"), messages=MESSAGES)

    assert result.model == "echo-small"
    assert outcomes(result.attempts) == [
        ("fault-500", Outcome.SERVER_ERROR),
        ("fault-500", Outcome.SERVER_ERROR),
        ("fault-500", Outcome.SERVER_ERROR),
        ("echo-small", Outcome.OK),
    ]
    assert waits == [0.25, 0.5]
    assert fake.requests.models() == ["fault-500"] * 3 + ["echo-small"]


def test_the_backoff_is_jittered_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retries.random, "uniform", lambda low, high: (low, high))

    assert retries.backoff_seconds(0, None) == (0, 0.25)
    assert retries.backoff_seconds(3, None) == (0, 2.0)
    assert retries.backoff_seconds(9, None) == (0, 8.0)
    assert retries.backoff_seconds(0, 600.0) == 20.0  # a Retry-After is honoured up to a cap


def test_a_hanging_provider_times_out_then_the_fallback_answers(
    fake: FakeProvider, waits: list[float]
) -> None:
    add_provider("slow", fake, timeout_seconds=0.3, max_retries=1)
    add_provider("local", fake)

    result = complete(
        binding=binding("fault-hang", "local/echo-1", provider="slow"), messages=MESSAGES
    )

    assert result.model == "echo-1"
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("slow", Outcome.TIMEOUT),
        ("slow", Outcome.TIMEOUT),
        ("local", Outcome.OK),
    ]
    assert all(attempt.latency_ms >= 250 for attempt in result.attempts[:2])
    assert len(waits) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_malformed_body_moves_to_the_next_target_without_a_retry(
    fake: FakeProvider, local: Provider, waits: list[float], stream: bool
) -> None:
    tokens: list[str] = []

    result = complete(
        binding=binding("fault-malformed", "local/echo-1"),
        messages=MESSAGES,
        on_token=tokens.append if stream else None,
    )

    assert result.text == f"echo-1: {PROMPT}"
    assert outcomes(result.attempts) == [
        ("fault-malformed", Outcome.MALFORMED),
        ("echo-1", Outcome.OK),
    ]
    assert fake.requests.models() == ["fault-malformed", "echo-1"]
    assert waits == []


def test_an_invalid_json_answer_gets_one_repair_attempt(
    fake: FakeProvider, local: Provider
) -> None:
    fake.faults.push("echo-1", "badjson", count=1)

    result = complete(binding=binding("echo-1", response_schema=SCHEMA), messages=MESSAGES)

    assert outcomes(result.attempts) == [("echo-1", Outcome.SCHEMA_INVALID), ("echo-1", Outcome.OK)]
    assert "not valid JSON" in result.attempts[0].detail
    assert isinstance(result.parsed, dict)
    assert set(result.parsed) == {"title", "score"}
    first, repair = (request.body for request in fake.requests.for_path(CHAT))
    assert first["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA, "strict": True},
    }
    assert repair["response_format"] == first["response_format"]
    assert repair["messages"][:2] == MESSAGES
    assert repair["messages"][2]["role"] == "assistant"
    assert repair["messages"][2]["content"].startswith("Sure! Here is the JSON")
    assert repair["messages"][3]["role"] == "user"
    assert repair["messages"][3]["content"].startswith(
        "Your answer did not match the JSON Schema: it is not valid JSON"
    )
    assert repair["messages"][3]["content"].endswith("Answer again with JSON only.")
    # Both calls cost tokens at this target's price.
    assert result.input_tokens > math.ceil(len(PROMPT) / 4) * 2


def test_a_schema_violation_names_the_error() -> None:
    # The fake always answers a schema-valid document, so the message is checked here.
    value, error = providers._validate('{"title": "x", "score": 0}', SCHEMA)

    assert value is None
    assert error == "0 is less than the minimum of 1"
    assert providers._validate('{"title": "x", "score": 2}', SCHEMA) == (
        {"title": "x", "score": 2},
        None,
    )


def test_an_answer_still_invalid_after_repair_falls_back(
    fake: FakeProvider, local: Provider
) -> None:
    result = complete(
        binding=binding("fault-badjson", "local/echo-1", response_schema=SCHEMA),
        messages=MESSAGES,
    )

    assert result.model == "echo-1"
    assert outcomes(result.attempts) == [
        ("fault-badjson", Outcome.SCHEMA_INVALID),
        ("fault-badjson", Outcome.SCHEMA_INVALID),
        ("echo-1", Outcome.OK),
    ]
    assert fake.requests.models() == ["fault-badjson", "fault-badjson", "echo-1"]


def test_unknown_and_disabled_providers_are_skipped(fake: FakeProvider, local: Provider) -> None:
    add_provider("off", fake, enabled=False)

    result = complete(
        binding=binding("echo-1", "off/echo-1", "local/echo-small", provider="nowhere"),
        messages=MESSAGES,
    )

    assert result.model == "echo-small"
    assert [(a.provider, a.outcome) for a in result.attempts] == [
        ("nowhere", Outcome.UNKNOWN_PROVIDER),
        ("off", Outcome.DISABLED),
        ("local", Outcome.OK),
    ]
    assert fake.requests.models() == ["echo-small"]


def test_when_everything_fails_the_error_lists_every_attempt(
    fake: FakeProvider, waits: list[float]
) -> None:
    add_provider("local", fake, max_retries=1)

    with pytest.raises(ProviderUnavailable) as raised:
        complete(
            binding=binding("fault-500", "local/fault-malformed", "nowhere/echo-1"),
            messages=MESSAGES,
        )

    assert outcomes(raised.value.attempts) == [
        ("fault-500", Outcome.SERVER_ERROR),
        ("fault-500", Outcome.SERVER_ERROR),
        ("fault-malformed", Outcome.MALFORMED),
        ("echo-1", Outcome.UNKNOWN_PROVIDER),
    ]
    message = str(raised.value)
    assert message.startswith("No model answered after 4 attempts:")
    for part in ("local/fault-500: server_error", "local/fault-malformed: malformed"):
        assert part in message
    assert "nowhere/echo-1: unknown_provider" in message


def test_streaming_passes_each_token_on_in_order(fake: FakeProvider, local: Provider) -> None:
    plain = complete(binding=binding("echo-1"), messages=MESSAGES)
    tokens: list[str] = []

    streamed = complete(binding=binding("echo-1"), messages=MESSAGES, on_token=tokens.append)

    assert len(tokens) > 1
    assert "".join(tokens) == streamed.text == plain.text
    assert (streamed.input_tokens, streamed.output_tokens) == (
        plain.input_tokens,
        plain.output_tokens,
    )
    assert streamed.time_to_first_token_ms is not None
    assert 0 < streamed.time_to_first_token_ms <= streamed.latency_ms
    body = fake.requests.for_path(CHAT)[-1].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_streamed_answer_is_validated_against_the_schema(
    fake: FakeProvider, local: Provider
) -> None:
    tokens: list[str] = []

    result = complete(
        binding=binding("echo-1", response_schema=SCHEMA), messages=MESSAGES, on_token=tokens.append
    )

    assert result.parsed == {"title": PROMPT, "score": 1}
    assert "".join(tokens) == result.text


def test_the_api_key_comes_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_PROVIDER_API_KEY", "sk-test-1234567890")
    with FakeProvider(api_key="sk-test-1234567890") as keyed:
        add_provider("keyed", keyed, api_key_env="FAKE_PROVIDER_API_KEY")

        result = complete(binding=binding("echo-1", provider="keyed"), messages=MESSAGES)

    assert result.attempts[-1].outcome is Outcome.OK
    assert keyed.requests[0].headers["authorization"] == "Bearer sk-test-1234567890"


def test_the_api_key_never_shows_in_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_PROVIDER_API_KEY", "sk-wrong-0987654321")
    with FakeProvider(api_key="sk-right") as keyed:
        add_provider("keyed", keyed, api_key_env="FAKE_PROVIDER_API_KEY")

        with pytest.raises(ProviderUnavailable) as raised:
            complete(binding=binding("echo-1", provider="keyed"), messages=MESSAGES)

    (attempt,) = raised.value.attempts
    assert attempt.outcome is Outcome.BAD_REQUEST  # a 401 is not retried
    assert attempt.detail == "HTTP 401: Incorrect API key provided."
    assert "sk-wrong" not in str(raised.value)
    # A provider that echoes the key in its message ("Incorrect API key provided: sk-...").
    assert providers._redact("key sk-wrong-0987654321 bad", "sk-wrong-0987654321") == (
        "key [redacted] bad"
    )


def test_a_provider_without_a_key_variable_gets_a_placeholder(
    fake: FakeProvider, local: Provider
) -> None:
    complete(binding=binding("echo-1"), messages=MESSAGES)

    assert fake.requests[0].headers["authorization"] == "Bearer not-needed"


def test_a_connection_failure_is_retried_then_reported(waits: list[float]) -> None:
    with FakeProvider() as gone:
        add_provider("gone", gone, max_retries=1)
    # The fake has stopped: its port refuses connections.

    with pytest.raises(ProviderUnavailable) as raised:
        complete(binding=binding("echo-1", provider="gone"), messages=MESSAGES)

    assert [a.outcome for a in raised.value.attempts] == [Outcome.CONNECTION_ERROR] * 2
    assert len(waits) == 1
