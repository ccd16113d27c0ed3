"""The OpenAPI document the service serves, as JSON Schema a validator can check real answers
against (tests/api/test_runtime_schema.py, tests/api/test_response_shapes.py,
tests/api/test_problem_types.py).

drf-spectacular emits OpenAPI 3.0.3, whose schemas are not quite JSON Schema: ``nullable: true``
says ``null`` is allowed too (for a ``type``, an ``enum``, an ``allOf``/``oneOf`` or a ``$ref``),
``exclusiveMinimum``/``exclusiveMaximum`` are booleans qualifying ``minimum``/``maximum``, and ``discriminator`` (which jsonschema ignores) only names the member that tells ``oneOf``'s
branches apart; each branch's ``type`` enum does that work here.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from jsonschema import Draft7Validator
from rest_framework.test import APIClient


def served_openapi() -> dict[str, Any]:
    """``/api/v1/schema/?format=json`` as served, converted with ``json_schema``: a copy of the
    one this process fetched first. The schema depends on the code, not on the data, and
    generating it takes a quarter of a second, which dozens of tests would pay each."""
    return copy.deepcopy(_served_openapi())


@functools.cache
def _served_openapi() -> dict[str, Any]:
    response = APIClient().get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return json_schema(response.json())


def json_schema(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable`` turned into JSON Schema, everywhere in ``node``."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(value) for key, value in node.items()}
    # 3.0's exclusive bounds are booleans on minimum/maximum (JSON Schema draft 4); draft 7's are
    # the bounds themselves.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(converted.get(exclusive), bool) and converted.pop(exclusive):
            converted[exclusive] = converted.pop(bound)
    if converted.pop("nullable", False):
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        elif {"allOf", "oneOf", "anyOf", "$ref"} & set(converted):
            converted = {"anyOf": [{"type": "null"}, converted]}
        # With neither (``{"nullable": true}`` alone: any value), there is nothing to widen.
    return converted


def strict(openapi: dict[str, Any]) -> dict[str, Any]:
    """``openapi`` where an object that lists its properties allows no other: a member a view
    sends that the schema does not document fails validation too. ``allOf`` of objects is merged
    first (each branch alone would refuse the others' members)."""
    components = openapi["components"]["schemas"]

    def resolved(node: Any) -> Any:
        if isinstance(node, dict) and set(node) == {"$ref"}:
            return resolved(components[node["$ref"].rsplit("/", 1)[-1]])
        return node

    def tighten(node: Any) -> Any:
        if isinstance(node, list):
            return [tighten(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {key: tighten(value) for key, value in node.items()}
        branches = [resolved(b) for b in node.get("allOf", ())]
        if branches and all("properties" in b for b in branches):
            merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            for branch in branches:
                merged["properties"] |= tighten(branch["properties"])
                merged["required"] += branch.get("required", [])
            node = {**{k: v for k, v in node.items() if k != "allOf"}, **merged}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node

    return {**openapi, "components": {**openapi["components"], "schemas": tighten(components)}}


def validate(openapi: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """``instance`` against ``schema`` (local ``$ref`` into the document's components only)."""
    Draft7Validator({**schema, "components": openapi["components"]}).validate(instance)


def component(openapi: dict[str, Any], name: str, instance: Any) -> None:
    validate(openapi, {"$ref": f"#/components/schemas/{name}"}, instance)


def operations(openapi: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Every operation of the document: operationId -> (method, path template)."""
    return {
        operation["operationId"]: (method, path)
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
    }


def documented(openapi: dict[str, Any], path: str, method: str, response) -> dict[str, Any]:
    """Checks the answer against its operation: a documented status, a documented content type
    whose schema the JSON body meets, and every documented header present meets its schema.
    Returns the response's description."""
    operation = openapi["paths"][path][method]
    described = operation["responses"].get(str(response.status_code))
    assert described is not None, (response.status_code, sorted(operation["responses"]))
    for name, header in described.get("headers", {}).items():
        if name in response:
            value = response[name]
            schema = header["schema"]
            validate(openapi, schema, int(value) if schema.get("type") == "integer" else value)
    content = described.get("content")
    if content is None:
        assert not getattr(response, "streaming", False)
        assert not response.content
        return described
    media = response["Content-Type"].split(";")[0]
    assert media in content, (media, sorted(content))
    if media.endswith("json"):
        validate(openapi, content[media]["schema"], json.loads(response.content))
    return described
