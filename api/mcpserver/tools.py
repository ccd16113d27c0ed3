"""What a tool is, and what calling one comes to: the caller's scope, its rate limit, its
arguments checked against the published schema, one service or selector, and the answer or the
refusal as the API would have given it.

A tool holds no rule of its own (DESIGN.md, "New doors are thin"): its arguments are an API
operation's request (``api.mcpserver.arguments``), the API view's input serializer reads them,
the service decides, and the view's output serializer writes the answer. A refusal is the
problem document the API answers (``api.problems.answer_exception``), sent as a tool error.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.core.paginator import EmptyPage, Paginator
from django.db.models import QuerySet
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.utils.encoders import JSONEncoder

from registry.actors import Actor

from .. import problems
from ..authentication import KeyPrincipal
from ..fastpath import rate_limit_check
from ..models import ApiKey, Scope
from ..pagination import Pagination
from ..permissions import key_scope_check
from ..problems import ProblemAnswer, ProblemException
from .arguments import operation_arguments

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call as a tool's ``run`` reads it: the caller's key, the actor its changes are recorded
    under, and the arguments, already checked against the tool's schema."""

    api_key: ApiKey
    arguments: dict[str, Any]

    @property
    def actor(self) -> Actor:
        return KeyPrincipal(self.api_key).actor

    def body(self, operation: str) -> dict[str, Any]:
        """The arguments that are ``operation``'s JSON body, for its input serializer."""
        members = operation_arguments(operation).body
        return {name: value for name, value in self.arguments.items() if name in members}


# eq=False: a tool is itself (hashed by identity), so its schema is built once per process.
@dataclass(frozen=True, kw_only=True, eq=False)
class Tool:
    """One tool: what a model is told about it, who may call it, its arguments, what it does.

    ``operation`` names the API operation whose request the arguments are; ``notes`` describe
    arguments for a model (the schema's own descriptions are kept otherwise); ``schema`` builds
    the arguments of a tool that is not one operation's (``propose_release_change``)."""

    name: str
    title: str
    scope: Scope
    description: str
    run: Callable[[ToolCall], Any]
    operation: str = ""
    read_only: bool
    # A change that may take something away from whoever is served (a release change): MCP
    # clients ask before they call one.
    destructive: bool = False
    notes: Mapping[str, str] = field(default_factory=dict)
    examples: tuple[dict[str, Any], ...] = ()
    schema: Callable[[], dict[str, Any]] | None = None

    def input_schema(self) -> dict[str, Any]:
        return tool_schema(self)


@cache
def _schema_of(tool: Tool) -> dict[str, Any]:
    if tool.schema is not None:
        schema = tool.schema()
    else:
        arguments = operation_arguments(tool.operation)
        schema = {"type": "object", "properties": dict(arguments.properties)}
        if arguments.required:
            schema["required"] = list(arguments.required)
    properties = schema["properties"]
    for name, note in tool.notes.items():
        properties[name] = {**properties[name], "description": note}
    # A misspelt argument is refused by name, never silently left out.
    schema["additionalProperties"] = False
    if tool.examples:
        schema["examples"] = list(tool.examples)
    Draft202012Validator.check_schema(schema)
    return schema


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The tool's arguments as JSON Schema, built once per process."""
    return _schema_of(tool)


@cache
def _validator(tool: Tool) -> Draft202012Validator:
    return Draft202012Validator(tool_schema(tool))


def arguments_check(tool: Tool, arguments: Mapping[str, Any]) -> None:
    """Refuses arguments the schema does not allow, every problem at once with a pointer, as a
    serializer's refusal reads (400 ``validation-error``)."""
    found = sorted(_validator(tool).iter_errors(arguments), key=lambda e: e.path)
    reasons = [reason for error in found for reason in _reasons(error)] or found
    if reasons:
        errors = [
            {
                "code": str(error.validator),
                "detail": error.message,
                "pointer": "".join(f"/{part}" for part in error.absolute_path),
            }
            for error in reasons
        ]
        raise ProblemException(
            problems.VALIDATION, "The arguments have problems; see errors.", errors=errors
        )


def _reasons(error: ValidationError) -> list[ValidationError]:
    """The errors that say why ``error`` failed, for a model to fix. Under a ``oneOf`` or an
    ``anyOf``, those of the one branch the value was meant for: not one a ``const`` rules out
    (another release change's ``action``), nor one of another type (a nullable value's
    ``{"type": "null"}``, a percent's string form when a number was sent). When every branch
    is ruled out by its ``const``, the check beside it (the ``action``'s enum) says why."""
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = defaultdict(list)
    for sub in error.context:
        branches[sub.relative_schema_path[0]].append(sub)
    meant = [
        errors
        for errors in branches.values()
        if not any(
            e.validator == "const" or (e.validator == "type" and not e.relative_path)
            for e in errors
        )
    ]
    if len(meant) == 1:
        return [reason for sub in meant[0] for reason in _reasons(sub)]
    if not meant and all(
        any(e.validator == "const" for e in errors) for errors in branches.values()
    ):
        return []
    return [error]


@dataclass(frozen=True, slots=True)
class ToolAnswer:
    """What a call answers: the result (an object) or the problem document refusing it."""

    content: dict[str, Any]
    refused: bool = False

    @property
    def text(self) -> str:
        return json.dumps(self.content, ensure_ascii=False)


def as_json(data: Any) -> Any:
    """``data`` (a serializer's, with its dates and decimals) as plain JSON values."""
    return json.loads(json.dumps(data, cls=JSONEncoder))


def tool_run(tool: Tool, *, api_key: ApiKey, arguments: Mapping[str, Any]) -> ToolAnswer:
    """Calls ``tool`` for ``api_key``: scope, rate limit and arguments first, then the tool.

    Each call takes a token from the bucket of the scope it needs (``api.ratelimit``), as an API
    request does. Every service runs in its own transaction: a refusal leaves nothing behind."""
    try:
        key_scope_check(api_key, tool.scope)
        rate_limit_check(key_id=api_key.pk, scope=str(tool.scope))
        arguments_check(tool, arguments)
        result = tool.run(ToolCall(api_key=api_key, arguments=dict(arguments)))
    except Exception as exc:
        return ToolAnswer(refusal(tool, exc), refused=True)
    return ToolAnswer(as_json(result))


def refusal(tool: Tool, exc: Exception) -> dict[str, Any]:
    """The problem document the API answers ``exc`` with; a bug is logged, and answered as the
    API's 500 is, without its details."""
    answer = problems.answer_exception(exc)
    if answer is None:
        logger.error("MCP tool %s failed", tool.name, exc_info=exc)
        answer = ProblemAnswer(
            problems.SERVER_ERROR, "An unexpected error occurred; it has been logged."
        )
    return answer.body(instance="")


# --- pages ---------------------------------------------------------------------------------------

PAGE_NOTES = {
    "page": "The page to read, from 1 (default 1); `pages` in the answer says how many there are.",
    "page_size": f"Items per page, 1 to {Pagination.max_page_size} (default "
    f"{settings.REST_FRAMEWORK['PAGE_SIZE']}).",
}


def page_of(
    call: ToolCall, queryset: QuerySet, serializer: type[serializers.BaseSerializer]
) -> dict[str, Any]:
    """One page of ``queryset`` as the API pages it (``api.pagination``: its sizes; a page past
    the last one is a 404), with the number of pages instead of the next page's address."""
    size = call.arguments.get("page_size", settings.REST_FRAMEWORK["PAGE_SIZE"])
    number = call.arguments.get("page", 1)
    paginator = Paginator(queryset, size)
    try:
        page = paginator.page(number)
    except EmptyPage as exc:
        raise NotFound(
            Pagination.invalid_page_message.format(page_number=number, message=str(exc))
        ) from exc
    return {
        "count": paginator.count,
        "page": page.number,
        "pages": paginator.num_pages,
        "results": serializer(page.object_list, many=True).data,
    }
