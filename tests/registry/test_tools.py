"""A binding's tools (registry.tools): checked at save with every problem at its pointer, part of
the content hash only when declared, and the request a caller sends built from them."""

from __future__ import annotations

from typing import Any

import pytest

from registry.content import ModelBinding, VersionContent, content_check, model_binding_check
from registry.rendering import Sections
from registry.tools import MAX_TOOLS, MAX_TOOLS_CHARS, chat_request, tools_problems


def tool(name: str = "order_lookup", **function: Any) -> dict[str, Any]:
    parameters = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    }
    return {"type": "function", "function": {"name": name, "parameters": parameters, **function}}


def codes(problems) -> dict[str, str]:
    return {p.pointer: p.code for p in problems}


def test_well_formed_tools_pass() -> None:
    choice = {"type": "function", "function": {"name": "refund"}}
    tools = [tool(description="Find an order.", strict=True), tool("refund")]

    assert tools_problems(tools, choice, True) == []
    assert tools_problems(tools, "required", None) == []


def test_a_remote_reference_in_a_tools_parameters_is_refused_at_its_pointer() -> None:
    remote = tool()
    remote["function"]["parameters"]["properties"]["order_id"] = {
        "$ref": "https://example.com/order.json"
    }

    problems = tools_problems([remote], None, None)

    assert codes(problems) == {
        "/model/tools/0/function/parameters/properties/order_id/$ref": "schema_reference_refused"
    }
    assert "order_lookup" in problems[0].detail


def test_duplicate_and_invalid_names_are_refused() -> None:
    problems = tools_problems([tool(), tool(), tool("has space"), tool("x" * 65)], None, None)

    assert codes(problems) == {
        "/model/tools/1/function/name": "duplicate_tool_name",
        "/model/tools/2/function/name": "invalid_tool_name",
        "/model/tools/3/function/name": "invalid_tool_name",
    }


@pytest.mark.parametrize(
    ("tools", "code"),
    [
        ([tool(f"t{i}") for i in range(MAX_TOOLS + 1)], "too_many_tools"),
        (
            [
                {
                    "type": "function",
                    "function": {
                        "name": f"t{i}",
                        "parameters": {"type": "object", "description": "x" * 2500},
                    },
                }
                for i in range(100)
            ],
            "tools_too_large",
        ),
        ("order_lookup", "invalid_tools"),
    ],
)
def test_counts_and_sizes_are_bounded(tools: Any, code: str) -> None:
    assert codes(tools_problems(tools, None, None)) == {"/model/tools": code}


def test_the_whole_list_bound_is_larger_than_one_schema() -> None:
    assert MAX_TOOLS_CHARS >= 100_000


@pytest.mark.parametrize(
    ("tool_", "pointer", "code"),
    [
        ({"type": "retrieval"}, "/model/tools/0/type", "invalid_tool"),
        (
            {"type": "function", "function": {"name": "a", "args": {}}},
            "/model/tools/0/function/args",
            "unknown_field",
        ),
        (
            {"type": "function", "function": {"name": "a", "strict": "yes"}},
            "/model/tools/0/function/strict",
            "invalid_tool",
        ),
        (
            {"type": "function", "function": {"name": "a", "parameters": {"type": "string"}}},
            "/model/tools/0/function/parameters/type",
            "invalid_tool_parameters",
        ),
        (
            {"type": "function", "function": {"name": "a", "parameters": {"type": 5}}},
            "/model/tools/0/function/parameters/type",
            "invalid_tool_parameters",
        ),
    ],
)
def test_each_malformed_tool_is_refused_at_its_pointer(tool_, pointer, code) -> None:
    assert codes(tools_problems([tool_], None, None)).get(pointer) == code


@pytest.mark.parametrize(
    ("choice", "parallel", "pointer"),
    [
        ("sometimes", None, "/model/tool_choice"),
        (
            {"type": "function", "function": {"name": "missing"}},
            None,
            "/model/tool_choice/function/name",
        ),
        ({"type": "function"}, None, "/model/tool_choice"),
        (None, "yes", "/model/parallel_tool_calls"),
    ],
)
def test_tool_choice_and_parallel_calls_are_checked(choice, parallel, pointer) -> None:
    assert pointer in codes(tools_problems([tool()], choice, parallel))


def test_choice_settings_need_tools() -> None:
    assert set(codes(tools_problems([], "auto", True))) == {
        "/model/tool_choice",
        "/model/parallel_tool_calls",
    }


def content(**model: Any) -> VersionContent:
    return VersionContent(
        variables=(),
        model=ModelBinding(provider="local", model="echo-1", **model),
        templates={"en": Sections(instruction="Hello.")},
    )


def test_a_version_without_tools_keeps_its_hash_and_tools_change_it() -> None:
    plain = content()
    # The canonical form before tools existed: exactly these binding keys.
    assert set(plain.canonical()["model"]) == {
        "provider",
        "model",
        "parameters",
        "response_schema",
        "fallbacks",
    }
    with_tools = content(tools=(tool(),))
    with_choice = content(tools=(tool(),), tool_choice="required")

    assert len({plain.content_hash, with_tools.content_hash, with_choice.content_hash}) == 3
    assert (
        VersionContent.from_dict(with_choice.canonical()).content_hash == with_choice.content_hash
    )


def test_content_check_reports_tool_problems_with_the_rest() -> None:
    problems = content_check(content(tools=(tool(), tool())), default_locale="en")
    assert codes(problems) == {"/model/tools/1/function/name": "duplicate_tool_name"}
    assert model_binding_check(ModelBinding("local", "echo-1", tools=(tool(),))) == []


def test_the_chat_request_holds_everything_create_takes() -> None:
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}}
    model = ModelBinding(
        provider="local",
        model="echo-1",
        parameters={"temperature": 0.2},
        response_schema=schema,
        tools=(tool(),),
        tool_choice="auto",
        parallel_tool_calls=False,
    ).as_dict()
    messages = [{"role": "user", "content": "Hi"}]

    assert chat_request(model, messages) == {
        "model": "echo-1",
        "messages": messages,
        "temperature": 0.2,
        "tools": [tool()],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": schema, "strict": True},
        },
    }
    loose = chat_request(model, messages, strict_output=False)
    assert loose["response_format"]["json_schema"]["strict"] is False
    assert chat_request(content().model.as_dict(), messages) == {
        "model": "echo-1",
        "messages": messages,
    }
