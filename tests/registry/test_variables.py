"""Declared variables and the check of a caller's values (registry.variables): pure, no database."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from registry.errors import Problem, VariablesInvalid
from registry.variables import (
    VariableSpec,
    VariableType,
    variable_specs_check,
    variables_validate,
)


def codes(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(problem.code, problem.pointer) for problem in problems]


def raw(**fields: Any) -> VariableSpec:
    """A spec as an API body may send it: unvalidated, possibly of the wrong kinds."""
    return VariableSpec.from_dict(fields)


def invalid(specs: list[VariableSpec], values: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(VariablesInvalid) as caught:
        variables_validate(specs, values)
    return codes(caught.value.problems)


# --- VariableSpec ---------------------------------------------------------------------------------


def test_a_spec_is_a_required_string_by_default() -> None:
    spec = VariableSpec("customer_name")
    assert (spec.type, spec.required, spec.default, spec.description) == (
        VariableType.STRING,
        True,
        None,
        "",
    )


def test_as_dict_and_from_dict_round_trip() -> None:
    spec = VariableSpec("tags", VariableType.LIST, required=False, default=["a"], description="d")
    data = spec.as_dict()
    assert data == {
        "name": "tags",
        "type": "list",
        "required": False,
        "default": ["a"],
        "description": "d",
    }
    assert VariableSpec.from_dict(data) == spec


def test_as_dict_copies_the_default() -> None:
    spec = VariableSpec("tags", VariableType.LIST, required=False, default=["a"])
    data = spec.as_dict()
    data["default"].append("b")  # type: ignore[attr-defined]
    assert spec.default == ["a"]


def test_from_dict_reads_the_type_from_a_string() -> None:
    assert VariableSpec.from_dict({"name": "n", "type": "integer"}).type is VariableType.INTEGER


def test_from_dict_does_not_validate_and_keeps_what_it_was_given() -> None:
    spec = VariableSpec.from_dict({"name": 5, "type": "text", "required": "yes"})
    assert spec.as_dict() == {
        "name": 5,
        "type": "text",
        "required": "yes",
        "default": None,
        "description": "",
    }
    assert codes(variable_specs_check([spec])) == [
        ("invalid_name", "/variables/0/name"),
        ("invalid_type", "/variables/0/type"),
        ("invalid_required", "/variables/0/required"),
    ]


def test_from_dict_makes_a_variable_with_a_default_optional() -> None:
    assert VariableSpec.from_dict({"name": "tone", "default": "warm"}).required is False
    assert VariableSpec.from_dict({"name": "tone"}).required is True
    explicit = VariableSpec.from_dict({"name": "tone", "default": "warm", "required": True})
    assert explicit.required is True


# --- variable_specs_check -------------------------------------------------------------------------


def test_good_declarations_have_no_problems() -> None:
    specs = [
        VariableSpec("customer_name", description="Who we write to."),
        VariableSpec("order_count", VariableType.INTEGER),
        VariableSpec("total", VariableType.NUMBER, required=False, default=9.5),
        VariableSpec("vip", VariableType.BOOLEAN, required=False, default=False),
        VariableSpec("items", VariableType.LIST, required=False, default=[]),
        VariableSpec("order", VariableType.OBJECT, required=False),
        VariableSpec("match"),  # soft keywords are fine
    ]
    assert variable_specs_check(specs) == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "1st",
        "first-name",
        "first name",
        "_private",
        "__class__",
        "class",
        "None",
        "true",
        "loop",
        "self",
        "range",
        "namespace",
        "snippet",
        "café",
        "x\n",
    ],
)
def test_a_bad_name_is_a_problem(name: str) -> None:
    assert codes(variable_specs_check([VariableSpec("ok"), VariableSpec(name)])) == [
        ("invalid_name", "/variables/1/name")
    ]


def test_a_name_longer_than_64_characters_is_a_problem() -> None:
    assert variable_specs_check([VariableSpec("a" * 64)]) == []
    assert codes(variable_specs_check([VariableSpec("a" * 65)])) == [
        ("name_too_long", "/variables/0/name")
    ]


def test_a_name_declared_twice_is_a_problem() -> None:
    specs = [VariableSpec("a"), VariableSpec("b"), VariableSpec("a")]
    assert codes(variable_specs_check(specs)) == [("duplicate_variable", "/variables/2/name")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (raw(name="a", type="text"), ("invalid_type", "/variables/0/type")),
        (raw(name="a", required="no"), ("invalid_required", "/variables/0/required")),
        (
            VariableSpec("a", VariableType.INTEGER, required=False, default="3"),
            ("invalid_default", "/variables/0/default"),
        ),
        (
            VariableSpec("a", VariableType.INTEGER, required=False, default=True),
            ("invalid_default", "/variables/0/default"),
        ),
        (
            VariableSpec("a", VariableType.NUMBER, required=False, default=math.inf),
            ("invalid_default", "/variables/0/default"),
        ),
        (VariableSpec("a", default="x"), ("required_with_default", "/variables/0/required")),
        (
            VariableSpec("a", description="x" * 501),
            ("description_too_long", "/variables/0/description"),
        ),
        (raw(name="a", description=5), ("invalid_description", "/variables/0/description")),
    ],
)
def test_each_declaration_problem_points_at_its_field(
    spec: VariableSpec, expected: tuple[str, str]
) -> None:
    assert codes(variable_specs_check([spec])) == [expected]


def test_every_problem_is_reported_at_once() -> None:
    specs = [
        raw(name="1x", type="text", default=3, required=True),
        VariableSpec("ok", description="d" * 501),
    ]
    assert codes(variable_specs_check(specs)) == [
        ("invalid_name", "/variables/0/name"),
        ("invalid_type", "/variables/0/type"),
        ("required_with_default", "/variables/0/required"),
        ("description_too_long", "/variables/1/description"),
    ]


def test_the_pointer_prefix_can_be_chosen() -> None:
    problems = variable_specs_check([VariableSpec("")], pointer="/content/variables")
    assert codes(problems) == [("invalid_name", "/content/variables/0/name")]


# --- variables_validate -------------------------------------------------------------------------

SPECS = [
    VariableSpec("customer_name"),
    VariableSpec("order_count", VariableType.INTEGER),
    VariableSpec("tone", required=False, default="friendly"),
    VariableSpec("notes", VariableType.LIST, required=False, default=["none"]),
    VariableSpec("order", VariableType.OBJECT, required=False),
]


def test_valid_values_come_back_with_defaults_in_declaration_order() -> None:
    values = variables_validate(SPECS, {"order_count": 2, "customer_name": "Ann"})
    assert values == {
        "customer_name": "Ann",
        "order_count": 2,
        "tone": "friendly",
        "notes": ["none"],
        "order": None,
    }
    assert list(values) == [spec.name for spec in SPECS]


def test_defaults_are_copies() -> None:
    values = variables_validate(SPECS, {"order_count": 2, "customer_name": "Ann"})
    values["notes"].append("changed")  # type: ignore[attr-defined]
    assert SPECS[3].default == ["none"]


def test_a_given_optional_value_wins_over_the_default() -> None:
    values = variables_validate(SPECS, {"customer_name": "Ann", "order_count": 1, "tone": "dry"})
    assert values["tone"] == "dry"


def test_null_for_an_optional_variable_means_left_out() -> None:
    values = variables_validate(SPECS, {"customer_name": "Ann", "order_count": 1, "tone": None})
    assert values["tone"] == "friendly"


def test_null_for_a_required_variable_is_missing() -> None:
    assert invalid(SPECS, {"customer_name": None, "order_count": 1}) == [
        ("missing_variable", "/variables/customer_name")
    ]


def test_every_problem_is_listed_in_one_error() -> None:
    problems = invalid(SPECS, {"customer": "Ann", "order_count": "2", "tone": 3})
    assert problems == [
        ("unknown_variable", "/variables/customer"),
        ("missing_variable", "/variables/customer_name"),
        ("wrong_type", "/variables/order_count"),
        ("wrong_type", "/variables/tone"),
    ]


def test_an_unknown_variable_suggests_a_near_name() -> None:
    with pytest.raises(VariablesInvalid) as caught:
        variables_validate(SPECS, {"customer_nme": "Ann", "customer_name": "A", "order_count": 1})
    assert "did you mean 'customer_name'?" in caught.value.problems[0].detail


def test_the_wrong_type_detail_says_what_was_expected_and_what_came() -> None:
    with pytest.raises(VariablesInvalid) as caught:
        variables_validate(SPECS, {"customer_name": "A", "order_count": "2"})
    assert caught.value.problems[0].detail == "'order_count' must be an integer, not a string."


def test_pointers_escape_slash_and_tilde() -> None:
    assert invalid([], {"a/b~c": 1}) == [("unknown_variable", "/variables/a~1b~0c")]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (VariableType.INTEGER, True),
        (VariableType.INTEGER, 3.0),
        (VariableType.NUMBER, False),
        (VariableType.NUMBER, math.nan),
        (VariableType.NUMBER, -math.inf),
        (VariableType.NUMBER, "3"),
        (VariableType.BOOLEAN, 1),
        (VariableType.STRING, 3),
        (VariableType.LIST, ("a",)),
        (VariableType.LIST, "abc"),
        (VariableType.OBJECT, {1: "a"}),
        (VariableType.OBJECT, [("a", 1)]),
    ],
)
def test_json_types_are_strict(kind: VariableType, value: object) -> None:
    assert invalid([VariableSpec("v", kind)], {"v": value}) == [("wrong_type", "/variables/v")]


def test_an_integer_is_a_number() -> None:
    assert variables_validate([VariableSpec("v", VariableType.NUMBER)], {"v": 3}) == {"v": 3}


# --- properties ---------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
VALUES: dict[VariableType, st.SearchStrategy[Any]] = {
    VariableType.STRING: st.text(),
    VariableType.INTEGER: st.integers(),
    VariableType.NUMBER: st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    VariableType.BOOLEAN: st.booleans(),
    VariableType.LIST: st.lists(json_scalars, max_size=5),
    VariableType.OBJECT: st.dictionaries(st.text(max_size=5), json_scalars, max_size=5),
    VariableType.MESSAGES: st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant"]), "content": st.text()}
            ),
            st.fixed_dictionaries(
                {
                    "role": st.just("tool"),
                    "content": st.text(),
                    "tool_call_id": st.text(min_size=1, max_size=40),
                }
            ),
        ),
        max_size=5,
    ),
}
# Values that belong to one type only: an integer is also a number, so NUMBER's own are floats.
ONLY = {**VALUES, VariableType.NUMBER: st.floats(allow_nan=False, allow_infinity=False)}
# What each type accepts besides its own values. A history is a list, and a list given for a
# history is judged entry by entry (tests/registry/test_history.py), not refused by its type.
ALSO_ACCEPTS = {
    VariableType.NUMBER: {VariableType.INTEGER},
    VariableType.LIST: {VariableType.MESSAGES},
    VariableType.MESSAGES: {VariableType.LIST},
}


@given(st.sampled_from(list(VariableType)), st.data())
def test_any_value_of_the_declared_type_passes(kind: VariableType, data: st.DataObject) -> None:
    value = data.draw(VALUES[kind])
    assert variables_validate([VariableSpec("v", kind)], {"v": value}) == {"v": value}


@given(st.sampled_from(list(VariableType)), st.sampled_from(list(VariableType)), st.data())
def test_a_value_of_another_type_fails(
    kind: VariableType, other: VariableType, data: st.DataObject
) -> None:
    if other is kind or other in ALSO_ACCEPTS.get(kind, set()):
        return
    value = data.draw(ONLY[other])
    assert invalid([VariableSpec("v", kind)], {"v": value}) == [("wrong_type", "/variables/v")]


@given(
    st.sampled_from(list(VariableType)),
    st.one_of(st.tuples(st.integers()), st.sets(st.integers()), st.just(object()), st.binary()),
)
def test_values_json_cannot_carry_fail_every_type(kind: VariableType, value: object) -> None:
    assert invalid([VariableSpec("v", kind)], {"v": value}) == [("wrong_type", "/variables/v")]
