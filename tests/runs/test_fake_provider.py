"""The local OpenAI-compatible server (runs.fake_provider), seen through the official client.

No database. Each test starts the fake on an ephemeral loopback port; the clients trust no proxy
from the environment, so no call can leave the machine. What it must guarantee (issue #4): the
same request gets the same answer, streamed or not, with usage; JSON schemas are honoured; every
fault shows up in the client as the error a real provider would cause; the fault queue lets a
test fail the first N calls; and the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from openai import DefaultHttpxClient, OpenAI

from runs.fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
# Any: the client's parameter types are TypedDicts; these literals are what a caller sends.
USER: dict[str, Any] = {"role": "user", "content": "Summarise the release notes for version two"}
MESSAGES: list[Any] = [{"role": "system", "content": "You are terse."}, USER]
ECHO = "echo-1: Summarise the release notes for version two"
TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 12},
        "severity": {"type": "string", "enum": ["low", "high"]},
        "version": {"const": 2},
        "score": {"type": "integer", "minimum": 3, "maximum": 9},
        "ratio": {"type": "number", "exclusiveMinimum": 0},
        "urgent": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 40}, "minItems": 2},
        "owner": {"$ref": "#/$defs/person"},
        "due": {"type": ["string", "null"], "format": "date"},
        "channel": {"anyOf": [{"type": "string", "enum": ["email"]}, {"type": "null"}]},
    },
    "required": [
        "title",
        "severity",
        "version",
        "score",
        "ratio",
        "urgent",
        "tags",
        "owner",
        "due",
        "channel",
    ],
    "additionalProperties": False,
    "$defs": {
        "person": {
            "type": "object",
            "properties": {"email": {"type": "string", "format": "email"}},
            "required": ["email"],
            "additionalProperties": False,
        }
    },
}
TICKET_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "ticket", "schema": TICKET_SCHEMA, "strict": True},
}
# urllib for the raw HTTP checks, never through a proxy from the environment.
RAW = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body: bytes | dict[str, Any] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with RAW.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def connect() -> Iterator[Callable[..., OpenAI]]:
    """``connect(fake, max_retries=2)``: an official client on the fake, closed after the test."""
    clients: list[OpenAI] = []

    def connect(
        fake: FakeProvider, *, max_retries: int = 0, timeout: float = 5.0, api_key: str = "x"
    ) -> OpenAI:
        client = OpenAI(
            base_url=fake.base_url,
            api_key=api_key,
            max_retries=max_retries,
            timeout=timeout,
            # trust_env=False: no HTTP(S)_PROXY from the environment may take a call off loopback.
            http_client=DefaultHttpxClient(trust_env=False),
        )
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def client(fake: FakeProvider, connect: Callable[..., OpenAI]) -> OpenAI:
    return connect(fake)


def test_it_answers_a_completion_with_usage(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="echo-1", messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.model == "echo-1"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == ECHO
    assert completion.choices[0].finish_reason == "stop"
    # ceil(characters / 4): 14 + 43 characters in, 51 out.
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4 + 11
    assert completion.usage.completion_tokens == 13
    assert completion.usage.total_tokens == 28


def test_the_same_request_always_gets_the_same_answer(client: OpenAI) -> None:
    first = client.chat.completions.create(model="echo-1", messages=MESSAGES)
    second = client.chat.completions.create(model="echo-1", messages=MESSAGES)
    other = client.chat.completions.create(
        model="echo-1", messages=[MESSAGES[0], {**USER, "content": "Other words"}]
    )

    assert first.model_dump() == second.model_dump()
    assert other.choices[0].message.content == "echo-1: Other words"
    assert other.id != first.id


def test_echo_small_answers_shorter_than_echo_1(client: OpenAI) -> None:
    words = " ".join(f"word{n}" for n in range(40))
    messages: list[Any] = [{"role": "user", "content": words}]

    long = client.chat.completions.create(model="echo-1", messages=messages)
    short = client.chat.completions.create(model="echo-small", messages=messages)

    assert long.choices[0].message.content == f"echo-1: {' '.join(words.split()[:32])} ..."
    assert short.choices[0].message.content == f"echo-small: {' '.join(words.split()[:8])} ..."


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="echo-1", messages=MESSAGES, max_tokens=3)

    assert completion.choices[0].message.content == ECHO[:12]
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3


def test_streamed_chunks_assemble_to_the_plain_answer_and_report_usage(client: OpenAI) -> None:
    plain = client.chat.completions.create(model="echo-1", messages=MESSAGES)

    chunks = list(
        client.chat.completions.create(
            model="echo-1",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    with_choices = [chunk for chunk in chunks if chunk.choices]
    assert len(with_choices) > 3  # really streamed: role, several words, finish
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in with_choices)
    assert text == plain.choices[0].message.content
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == plain.usage


def test_a_stream_without_include_usage_reports_none(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="echo-1", messages=MESSAGES, stream=True))

    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


def test_a_json_schema_answer_is_valid_against_its_schema(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo-1", messages=MESSAGES, response_format=TICKET_FORMAT
    )
    again = client.chat.completions.create(
        model="echo-1", messages=MESSAGES, response_format=TICKET_FORMAT
    )

    content = completion.choices[0].message.content
    assert content is not None
    document = json.loads(content)
    validator = jsonschema.Draft202012Validator(
        TICKET_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(document)
    assert document["severity"] == "low"  # the first enum value
    assert document["title"] == "Summarise th"  # the prompt's words, cut at maxLength
    assert again.choices[0].message.content == content


def test_json_object_wraps_the_answer(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo-1", messages=MESSAGES, response_format={"type": "json_object"}
    )

    assert json.loads(completion.choices[0].message.content or "") == {"answer": ECHO}


def test_models_are_listed(client: OpenAI) -> None:
    ids = [model.id for model in client.models.list()]

    assert {"echo-1", "echo-small", "fault-429"} <= set(ids)


def test_a_rate_limit_carries_retry_after(client: OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="fault-429", messages=MESSAGES)

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


def test_a_server_error_is_a_500(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="fault-500", messages=MESSAGES)

    assert caught.value.status_code == 500
    assert caught.value.type == "server_error"


def test_a_malformed_body_fails_in_the_client(client: OpenAI) -> None:
    # The client raises the bare json error, not an openai.APIError: provider code must catch it.
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="fault-malformed", messages=MESSAGES)


def test_a_malformed_stream_fails_in_the_client(client: OpenAI) -> None:
    stream = client.chat.completions.create(model="fault-malformed", messages=MESSAGES, stream=True)

    with pytest.raises(json.JSONDecodeError):
        list(stream)


def test_badjson_answers_content_that_is_not_the_json_asked_for(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="fault-badjson", messages=MESSAGES, response_format=TICKET_FORMAT
    )

    content = completion.choices[0].message.content or ""
    assert content.startswith("Sure! Here is the JSON")
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(content[content.index("{") :])  # not even once the prose is stripped


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        # The client (openai 3.x) wraps httpx's errors mid-stream; the registry maps both forms.
        ("drop", openai.APIConnectionError),  # RemoteProtocolError: incomplete chunked read
        ("error-event", openai.APIError),  # the bare APIError, for data: {"error": ...}
        ("garbage", json.JSONDecodeError),  # after a chunk whose content is a number
        ("reset", openai.APIConnectionError),  # ReadError: connection reset by peer
    ],
)
def test_a_stream_broken_half_way_fails_in_the_client_after_some_tokens(
    fake: FakeProvider, client: OpenAI, fault: str, error: type[Exception]
) -> None:
    stream = client.chat.completions.create(model=f"fault-{fault}", messages=MESSAGES, stream=True)
    chunks: list[Any] = []

    with pytest.raises(error):
        chunks.extend(stream)

    assert len(chunks) >= 2 or fault == "reset"  # a reset may discard what was in flight
    [record] = fake.wait_for_streams(1)
    assert (record.fault, record.end) == (fault, "cut")
    assert record.sent < record.total


def test_a_stalled_stream_times_out_after_some_tokens(
    fake: FakeProvider, connect: Callable[..., OpenAI]
) -> None:
    stream = connect(fake, timeout=0.5).chat.completions.create(
        model="fault-stall", messages=MESSAGES, stream=True
    )
    chunks: list[Any] = []

    with pytest.raises(openai.APITimeoutError):
        chunks.extend(stream)

    assert len(chunks) >= 2
    stream.close()
    [record] = fake.wait_for_streams(1)
    assert record.end == "client_closed"  # the stall noticed the client going, not its end


def test_a_trickle_ends_as_soon_as_the_client_closes(fake: FakeProvider, client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fault-trickle-20", messages=MESSAGES, stream=True
    )
    first = [next(stream), next(stream)]
    stream.close()

    [record] = fake.wait_for_streams(1)
    assert len(first) == 2
    assert (record.end, record.total) == ("client_closed", 203)  # role, 200 words, finish, [DONE]
    assert record.sent < record.total


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("drop", openai.APIConnectionError),
        ("stall", openai.APITimeoutError),
        ("garbage", json.JSONDecodeError),
        ("reset", openai.APIConnectionError),
    ],
)
def test_the_broken_faults_break_a_plain_answer_too(
    connect: Callable[..., OpenAI], fake: FakeProvider, fault: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        connect(fake, timeout=0.5).chat.completions.create(
            model=f"fault-{fault}", messages=MESSAGES
        )


def test_an_error_body_in_a_200_is_no_completion(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="fault-error-event", messages=MESSAGES)

    assert completion.choices is None  # the client's lenient parsing: the registry checks shapes


def test_a_hung_answer_times_out_and_the_server_still_stops_promptly(
    connect: Callable[..., OpenAI],
) -> None:
    fake = FakeProvider().start()
    try:
        client = connect(fake, timeout=0.5)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="fault-hang", messages=MESSAGES)
    finally:
        started = time.perf_counter()
        fake.stop()  # the handler is still waiting out its 30 s hang
        stopped_after = time.perf_counter() - started

    # A bound on behaviour (stop() does not wait out the hang), far from the 30 s, not a benchmark.
    assert stopped_after < 5


def test_a_slow_model_answers_after_its_latency(client: OpenAI) -> None:
    started = time.perf_counter()
    completion = client.chat.completions.create(model="slow-200", messages=MESSAGES)

    assert time.perf_counter() - started >= 0.2
    assert completion.choices[0].message.content == "slow-200: " + ECHO.removeprefix("echo-1: ")


def test_an_unknown_fault_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="fault-teapot", messages=MESSAGES)

    assert caught.value.code == "model_not_found"


def test_queued_faults_fail_the_first_calls_then_the_client_retries_to_success(
    connect: Callable[..., OpenAI],
) -> None:
    # retry_after_ms: the client prefers it to Retry-After: 1, which would cost two seconds here.
    with FakeProvider(retry_after_ms=10) as fake:
        fake.faults.push("echo-1", "429", count=2)
        client = connect(fake, max_retries=2)

        completion = client.chat.completions.create(model="echo-1", messages=MESSAGES)

        assert completion.choices[0].message.content == ECHO
        assert len(fake.requests.for_path(CHAT)) == 3


def test_queued_faults_are_per_model_so_a_fallback_succeeds(
    fake: FakeProvider, client: OpenAI
) -> None:
    fake.faults.push("echo-1", "500")

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="echo-1", messages=MESSAGES)
    fallback = client.chat.completions.create(model="echo-small", messages=MESSAGES)
    recovered = client.chat.completions.create(model="echo-1", messages=MESSAGES)

    assert (
        fallback.choices[0].message.content
        == "echo-small: Summarise the release notes for version two"
    )
    assert recovered.choices[0].message.content == ECHO
    assert fake.requests.models() == ["echo-1", "echo-small", "echo-1"]


def test_a_fault_with_a_typo_is_refused_when_queued(fake: FakeProvider) -> None:
    with pytest.raises(ValueError, match="Unknown fault"):
        fake.faults.push("echo-1", "418")


def test_the_control_endpoint_queues_faults_and_resets(fake: FakeProvider, client: OpenAI) -> None:
    status, answer = http(
        "POST", f"{fake.url}/_control/faults", {"model": "echo-1", "fault": "500"}
    )
    assert (status, answer) == (200, {"model": "echo-1", "fault": "500", "count": 1})

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="echo-1", messages=MESSAGES)
    assert client.chat.completions.create(model="echo-1", messages=MESSAGES).choices
    assert http("POST", f"{fake.url}/_control/faults", {"model": "x", "fault": "418"})[0] == 400

    fake.faults.push("echo-1", "500")
    assert http("POST", f"{fake.url}/_control/reset", {}) == (200, {"reset": True})
    assert len(fake.requests) == 0
    assert client.chat.completions.create(model="echo-1", messages=MESSAGES).choices


def test_requests_are_recorded_with_body_and_headers(fake: FakeProvider, client: OpenAI) -> None:
    client.chat.completions.create(model="echo-1", messages=MESSAGES)

    (recorded,) = fake.requests
    assert recorded.path == CHAT
    assert recorded.body == {"model": "echo-1", "messages": MESSAGES}
    assert recorded.headers["authorization"] == "Bearer x"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(b"{not json", None, id="not-json"),
        pytest.param({"messages": [USER]}, "model", id="no-model"),
        pytest.param({"model": "echo-1", "messages": []}, "messages", id="no-messages"),
        pytest.param(
            {"model": "echo-1", "messages": [{"role": "robot", "content": "hi"}]},
            "messages[0].role",
            id="bad-role",
        ),
        pytest.param(
            {"model": "echo-1", "messages": [{"role": "user", "content": 3}]},
            "messages[0].content",
            id="bad-content",
        ),
        pytest.param(
            {"model": "echo-1", "messages": [USER], "stream_options": {"include_usage": True}},
            "stream_options",
            id="stream-options-without-stream",
        ),
        pytest.param(
            {"model": "echo-1", "messages": [USER], "response_format": {"type": "yaml"}},
            "response_format",
            id="bad-response-format",
        ),
        pytest.param(
            {"model": "echo-1", "messages": [USER], "max_tokens": 0}, "max_tokens", id="max-tokens"
        ),
    ],
)
def test_a_bad_request_gets_an_openai_style_400(
    fake: FakeProvider, body: bytes | dict[str, Any], param: str | None
) -> None:
    status, answer = http("POST", f"{fake.base_url}/chat/completions", body)

    assert status == 400
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param


def test_the_client_sees_a_bad_request_as_bad_request_error(client: OpenAI) -> None:
    no_content: list[Any] = [{"role": "user"}]

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="echo-1", messages=no_content)

    assert caught.value.status_code == 400
    assert caught.value.param == "messages[0].content"


def test_a_configured_key_is_required(connect: Callable[..., OpenAI]) -> None:
    with FakeProvider(api_key="sk-local") as fake:
        with pytest.raises(openai.AuthenticationError):
            connect(fake, api_key="wrong").chat.completions.create(
                model="echo-1", messages=MESSAGES
            )

        answer = connect(fake, api_key="sk-local").chat.completions.create(
            model="echo-1", messages=MESSAGES
        )
        assert answer.choices[0].message.content == ECHO


def other_local_addresses() -> list[str]:
    """127.0.0.2 (loopback, but not the bound address) and this machine's outward address."""
    addresses = ["127.0.0.2"]
    # No route means no outward address to try.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1; connecting a UDP socket sends nothing
        addresses.append(probe.getsockname()[0])
    return [address for address in addresses if address != "127.0.0.1"]


def test_it_listens_on_127_0_0_1_only(fake: FakeProvider) -> None:
    assert fake.address[0] == "127.0.0.1"
    assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
    for address in other_local_addresses():
        # Refused: the socket is bound to 127.0.0.1, so nothing listens on this address.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((address, fake.port), timeout=0.5).close()


def test_main_serves_in_the_foreground_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "runs.fake_provider", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+/v1", line)
        assert match, line
        assert http("GET", f"{match[0]}/models")[0] == 200

        process.send_signal(signal.SIGTERM)

        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
