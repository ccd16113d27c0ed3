"""What a model is told about each tool: a description, arguments as JSON Schema (2020-12) read
from the API's published operation, so they refuse what the API refuses, and examples that the
schema itself accepts."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from api.mcpserver.arguments import json_schema
from api.mcpserver.catalog import TOOLS
from api.mcpserver.releases import CHANGES
from api.releases import ReleaseChangeApi


def schema(name: str) -> dict:
    return TOOLS[name].input_schema()


def allows(name: str, arguments: dict) -> bool:
    return Draft202012Validator(schema(name)).is_valid(arguments)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_each_tool_has_a_valid_schema_a_description_and_examples_it_accepts(name):
    tool = TOOLS[name]
    arguments = tool.input_schema()

    Draft202012Validator.check_schema(arguments)
    assert arguments["type"] == "object"
    assert arguments["additionalProperties"] is False
    assert len(tool.description) > 100, "say what it does and when to use it"
    assert tool.examples
    for example in tool.examples:
        Draft202012Validator(arguments).validate(example)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_argument_is_described(name):
    properties = schema(name)["properties"]

    assert all(property.get("description") for property in properties.values()), sorted(
        n for n, p in properties.items() if not p.get("description")
    )


def test_arguments_refuse_what_the_api_refuses():
    version = {"key": "support.refund-reply", "number": 3}

    assert allows("render_version", {**version, "locale": "fr-CA", "variables": {"a": 1}})
    assert allows("render_version", {**version, "locale": None})
    assert not allows("render_version", {**version, "key": "Support Refund"})
    assert not allows("render_version", {**version, "locale": "français"})
    assert not allows("render_version", {**version, "number": "3"})
    assert not allows("list_prompts", {"page_size": 201})
    assert not allows("get_release", {"key": "support.refund-reply", "environment": "Prod"})


def test_a_release_change_is_one_of_the_release_operations_bodies():
    change = {"key": "support.refund-reply", "environment": "staging"}

    assert allows("propose_release_change", {**change, "change": {"action": "canary_abort"}})
    assert allows(
        "propose_release_change",
        {**change, "change": {"action": "canary_start", "version": 3, "percent": "12.5"}},
    )
    assert not allows("propose_release_change", {**change, "change": {"action": "deploy"}})
    assert not allows(
        "propose_release_change",
        {**change, "change": {"action": "canary_percent", "percent": 101}},
    )
    # A member of another change is refused, never silently dropped.
    assert not allows(
        "propose_release_change",
        {**change, "change": {"action": "canary_promote", "percent": 50}},
    )


def test_every_release_change_of_the_api_can_be_proposed():
    views = {view for view, _ in CHANGES.values()}

    assert views == set(_subclasses(ReleaseChangeApi))


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_openapi_schemas_become_json_schema():
    components = {"Version": {"type": "integer", "minimum": 1}}
    nullable = {"allOf": [{"$ref": "#/components/schemas/Version"}], "nullable": True}

    assert json_schema({"type": "string", "nullable": True, "enum": ["a"]}, components) == {
        "type": ["string", "null"],
        "enum": ["a", None],
    }
    assert json_schema(nullable, components) == {
        "anyOf": [{"allOf": [{"type": "integer", "minimum": 1}]}, {"type": "null"}]
    }
    assert json_schema(
        {"type": "number", "minimum": 0, "exclusiveMinimum": True, "example": 5}, components
    ) == {"type": "number", "exclusiveMinimum": 0, "examples": [5]}
    # A property may be called like a keyword: only schema keywords are rewritten.
    assert json_schema(
        {"type": "object", "properties": {"nullable": {"type": "boolean"}}}, components
    ) == {"type": "object", "properties": {"nullable": {"type": "boolean"}}}
