"""Tools a model binding declares, and the request a caller sends a chat model.

A binding may declare tools in OpenAI's format, with ``tool_choice`` and ``parallel_tool_calls``
(issue 15): they change what a model call does, so they are versioned, diffed, released and rolled
back with the prompt (DESIGN "Versioned with the prompt means released with it"). Two halves:

1. ``tools_problems`` at save time: every tool ``{"type": "function", "function": {name,
   description, parameters, strict}}`` with a name OpenAI accepts, unique, a description and a
   parameters JSON Schema within bounds (``registry.json_schemas``: local ``#`` references only,
   nothing fetched), and a ``tool_choice`` naming a declared tool. Each problem at its pointer.
2. ``chat_request`` at serve time: the keyword arguments of ``chat.completions.create`` for a
   binding and rendered messages (model, messages, parameters, tools, tool_choice,
   parallel_tool_calls, response_format). One implementation, the SDK's
   (``promptregistry.core.request``), so the server's render and the SDK's agree; re-exported.

Pure: no models, no settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from promptregistry.core.request import RESPONSE_FORMAT_NAME, chat_request, response_format

from .errors import Problem
from .json_schemas import schema_problems

__all__ = ["RESPONSE_FORMAT_NAME", "chat_request", "response_format", "tools_problems"]

# OpenAI's rule for a function's name.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_TOOLS = 128  # OpenAI's own limit per request
MAX_TOOL_DESCRIPTION_CHARS = 1_024
# All the tools together, as compact JSON: each schema is bounded on its own (100,000 characters),
# and every tool is sent with every call, so the whole list is bounded too.
MAX_TOOLS_CHARS = 200_000
TOOL_CHOICES = ("none", "auto", "required")
TOOL_FIELDS = frozenset({"type", "function"})
FUNCTION_FIELDS = frozenset({"name", "description", "parameters", "strict"})


def _pointer_token(token: object) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _unknown(data: Mapping[Any, Any], known: frozenset[str], pointer: str) -> list[Problem]:
    return [
        Problem(
            "unknown_field",
            f"Unknown field {name!r}; the fields are {', '.join(sorted(known))}.",
            f"{pointer}/{_pointer_token(name)}",
        )
        for name in data
        if name not in known
    ]


def _tool_problems(tool: Any, pointer: str) -> tuple[list[Problem], str | None]:
    """One tool's problems, and its name when it has a valid one."""
    if not isinstance(tool, Mapping):
        return [Problem("invalid_tool", "A tool must be an object.", pointer)], None
    problems = _unknown(tool, TOOL_FIELDS, pointer)
    if tool.get("type") != "function":
        problems.append(
            Problem("invalid_tool", "A tool's type must be 'function'.", f"{pointer}/type")
        )
    function = tool.get("function")
    at = f"{pointer}/function"
    if not isinstance(function, Mapping):
        problems.append(
            Problem("invalid_tool", "A tool needs a 'function' object with its name.", at)
        )
        return problems, None
    problems += _unknown(function, FUNCTION_FIELDS, at)
    name = function.get("name")
    valid_name = isinstance(name, str) and TOOL_NAME.fullmatch(name) is not None
    if not valid_name:
        problems.append(
            Problem(
                "invalid_tool_name",
                "A tool's name is 1 to 64 letters, digits, '_' or '-' (OpenAI's rule).",
                f"{at}/name",
            )
        )
    description = function.get("description")
    if description is not None and (
        not isinstance(description, str) or len(description) > MAX_TOOL_DESCRIPTION_CHARS
    ):
        problems.append(
            Problem(
                "invalid_tool",
                f"A tool's description is text of at most {MAX_TOOL_DESCRIPTION_CHARS} characters.",
                f"{at}/description",
            )
        )
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        problems.append(Problem("invalid_tool", "'strict' must be true or false.", f"{at}/strict"))
    parameters = function.get("parameters")
    if parameters is not None:
        problems += [
            Problem(
                "invalid_tool_parameters" if p.code == "invalid_json_schema" else p.code,
                f"The parameters of tool {name if valid_name else '?'}: {p.detail}",
                p.pointer,
            )
            for p in schema_problems(parameters, pointer=f"{at}/parameters")
        ]
        if isinstance(parameters, Mapping) and parameters.get("type", "object") != "object":
            problems.append(
                Problem(
                    "invalid_tool_parameters",
                    "A tool's parameters are an object schema ('type': 'object').",
                    f"{at}/parameters/type",
                )
            )
    return problems, name if valid_name else None


def tools_problems(
    tools: Any, tool_choice: Any, parallel_tool_calls: Any, *, pointer: str = "/model"
) -> list[Problem]:
    """Every reason not to save a binding's tools, tool_choice and parallel_tool_calls.

    1. ``tools`` a list of at most ``MAX_TOOLS``, together at most ``MAX_TOOLS_CHARS`` as JSON.
    2. Each tool well formed (``_tool_problems``), its name unique in the list.
    3. ``tool_choice`` one of none/auto/required or ``{"type": "function", "function": {"name"}}``
       naming a declared tool; only with tools.
    4. ``parallel_tool_calls`` true or false; only with tools.
    """
    problems: list[Problem] = []
    at = f"{pointer}/tools"
    if tools is None:
        tools = []
    if not isinstance(tools, list | tuple):
        return [Problem("invalid_tools", "'tools' must be a list of tools.", at)]
    if len(tools) > MAX_TOOLS:
        return [Problem("too_many_tools", f"At most {MAX_TOOLS} tools; {len(tools)} given.", at)]
    try:
        size = len(json.dumps(list(tools), separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return [Problem("invalid_tools", "The tools must be JSON.", at)]
    if size > MAX_TOOLS_CHARS:
        return [
            Problem(
                "tools_too_large",
                f"The tools take {size} characters as JSON; at most {MAX_TOOLS_CHARS}.",
                at,
            )
        ]
    names: dict[str, int] = {}
    for i, tool in enumerate(tools):
        found, name = _tool_problems(tool, f"{at}/{i}")
        problems += found
        if name is None:
            continue
        if name in names:
            problems.append(
                Problem(
                    "duplicate_tool_name",
                    f"Tools {names[name]} and {i} are both named {name!r}; a name calls one tool.",
                    f"{at}/{i}/function/name",
                )
            )
        else:
            names[name] = i
    problems += _tool_choice_problems(tool_choice, set(names), bool(tools), pointer)
    if parallel_tool_calls is not None:
        if not isinstance(parallel_tool_calls, bool):
            problems.append(
                Problem(
                    "invalid_parallel_tool_calls",
                    "'parallel_tool_calls' must be true or false.",
                    f"{pointer}/parallel_tool_calls",
                )
            )
        elif not tools:
            problems.append(
                Problem(
                    "invalid_parallel_tool_calls",
                    "'parallel_tool_calls' applies only to a binding with tools.",
                    f"{pointer}/parallel_tool_calls",
                )
            )
    return problems


def _tool_choice_problems(
    choice: Any, names: set[str], has_tools: bool, pointer: str
) -> list[Problem]:
    at = f"{pointer}/tool_choice"
    if choice is None:
        return []
    if not has_tools:
        return [Problem("invalid_tool_choice", "'tool_choice' needs tools to choose from.", at)]
    if isinstance(choice, str):
        if choice in TOOL_CHOICES:
            return []
        return [
            Problem(
                "invalid_tool_choice",
                "'tool_choice' is none, auto, required or "
                "{'type': 'function', 'function': {'name': …}}.",
                at,
            )
        ]
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if (
        not isinstance(choice, Mapping)
        or set(choice) != {"type", "function"}
        or choice.get("type") != "function"
        or not isinstance(function, Mapping)
        or set(function) != {"name"}
        or not isinstance(name, str)
    ):
        return [
            Problem(
                "invalid_tool_choice",
                "'tool_choice' is none, auto, required or "
                "{'type': 'function', 'function': {'name': …}}.",
                at,
            )
        ]
    if name not in names:
        return [
            Problem(
                "invalid_tool_choice",
                f"'tool_choice' names {name[:100]!r}, which is not one of the tools.",
                f"{at}/function/name",
            )
        ]
    return []
