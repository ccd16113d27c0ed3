"""The SDK's variable check (promptregistry.core.variables) against the server's
(registry.variables): the same values to render with, or the same problems (codes, details and
JSON Pointers), on generated declarations and values. Pure."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from promptregistry.core.variables import VariableSpec as SdkSpec
from promptregistry.core.variables import variables_validate as sdk_validate
from promptregistry.errors import VariablesInvalid as SdkInvalid

from registry.errors import VariablesInvalid as ServerInvalid
from registry.variables import VariableSpec as ServerSpec
from registry.variables import VariableType
from registry.variables import variables_validate as server_validate

# Names that collide, nearly collide ("customer_nam"), or need escaping in a JSON Pointer.
NAMES = ["customer_name", "customer_nam", "order_id", "tone", "a/b", "t~x", "items", "n"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included: they are not JSON numbers
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
        st.dictionaries(st.integers(), inner, min_size=1, max_size=2),  # non-string keys
    ),
    max_leaves=6,
)
# What JSON cannot carry, which a Python caller can still pass.
foreign = st.one_of(st.tuples(st.integers()), st.sets(st.integers(), max_size=2), st.binary())


@st.composite
def spec_dicts(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Declarations as a bundle carries them (committed ones are well formed, but the check must
    agree on odd ones too: an unknown type, a required variable with a default)."""
    names = draw(st.lists(st.sampled_from(NAMES), max_size=5, unique=True))
    specs = []
    for name in names:
        spec: dict[str, Any] = {"name": name}
        if draw(st.booleans()):
            spec["type"] = draw(st.sampled_from([*(t.value for t in VariableType), "date"]))
        if draw(st.booleans()):
            spec["required"] = draw(st.booleans())
        if draw(st.booleans()):
            spec["default"] = draw(json_values)
        specs.append(spec)
    return specs


def server_outcome(specs: list[dict[str, Any]], values: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("ok", server_validate([ServerSpec.from_dict(s) for s in specs], values))
    except ServerInvalid as exc:
        return (exc.message, [p.as_dict() for p in exc.problems])


def sdk_outcome(specs: list[Any], values: dict[str, Any]) -> tuple[str, Any]:
    try:
        return ("ok", sdk_validate(specs, values))
    except SdkInvalid as exc:
        return (exc.message, exc.errors)


@given(
    specs=spec_dicts(),
    values=st.dictionaries(
        st.one_of(st.sampled_from(NAMES), st.text(max_size=6)),
        st.one_of(json_values, foreign),
        max_size=5,
    ),
)
def test_the_sdk_check_gives_the_server_answer(specs, values):
    expected = server_outcome(specs, values)

    assert sdk_outcome(specs, values) == expected
    assert sdk_outcome([SdkSpec.from_dict(s) for s in specs], values) == expected


def test_a_default_is_a_copy_so_a_caller_cannot_change_the_bundle():
    specs = [{"name": "items", "type": "list", "required": False, "default": ["a"]}]

    sdk_validate(specs, {})["items"].append("changed")

    assert sdk_validate(specs, {})["items"] == ["a"]
    assert specs[0]["default"] == ["a"]


def test_every_problem_is_listed_with_the_server_pointer():
    specs = [
        {"name": "customer_name", "type": "string"},
        {"name": "order_total", "type": "number", "required": False},
        {"name": "a/b", "type": "integer"},
    ]

    with pytest.raises(SdkInvalid) as caught:
        sdk_validate(specs, {"customer_nam": "Zoé", "order_total": True, "a/b": 3.0})

    assert caught.value.errors == [
        {
            "code": "unknown_variable",
            "detail": "'customer_nam' is not a variable of this version; did you mean "
            "'customer_name'?",
            "pointer": "/variables/customer_nam",
        },
        {
            "code": "missing_variable",
            "detail": "The variable 'customer_name' is required.",
            "pointer": "/variables/customer_name",
        },
        {
            "code": "wrong_type",
            "detail": "'order_total' must be a number, not a boolean.",
            "pointer": "/variables/order_total",
        },
        {
            "code": "wrong_type",
            "detail": "'a/b' must be an integer, not a number.",
            "pointer": "/variables/a~1b",
        },
    ]
    assert "customer_name" in str(caught.value)


def test_optional_variables_left_out_get_their_default_or_none():
    specs = [
        {"name": "tone", "type": "string", "required": False, "default": "friendly"},
        {"name": "n", "type": "integer", "required": False},
    ]

    assert sdk_validate(specs, {"n": None}) == {"tone": "friendly", "n": None}


def test_suggestions_and_unknown_names_are_bounded(monkeypatch):
    """A body of many (long) unknown names costs a few comparisons, not one per name (issue 12,
    finding 7a: 1 MiB of them once took ~47 s in difflib)."""
    from promptregistry.core import variables as core

    specs = [{"name": "customer_name", "type": "string", "required": False}]
    names = [f"customer_nam{i}" for i in range(1000)] + ["customer_nam" + "e" * 5000]
    calls = []
    real = core.difflib.get_close_matches

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(core.difflib, "get_close_matches", counted)
    with pytest.raises(SdkInvalid) as caught:
        sdk_validate(specs, dict.fromkeys(names, 1))

    assert len(calls) == core.MAX_SUGGESTIONS
    errors = caught.value.errors
    assert len(errors) == core.MAX_UNKNOWN_LISTED + 1
    assert all(e["code"] == "unknown_variable" for e in errors[:-1])
    assert "did you mean 'customer_name'?" in errors[0]["detail"]
    assert errors[core.MAX_SUGGESTIONS]["detail"].endswith("is not a variable of this version.")
    assert errors[-1] == {
        "code": "more_unknown_variables",
        "detail": f"And {1001 - core.MAX_UNKNOWN_LISTED} more unknown variables, not listed.",
        "pointer": "/variables",
    }


def test_a_long_unknown_name_gets_no_suggestion_and_a_shortened_detail():
    from promptregistry.core import variables as core

    long_name = "customer_name" + "x" * 500
    with pytest.raises(SdkInvalid) as caught:
        sdk_validate([{"name": "customer_name", "required": False}], {long_name: 1})

    (error,) = caught.value.errors
    assert error["pointer"] == "/variables/" + long_name
    assert "did you mean" not in error["detail"]
    assert len(error["detail"]) < len(long_name)
    assert len(long_name) > core.MAX_SUGGESTED_NAME_CHARS
