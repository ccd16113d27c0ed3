"""registry.json_schemas: what an author's JSON Schema may hold, and validating without a fetch
(issue 12, finding 2). Pure: no database. The ``recorder`` (tests/loopback.py) stands for any URL
a schema could name, and ``secret_file`` for any file: neither may ever be read."""

from __future__ import annotations

import jsonschema
import pytest

from registry.json_schemas import (
    MAX_SCHEMA_CHARS,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    schema_problems,
    schema_validator,
)
from registry.regexes import MAX_REGEX_INPUT_CHARS
from tests.loopback import MARKER


def codes(schema, pointer: str = "") -> list[tuple[str, str]]:
    return [(p.code, p.pointer) for p in schema_problems(schema, pointer=pointer)]


# --- save time ------------------------------------------------------------------------------------


def test_a_reference_to_a_file_or_a_url_is_refused_at_its_pointer(recorder, secret_file) -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": secret_file.as_uri()},
            "b": {"items": {"$ref": f"{recorder.url}/schema.json"}},
            "c": {"$dynamicRef": f"{recorder.url}/dyn"},
            "d": {"$ref": "other.json#/x"},  # relative: resolved against a base, so a fetch
        },
    }
    assert codes(schema, "/model/response_schema") == [
        ("schema_reference_refused", "/model/response_schema/properties/a/$ref"),
        ("schema_reference_refused", "/model/response_schema/properties/b/items/$ref"),
        ("schema_reference_refused", "/model/response_schema/properties/c/$dynamicRef"),
        ("schema_reference_refused", "/model/response_schema/properties/d/$ref"),
    ]
    detail = schema_problems(schema)[0].detail
    assert secret_file.as_uri() in detail
    assert "never a file or a URL" in detail
    assert recorder.hits == []


def test_refusals_are_found_anywhere_a_pointer_could_reach() -> None:
    # '#/const/x' would make the value under const a schema: a reference there is refused too.
    assert codes({"const": {"x": {"$ref": "https://example.invalid/"}}}) == [
        ("schema_reference_refused", "/const/x/$ref")
    ]
    # A property *named* $ref is a name, not a reference.
    assert codes({"properties": {"$ref": {"type": "string"}}}) == []


def test_an_id_is_refused_because_it_moves_what_local_references_mean() -> None:
    schema = {"$id": "http://127.0.0.1:9/", "$defs": {"a": {"$id": "file:///etc/"}}}
    assert codes(schema) == [("schema_id_refused", "/$id"), ("schema_id_refused", "/$defs/a/$id")]


def test_local_references_and_anchors_are_fine_and_must_resolve() -> None:
    tree = {
        "$anchor": "node",
        "type": "object",
        "properties": {"children": {"type": "array", "items": {"$ref": "#node"}}},
        "$defs": {"name": {"type": "string"}},
        "required": ["children"],
    }
    assert (
        codes({**tree, "properties": {**tree["properties"], "n": {"$ref": "#/$defs/name"}}}) == []
    )
    assert codes({"$ref": "#/$defs/missing"}) == [("schema_reference_unresolvable", "/$ref")]


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"pattern": "(a+)+$"}, [("unsafe_regex", "/pattern")]),
        (
            {"properties": {"s": {"pattern": "(\\w+\\s?)*"}}},
            [("unsafe_regex", "/properties/s/pattern")],
        ),
        (
            {"patternProperties": {"(a|ab)*c": {}}},
            [("unsafe_regex", "/patternProperties/(a|ab)*c")],
        ),
        ({"propertyNames": {"pattern": ".*a.*b"}}, [("unsafe_regex", "/propertyNames/pattern")]),
        ({"pattern": "a" * 1001}, [("invalid_regex", "/pattern")]),
        ({"pattern": "^[a-z]+-[0-9]{4}$"}, []),
        ({"patternProperties": {"^x-[a-z]+$": {"type": "string"}}}, []),
    ],
)
def test_patterns_the_regex_scorer_would_refuse_are_refused(schema, expected) -> None:
    assert codes(schema) == expected


def test_size_depth_and_expansion_are_bounded() -> None:
    big = {"enum": ["x" * 1000] * (MAX_SCHEMA_CHARS // 1000 + 1)}
    assert codes(big) == [("schema_too_large", "")]
    deep: dict = {}
    node = deep
    for _ in range(MAX_SCHEMA_DEPTH + 1):
        node["not"] = {}
        node = node["not"]
    assert codes(deep)[0][0] == "schema_too_deep"
    wide = {"properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_NODES)}}
    assert codes(wide) == [("schema_too_large", "")]
    # Each definition uses the previous one twice: 2**30 nodes to check a value, in 1 KB.
    defs = {"d0": {"type": "string"}}
    for i in range(1, 31):
        defs[f"d{i}"] = {"anyOf": [{"$ref": f"#/$defs/d{i - 1}"}, {"$ref": f"#/$defs/d{i - 1}"}]}
    assert codes({"$defs": defs, "$ref": "#/$defs/d30"}) == [("schema_too_large", "")]
    # A chain of references deeper than Python's stack is refused too, not a crash.
    chain = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(MAX_SCHEMA_NODES - 10)}
    chain[f"d{MAX_SCHEMA_NODES - 10}"] = {"type": "string"}
    assert codes({"$defs": chain, "$ref": "#/$defs/d0"}) == [("schema_too_large", "")]


def test_invalid_json_schema_is_reported_at_the_bad_keyword() -> None:
    assert codes({"type": "object", "required": "reply"}, "/schema") == [
        ("invalid_json_schema", "/schema/required")
    ]
    assert codes(["not", "an", "object"]) == [("invalid_json_schema", "")]


# --- run time: a schema stored before the rules ---------------------------------------------------


def test_validating_never_fetches_a_url_or_reads_a_file(recorder, secret_file) -> None:
    for ref in (f"{recorder.url}/schema.json", secret_file.as_uri(), "relative.json"):
        for keyword in ("$ref", "$dynamicRef"):
            validator = schema_validator({"properties": {"a": {keyword: ref}}})
            errors = list(validator.iter_errors({"a": "anything"}))
            assert errors, "an unfollowable reference fails the value, it never passes it"
            text = " ".join(e.message for e in errors)
            assert "cannot be followed" in text
            assert MARKER not in text
    assert recorder.hits == []


def test_the_stock_validator_would_fetch_so_the_test_above_means_something(recorder) -> None:
    # Guards the test: jsonschema's default registry does fetch (with a deprecation warning).
    stock = jsonschema.Draft202012Validator({"$ref": f"{recorder.url}/schema.json"})
    with pytest.warns(DeprecationWarning, match="remote"):
        errors = list(stock.iter_errors("x"))
    assert recorder.hits == ["/schema.json"]
    assert MARKER in errors[0].message


def test_a_reference_loop_is_an_error_not_a_crash() -> None:
    schema = {
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "$ref": "#/$defs/a",
    }
    errors = list(schema_validator(schema).iter_errors(1))
    assert "loops without end" in errors[0].message


def test_a_pattern_never_runs_on_a_text_past_the_bound() -> None:
    validator = schema_validator(
        {"properties": {"s": {"pattern": "^a"}}, "patternProperties": {"^a": {}}}
    )
    long = "a" * (MAX_REGEX_INPUT_CHARS + 1)
    messages = [e.message for e in validator.iter_errors({"s": long})]
    assert any("longer than the" in m for m in messages)
    messages = [e.message for e in validator.iter_errors({long: 1})]
    assert any("property name" in m for m in messages)
    assert list(validator.iter_errors({"s": "abc"})) == []


@pytest.mark.parametrize("keyword", ["additionalProperties", "unevaluatedProperties"])
def test_a_long_property_name_is_not_matched_through_the_other_keywords(
    keyword, monkeypatch
) -> None:
    """``additionalProperties`` and ``unevaluatedProperties`` match every name against the
    sibling ``patternProperties`` themselves (jsonschema's ``_utils``): the bound holds there too."""
    import re
    import types

    from jsonschema import _utils

    matched: list[int] = []

    def search(pattern, text, *args):
        matched.append(len(text))
        return re.search(pattern, text, *args)

    monkeypatch.setattr(_utils, "re", types.SimpleNamespace(search=search))
    validator = schema_validator({"patternProperties": {"^a": {}}, keyword: False})
    long = "b" * (MAX_REGEX_INPUT_CHARS + 1)

    messages = [e.message for e in validator.iter_errors({long: 1})]

    assert any("property name" in m for m in messages)
    assert all(size <= MAX_REGEX_INPUT_CHARS for size in matched)
    assert list(validator.iter_errors({"abc": 1})) == []
