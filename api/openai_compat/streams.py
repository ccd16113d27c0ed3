"""``stream: true``: the model's answer as OpenAI streams it, relayed as it comes.

The call runs as every streamed run does (``runs.streaming.call_streamed``: in a thread, every
wait bounded, cancelled past ``RUN_STREAM_MAX_SECONDS`` or when the client leaves, recorded either
way, on the request's thread, before the stream's last event).

Chat completions: ``data:`` lines of ``chat.completion.chunk``, the role first, then the text and
the tool calls as they come, the finish reason last (and the usage, with
``stream_options.include_usage``), then ``data: [DONE]``. A run that no model answered ends with
``data: {"error": …}`` (the 502's error, which the openai client raises as an ``APIError``).

Responses: named events as OpenAI sends them (``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, their ``.done`` events, ``response.completed``), each
with its ``sequence_number``; a run that no model answered ends with ``response.failed``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any

from django.conf import settings

from runs.execution import CallOutcome, PreparedRun, run_record
from runs.streaming import call_streamed

from ..fastpath import KEEPALIVE, STREAM_KEEPALIVE_SECONDS, sse
from ..run import run_problem
from .answers import (
    ChatChunks,
    finish_reason,
    function_call_item,
    message_item,
    output_text,
    response_object,
    response_output,
    response_usage,
)
from .errors import openai_error_body

DONE = b"data: [DONE]\n\n"


def _streamed(
    prepared: PreparedRun,
    *,
    subject: str | None,
    request_id: str,
    on_token: Callable[[str], Iterator[bytes]],
    on_tool_call: Callable[[dict[str, Any]], Iterator[bytes]],
) -> Generator[bytes, None, CallOutcome]:
    """The events ``on_token`` and ``on_tool_call`` make of the call's deltas, keep-alive comments
    while the model is slow; returns the call's outcome once it is recorded."""

    def recorded(outcome: CallOutcome) -> CallOutcome:
        run_record(prepared=prepared, outcome=outcome, subject=subject, request_id=request_id)
        return outcome

    for kind, value in call_streamed(
        prepared,
        on_end=recorded,
        max_seconds=settings.RUN_STREAM_MAX_SECONDS,
        keepalive_seconds=STREAM_KEEPALIVE_SECONDS,
    ):
        if kind == "token":
            yield from on_token(value)
        elif kind == "tool_call":
            yield from on_tool_call(value)
        elif kind == "keepalive":
            yield KEEPALIVE
        else:  # ("end", outcome): always the last
            return value
    raise AssertionError("call_streamed ended without an outcome")


def _data(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def chat_events(
    prepared: PreparedRun,
    *,
    subject: str | None,
    request_id: str,
    created: int,
    include_usage: bool,
    path: str,
) -> Iterator[bytes]:
    chunks = ChatChunks(
        request_id=request_id,
        created=created,
        model=prepared.binding.model,
        include_usage=include_usage,
    )
    yield _data(chunks.chunk({"role": "assistant", "content": ""}))
    outcome = yield from _streamed(
        prepared,
        subject=subject,
        request_id=request_id,
        on_token=lambda text: iter((_data(chunks.chunk({"content": text})),)),
        on_tool_call=lambda delta: iter((_data(chunks.tool_call(delta)),)),
    )
    completion = outcome.completion
    if completion is None or outcome.refused is not None:
        problem = run_problem(outcome, request_id=request_id)
        yield _data(openai_error_body(problem, instance=path))
    else:
        yield _data(chunks.chunk({}, finish_reason(completion), model=completion.model))
        if include_usage:
            yield _data(chunks.usage(completion))
    yield DONE


class _Output:
    """The output items of one Responses stream, numbered (``output_index``) as they first
    appear, each event numbered (``sequence_number``) as it is sent."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.numbers = itertools.count()
        self.message_id = message_item(request_id, None)["id"]
        self.message_at: int | None = None
        self.calls_at: dict[int, int] = {}  # a tool call's index in the answer -> its item's
        self.calls: dict[int, dict[str, Any]] = {}  # the items, as announced

    def event(self, kind: str, **fields: Any) -> bytes:
        return sse(kind, {"type": kind, "sequence_number": next(self.numbers), **fields})

    def _text_event(self, kind: str, **fields: Any) -> bytes:
        where = {"item_id": self.message_id, "output_index": self.message_at, "content_index": 0}
        return self.event(kind, **where, **fields)

    def _next_index(self) -> int:
        return (self.message_at is not None) + len(self.calls_at)

    def token(self, text: str) -> Iterator[bytes]:
        if self.message_at is None:
            self.message_at = self._next_index()
            item = message_item(self.request_id, None)
            yield self.event("response.output_item.added", output_index=self.message_at, item=item)
            yield self._text_event("response.content_part.added", part=output_text(""))
        yield self._text_event("response.output_text.delta", delta=text, logprobs=[])

    def tool_call(self, delta: dict[str, Any]) -> Iterator[bytes]:
        """A tool-call delta of the run path (``{index, id, name, arguments}``)."""
        index = delta["index"]
        if index not in self.calls_at:
            item = function_call_item(
                self.request_id,
                index,
                call_id=delta["id"] or "",
                name=delta["name"] or "",
                arguments=None,
            )
            yield from self._call_added(index, item)
        if delta["arguments"]:
            yield self.event(
                "response.function_call_arguments.delta",
                item_id=self.calls[index]["id"],
                output_index=self.calls_at[index],
                delta=delta["arguments"],
            )

    def _call_added(self, index: int, item: dict[str, Any]) -> Iterator[bytes]:
        self.calls_at[index], self.calls[index] = self._next_index(), item
        at = self.calls_at[index]
        yield self.event("response.output_item.added", output_index=at, item=item)

    def finish(self, final: list[dict[str, Any]]) -> Iterator[bytes]:
        """Each item done with the answer's final text or arguments (one the stream did not
        announce is announced first). A part that streamed from a model whose answer a fallback
        replaced is done ``incomplete``, and left out of the final response."""
        message = next((item for item in final if item["type"] == "message"), None)
        calls = [item for item in final if item["type"] == "function_call"]
        if message is not None:
            if self.message_at is None:
                self.message_at = self._next_index()
                added = message_item(self.request_id, None)
                yield self.event(
                    "response.output_item.added", output_index=self.message_at, item=added
                )
                yield self._text_event("response.content_part.added", part=output_text(""))
            text = message["content"][0]["text"]
            yield self._text_event("response.output_text.done", text=text, logprobs=[])
            yield self._text_event("response.content_part.done", part=output_text(text))
            yield self.event(
                "response.output_item.done", output_index=self.message_at, item=message
            )
        elif self.message_at is not None:
            abandoned = {**message_item(self.request_id, ""), "status": "incomplete"}
            yield self.event(
                "response.output_item.done", output_index=self.message_at, item=abandoned
            )
        for index, item in enumerate(calls):
            if index not in self.calls_at:
                yield from self._call_added(
                    index, {**item, "arguments": "", "status": "in_progress"}
                )
            at = self.calls_at[index]
            yield self.event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=at,
                arguments=item["arguments"],
            )
            yield self.event("response.output_item.done", output_index=at, item=item)
        for index, at in self.calls_at.items():
            if index >= len(calls):
                abandoned = {**self.calls[index], "status": "incomplete"}
                yield self.event("response.output_item.done", output_index=at, item=abandoned)


def response_events(
    prepared: PreparedRun,
    *,
    subject: str | None,
    request_id: str,
    created_at: float,
) -> Iterator[bytes]:
    """The Responses stream: created and in progress, the output as it comes, then completed
    with the whole response (or failed)."""
    output = _Output(request_id)

    def response(status: str, model: str = prepared.binding.model, **fields: Any) -> dict:
        return response_object(
            prepared,
            request_id=request_id,
            created_at=created_at,
            status=status,
            model=model,
            **fields,
        )

    yield output.event("response.created", response=response("in_progress"))
    yield output.event("response.in_progress", response=response("in_progress"))
    outcome = yield from _streamed(
        prepared,
        subject=subject,
        request_id=request_id,
        on_token=output.token,
        on_tool_call=output.tool_call,
    )
    completion = outcome.completion
    if completion is None or outcome.refused is not None:
        if outcome.refused is not None:
            refused = run_problem(outcome, request_id=request_id)
            error = {"code": "guardrail_refused", "message": refused.detail}
        else:
            error = {"code": "server_error", "message": str(outcome.failure)}
        yield output.event("response.failed", response=response("failed", error=error))
        return
    final = response_output(completion, request_id=request_id)
    yield from output.finish(final)
    usage = response_usage(completion)
    completed = response(
        "completed", completion.model, output=final, usage=usage, completed_at=time.time()
    )
    yield output.event("response.completed", response=completed)
