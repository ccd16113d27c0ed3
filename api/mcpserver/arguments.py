"""A tool's arguments are an API operation's request: its path and query parameters and its JSON
body's members, as the OpenAPI schema the service publishes (``/api/v1/schema/``) states them.

So the rules of shape a tool's arguments follow (patterns, lengths, bounds, enums) are written
once, in the serializers behind the schema (decision 0024), and a client of the MCP server sees
the same ones as a client of the REST API. The schema is generated once per process, when a
tool is first listed or called.

OpenAPI 3.0's schema objects are turned into JSON Schema (2020-12), which MCP asks for:
references inlined, ``nullable`` into a ``null`` type, 3.0's boolean ``exclusiveMinimum`` into a
number, ``example`` into ``examples``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.generators import SchemaGenerator

# Keywords whose values are schemas (a map of them, a list of them, or one), the only ones walked:
# the values of the others (``enum``, ``default``, ``required``...) are data, whatever they hold.
_SCHEMA_MAPS = frozenset({"properties"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMAS = frozenset({"items", "not", "additionalProperties"})
# OpenAPI's own keywords, which JSON Schema does not have (``nullable`` and ``example`` are
# rewritten; the others say nothing about a request's arguments).
_OPENAPI_ONLY = frozenset(
    {"nullable", "example", "readOnly", "writeOnly", "discriminator", "xml", "externalDocs"}
)


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the published schema, as a tool's arguments: each name with its JSON
    Schema, which of them are required, and which come from the body."""

    properties: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    body: frozenset[str]


@cache
def published_operations() -> dict[str, Operation]:
    """Every operation of the service's OpenAPI schema, by ``operationId``."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    components = document.get("components", {}).get("schemas", {})
    operations: dict[str, Operation] = {}
    for item in document["paths"].values():
        for method, operation in item.items():
            if method != "parameters" and "operationId" in operation:
                operations[operation["operationId"]] = _arguments(operation, components)
    return operations


def operation_arguments(operation_id: str) -> Operation:
    try:
        return published_operations()[operation_id]
    except KeyError as exc:
        raise ImproperlyConfigured(f"The API has no operation {operation_id!r}.") from exc


def _arguments(operation: Mapping[str, Any], components: Mapping[str, Any]) -> Operation:
    properties: dict[str, dict[str, Any]] = {}
    required: list[str] = []
    for parameter in operation.get("parameters", []):
        if parameter["in"] not in ("path", "query"):
            continue  # headers (If-Match) are arguments of their own where a tool takes them
        schema = json_schema(parameter.get("schema", {}), components)
        if parameter.get("description") and "description" not in schema:
            schema["description"] = parameter["description"]
        properties[parameter["name"]] = schema
        if parameter.get("required"):
            required.append(parameter["name"])
    content = operation.get("requestBody", {}).get("content", {})
    body = json_schema(content.get("application/json", {}).get("schema", {}), components)
    for name, schema in body.get("properties", {}).items():
        if name in properties:
            raise ImproperlyConfigured(
                f"{operation['operationId']}: {name!r} is both a parameter and a body member."
            )
        properties[name] = schema
    required += body.get("required", [])
    return Operation(
        properties=properties,
        required=tuple(required),
        body=frozenset(body.get("properties", {})),
    )


def json_schema(
    node: Mapping[str, Any], components: Mapping[str, Any], seen: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An OpenAPI 3.0 schema object as JSON Schema, its references (to ``components``) inlined."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name in seen:  # a request shape that contains itself cannot be inlined
            raise ImproperlyConfigured(f"The schema component {name} refers to itself.")
        return json_schema(components[name], components, (*seen, name))
    schema: dict[str, Any] = {}
    for keyword, value in node.items():
        if keyword in _OPENAPI_ONLY:
            continue
        if keyword in _SCHEMA_MAPS:
            schema[keyword] = {k: json_schema(v, components, seen) for k, v in value.items()}
        elif keyword in _SCHEMA_LISTS:
            schema[keyword] = [json_schema(v, components, seen) for v in value]
        elif keyword in _SCHEMAS and isinstance(value, Mapping):
            schema[keyword] = json_schema(value, components, seen)
        else:
            schema[keyword] = value
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if schema.get(bound) is True:  # 3.0: a flag on the bound; 2020-12: the bound itself
            schema[bound] = schema.pop(limit)
        elif schema.get(bound) is False:
            del schema[bound]
    if "example" in node:
        schema["examples"] = [node["example"]]
    if node.get("nullable"):
        schema = _nullable(schema)
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get("type"), str):
        nullable = {**schema, "type": [schema["type"], "null"]}
        if "enum" in nullable:
            nullable["enum"] = [*nullable["enum"], None]
        return nullable
    # No type of its own (an allOf of a component): either that schema, or null.
    description = schema.pop("description", None)
    nullable = {"anyOf": [schema, {"type": "null"}]}
    if description:
        nullable["description"] = description
    return nullable
