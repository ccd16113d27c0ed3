"""Every attempt ends in an outcome (issue 12, finding 1): answers broken on the wire, errors no
rule names, a schema that cannot be applied, and a call cancelled from another thread.

``complete()`` against the fake provider on loopback, with its faults (runs.fake_faults) breaking
real answers at the byte level. The walk must always end: an attempt that raised anything becomes
an outcome, and the next fallback is tried.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx2
import openai
import pytest

from registry.content import ModelBinding, ModelTarget
from runs import providers
from runs.cancel import Cancellation
from runs.fake_faults import StreamEnd
from runs.fake_provider import FakeProvider
from runs.models import Provider
from runs.providers import Outcome, ProviderUnavailable, complete

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "Summarise the release notes for version two, please"}]
# Each fault streamed, and the outcome its attempt ends with.
STREAMED = [
    ("drop", Outcome.CONNECTION_ERROR),
    ("error-event", Outcome.STREAM_ERROR),
    ("stall", Outcome.TIMEOUT),
    ("garbage", Outcome.MALFORMED),
    ("reset", Outcome.CONNECTION_ERROR),
]


@pytest.fixture
def fake(model_server: FakeProvider) -> FakeProvider:
    """The fake as ``local`` (tests/conftest.py), with one try per target and a short read
    timeout: a stall costs half a second."""
    Provider.objects.filter(name="local").update(timeout_seconds=0.5, max_retries=0)
    return model_server


def binding(model: str, *fallbacks: str, **extra: Any) -> ModelBinding:
    targets = tuple(ModelTarget("local", name) for name in fallbacks)
    return ModelBinding(provider="local", model=model, fallbacks=targets, **extra)


@pytest.mark.parametrize(("fault", "outcome"), STREAMED)
def test_a_stream_broken_half_way_is_an_outcome_and_the_fallback_answers(
    fake: FakeProvider, fault: str, outcome: Outcome
) -> None:
    tokens: list[str] = []

    result = complete(
        binding=binding(f"fault-{fault}", "echo-1"), messages=MESSAGES, on_token=tokens.append
    )

    broken, answered = result.attempts
    assert (broken.outcome, answered.outcome) == (outcome, Outcome.OK)
    assert broken.detail
    assert "Traceback" not in broken.detail
    # Half an answer streamed before it broke, and was billed: its tokens are estimated.
    assert broken.output_tokens > 0
    assert broken.input_tokens > 0
    assert result.output_tokens == broken.output_tokens + answered.output_tokens
    assert "".join(tokens).endswith(result.text)  # the abandoned start came first
    # Both models were asked to stream. A stalled stream is logged when the fake notices the
    # client left, which may be after the fallback's, so the log's order means nothing here.
    assert sorted(record.model for record in fake.wait_for_streams(2)) == sorted(
        [f"fault-{fault}", "echo-1"]
    )


def test_an_error_event_mid_stream_carries_the_providers_message(fake: FakeProvider) -> None:
    with pytest.raises(ProviderUnavailable) as raised:
        complete(binding=binding("fault-error-event"), messages=MESSAGES, on_token=lambda t: None)

    (attempt,) = raised.value.attempts
    assert attempt.outcome is Outcome.STREAM_ERROR
    assert attempt.detail == (
        "Error event mid-stream: The server had an error while processing your request. "
        "Sorry about that!"
    )


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ("drop", Outcome.CONNECTION_ERROR),
        ("error-event", Outcome.MALFORMED),
        ("stall", Outcome.TIMEOUT),
        ("garbage", Outcome.MALFORMED),
        ("reset", Outcome.CONNECTION_ERROR),
    ],
)
def test_the_same_faults_without_streaming_are_outcomes_too(
    fake: FakeProvider, fault: str, outcome: Outcome
) -> None:
    result = complete(binding=binding(f"fault-{fault}", "echo-1"), messages=MESSAGES)

    assert [a.outcome for a in result.attempts] == [outcome, Outcome.OK]


def test_an_answer_larger_than_the_bound_is_malformed_and_never_read_whole(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain answer is read up to ``MAX_ANSWER_BYTES``: refused at its Content-Length when it
    says, and past the bound while reading when it does not (a body that ends at the close)."""
    monkeypatch.setattr(providers, "MAX_ANSWER_BYTES", 200)
    with _EndlessAnswer() as endless:
        Provider.objects.create(name="endless", base_url=endless.base_url, timeout_seconds=5)
        both = ModelBinding(
            provider="local", model="echo-1", fallbacks=(ModelTarget("endless", "any"),)
        )
        with pytest.raises(ProviderUnavailable) as raised:
            complete(binding=both, messages=MESSAGES)

    announced, unannounced = raised.value.attempts
    assert (announced.outcome, unannounced.outcome) == (Outcome.MALFORMED, Outcome.MALFORMED)
    assert announced.detail == unannounced.detail == "The answer is larger than 200 bytes."
    assert endless.sent < 4_000_000  # the client hung up: the server could not write it all


class _EndlessAnswer:
    """A server whose 200 has no Content-Length and a body that goes on (up to 4 MB, written
    until the client hangs up)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.sent = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _EndlessAnswer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(5)

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(5)
            connection.recv(65536)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
            try:
                while self.sent < 4_000_000:
                    connection.sendall(b'{"choices": [' * 64)
                    self.sent += 13 * 64
            except OSError:
                return


def test_a_dangling_reference_is_a_schema_failure_never_an_exception(fake: FakeProvider) -> None:
    """The schema's validator (registry.json_schemas) reports a reference it cannot follow as a
    validation error: the answer is refused, repaired once, and both answers are billed."""
    dangling = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}

    with pytest.raises(ProviderUnavailable) as raised:
        complete(binding=binding("echo-1", response_schema=dangling), messages=MESSAGES)

    attempts = raised.value.attempts
    assert [a.outcome for a in attempts] == [Outcome.SCHEMA_INVALID, Outcome.SCHEMA_INVALID]
    assert all((a.input_tokens, a.output_tokens) != (0, 0) for a in attempts)


def test_a_schema_that_cannot_be_applied_ends_the_attempt_and_bills_the_answer(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever raises while validating an answer ends the attempt as an outcome."""

    def unresolvable(text: str, schema: Any) -> Any:
        raise LookupError("PointerToNowhere: '/$defs/missing' does not exist")

    monkeypatch.setattr(providers, "_validate", unresolvable)
    schema = {"type": "object"}

    with pytest.raises(ProviderUnavailable) as raised:
        complete(binding=binding("echo-1", response_schema=schema), messages=MESSAGES)

    (attempt,) = raised.value.attempts
    assert attempt.outcome is Outcome.UNEXPECTED
    assert attempt.detail == "The response schema could not be applied (LookupError)."
    assert (attempt.input_tokens, attempt.output_tokens) != (0, 0)


def test_an_exception_no_rule_names_is_an_outcome_and_the_walk_goes_on(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = providers._call

    def first_call_breaks(**kwargs: Any) -> Any:
        if kwargs["target"].model == "echo-small":
            raise KeyError("a bug in reading a strange answer")
        return real(**kwargs)

    monkeypatch.setattr(providers, "_call", first_call_breaks)

    result = complete(binding=binding("echo-small", "echo-1"), messages=MESSAGES)

    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("echo-small", Outcome.UNEXPECTED),
        ("echo-1", Outcome.OK),
    ]
    assert result.attempts[0].detail == "Unexpected KeyError."


def test_a_cancelled_stream_is_cut_at_the_socket_and_no_fallback_is_tried(
    fake: FakeProvider,
) -> None:
    cancel = Cancellation()
    tokens: list[str] = []

    def on_token(token: str) -> None:
        tokens.append(token)
        if len(tokens) == 3:  # from this thread here; the request's thread in production
            cancel.cancel("The client left.")

    with pytest.raises(ProviderUnavailable) as raised:
        complete(
            binding=binding("fault-trickle-20", "echo-1"),
            messages=MESSAGES,
            on_token=on_token,
            cancel=cancel,
        )

    (attempt,) = raised.value.attempts
    assert (attempt.outcome, attempt.detail) == (Outcome.CANCELLED, "The client left.")
    assert attempt.output_tokens > 0  # the three tokens answered were billed
    (stream,) = fake.wait_for_streams(1)
    assert stream.end is StreamEnd.CLIENT_CLOSED
    assert stream.sent < stream.total


def test_a_cancel_from_another_thread_wakes_a_blocked_read(fake: FakeProvider) -> None:
    """The stall leaves the read blocked; cutting the socket ends it before the read timeout."""
    Provider.objects.filter(name="local").update(timeout_seconds=30)
    cancel = Cancellation()
    first_token = threading.Event()

    def on_token(token: str) -> None:
        first_token.set()

    def cancel_once_streaming() -> None:
        if first_token.wait(10):
            cancel.cancel("Past its maximum duration.")

    canceller = threading.Thread(target=cancel_once_streaming, daemon=True)
    canceller.start()
    with pytest.raises(ProviderUnavailable) as raised:
        complete(
            binding=binding("fault-stall"), messages=MESSAGES, on_token=on_token, cancel=cancel
        )
    canceller.join(5)

    (attempt,) = raised.value.attempts
    assert attempt.outcome is Outcome.CANCELLED
    (stream,) = fake.wait_for_streams(1)
    assert stream.end is StreamEnd.CLIENT_CLOSED  # not STOPPED: the stall did not run its course


@pytest.mark.parametrize(
    ("raised", "outcome"),
    [
        (httpx2.ReadTimeout("timed out"), Outcome.TIMEOUT),
        (httpx2.RemoteProtocolError("incomplete chunked read"), Outcome.CONNECTION_ERROR),
        (httpx2.ReadError("[Errno 104] Connection reset by peer"), Outcome.CONNECTION_ERROR),
        (
            openai.APIError("overloaded", request=httpx2.Request("POST", "http://x"), body=None),
            Outcome.STREAM_ERROR,
        ),
    ],
)
def test_client_errors_mid_stream_are_outcomes_wrapped_or_not(
    raised: Exception, outcome: Outcome
) -> None:
    """Mid-stream, a client may pass its HTTP library's errors on unwrapped (openai 3.x wraps
    them, others did not; 3.x's library is httpx2): either way they are outcomes, never an exception that escapes the walk."""
    with pytest.raises(providers._Failure) as failure, providers._translated():
        raise raised

    assert failure.value.outcome is outcome
    assert "Traceback" not in failure.value.detail


@pytest.mark.parametrize(
    "answer",
    ['{"a": NaN}', '{"a": Infinity}', '{"a": 1e400}', '{"a": "\\u0000"}', '{"a": "\\ud800"}'],
)
def test_an_answer_only_lax_json_accepts_is_not_valid_json(answer: str) -> None:
    """What the API refuses in a body is refused in a model's answer too: it could be neither
    answered as JSON nor stored in the call record."""
    parsed, error = providers._validate(answer, {"type": "object"})

    assert parsed is None
    assert error is not None
    assert error.startswith("it is not valid JSON")
