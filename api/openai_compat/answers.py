"""A run's answer as OpenAI's objects: a ``chat.completion`` (and its chunks), a ``response``
(and its output items), with the shapes of the openai package's types so its client parses them.

What OpenAI's objects have no place for, the registry says in headers (``X-Registry-Prompt``,
``-Environment``, ``-Version``, ``-Variant``, and ``X-Request-Id``, which the client reads as
``request_id``), on plain and streamed answers alike, and a Response also in its ``metadata``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from releases.resolution import Resolution
from runs.execution import PreparedRun
from runs.providers import Completion

CHAT_ID = "chatcmpl-"
RESPONSE_ID = "resp_"


def registry_headers(resolution: Resolution) -> dict[str, str]:
    """What served the call: the prompt, the environment, the version and its variant."""
    return {
        "X-Registry-Prompt": resolution.release.prompt,
        "X-Registry-Environment": resolution.release.environment,
        "X-Registry-Version": str(resolution.version.number),
        "X-Registry-Variant": resolution.assignment.label,
    }


def arguments_text(arguments: Mapping[str, Any]) -> str:
    """A tool call's arguments (checked, parsed) as the JSON text OpenAI's objects carry."""
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def finish_reason(completion: Completion) -> str:
    """``tool_calls`` or ``stop``: the registry keeps no other (a cut answer reads ``stop``)."""
    return "tool_calls" if completion.tool_calls else "stop"


# --- chat completions ---------------------------------------------------------------------------


def chat_completion(completion: Completion, *, request_id: str, created: int) -> dict[str, Any]:
    """``chat.completion``: one choice, the model that answered (a fallback's, when it did)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if completion.text or not completion.tool_calls else None,
        "refusal": None,
    }
    if completion.tool_calls:
        message["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": arguments_text(call["arguments"])},
            }
            for call in completion.tool_calls
        ]
    return {
        "id": CHAT_ID + request_id,
        "object": "chat.completion",
        "created": created,
        "model": completion.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason(completion),
                "logprobs": None,
            }
        ],
        "usage": chat_usage(completion),
    }


def chat_usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.input_tokens,
        "completion_tokens": completion.output_tokens,
        "total_tokens": completion.input_tokens + completion.output_tokens,
    }


class ChatChunks:
    """``chat.completion.chunk`` objects of one stream. Until the end they name the binding's
    model (the one asked first); the last names the model that answered."""

    def __init__(self, *, request_id: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {
            "id": CHAT_ID + request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self.include_usage = include_usage

    def chunk(
        self, delta: Mapping[str, Any], finish: str | None = None, model: str | None = None
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
        chunk = {**self.base, "choices": [choice]}
        if model is not None:
            chunk["model"] = model
        if self.include_usage:  # OpenAI's: null on every chunk but the last
            chunk["usage"] = None
        return chunk

    def tool_call(self, delta: Mapping[str, Any]) -> dict[str, Any]:
        """A tool-call delta of the run path (``{index, id, name, arguments}``): the id, type and
        name on a call's first, then pieces of its arguments."""
        call: dict[str, Any] = {"index": delta["index"]}
        function: dict[str, Any] = {"arguments": delta["arguments"]}
        if delta.get("id"):
            call |= {"id": delta["id"], "type": "function"}
        if delta.get("name"):
            function["name"] = delta["name"]
        return self.chunk({"tool_calls": [{**call, "function": function}]})

    def usage(self, completion: Completion) -> dict[str, Any]:
        """The last chunk when ``stream_options.include_usage``: no choice, the usage."""
        return {
            **self.base,
            "model": completion.model,
            "choices": [],
            "usage": chat_usage(completion),
        }


# --- responses ----------------------------------------------------------------------------------


def response_object(
    prepared: PreparedRun,
    *,
    request_id: str,
    created_at: float,
    status: str,
    model: str,
    output: Sequence[Mapping[str, Any]] = (),
    usage: Mapping[str, Any] | None = None,
    error: Mapping[str, Any] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """A ``response``: what the version's binding set (its tools, tool choice and parameters),
    the reusable prompt with the version that served, and the registry's metadata."""
    binding = prepared.binding
    parameters = binding.parameters
    resolution = prepared.resolution
    answer: dict[str, Any] = {
        "id": RESPONSE_ID + request_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": model,
        "output": [dict(item) for item in output],
        "error": dict(error) if error else None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {
            "registry_prompt": resolution.release.prompt,
            "registry_environment": resolution.release.environment,
            "registry_version": str(resolution.version.number),
            "registry_variant": resolution.assignment.label,
            "registry_request_id": request_id,
        },
        "parallel_tool_calls": binding.parallel_tool_calls is not False,
        "tool_choice": _tool_choice(binding.tool_choice),
        "tools": [_tool(tool) for tool in binding.tools],
        "temperature": parameters.get("temperature"),
        "top_p": parameters.get("top_p"),
        "max_output_tokens": parameters.get("max_tokens"),
        "prompt": {
            "id": resolution.release.prompt,
            "version": str(resolution.version.number),
            "variables": None,
        },
        "usage": dict(usage) if usage else None,
    }
    if completed_at is not None:
        answer["completed_at"] = completed_at
    return answer


def response_output(completion: Completion, *, request_id: str) -> list[dict[str, Any]]:
    """The output items: the assistant's message (unless it only called tools), then a
    ``function_call`` per tool call."""
    items = []
    if completion.text or not completion.tool_calls:
        items.append(message_item(request_id, completion.text))
    for index, call in enumerate(completion.tool_calls):
        items.append(
            function_call_item(
                request_id,
                index,
                call_id=call["id"],
                name=call["name"],
                arguments=arguments_text(call["arguments"]),
            )
        )
    return items


def response_usage(completion: Completion) -> dict[str, Any]:
    return {
        "input_tokens": completion.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": completion.input_tokens + completion.output_tokens,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(request_id: str, text: str | None) -> dict[str, Any]:
    """The assistant's message; ``text`` None while it streams (no content yet)."""
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "status": "in_progress" if text is None else "completed",
        "content": [] if text is None else [output_text(text)],
    }


def function_call_item(
    request_id: str, index: int, *, call_id: str, name: str, arguments: str | None
) -> dict[str, Any]:
    """A tool call; ``arguments`` None while it streams."""
    return {
        "id": f"fc_{request_id}_{index}",
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments or "",
        "status": "in_progress" if arguments is None else "completed",
    }


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """A binding's tool (chat's shape) in the Responses API's shape."""
    function = tool.get("function") or {}
    return {"type": "function", **function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        return {"type": "function", "name": choice["function"].get("name")}
    return choice if choice is not None else "auto"
