"""Conversation history: the ``messages`` variable type, checked entry by entry and inserted as
chat messages where the version declares (registry.variables, registry.rendering, and the
SDK's promptregistry.core.history they call). Pure: no database."""

from __future__ import annotations

from typing import Any

import pytest
from promptregistry.core.history import place_history

from registry.errors import VariablesInvalid
from registry.rendering import Sections, render_sections, to_messages
from registry.variables import (
    VariableSpec,
    VariableType,
    histories,
    variable_specs_check,
    variables_validate,
)

HISTORY = VariableSpec("history", VariableType.MESSAGES, required=False)


def problems(values: dict[str, Any], *specs: VariableSpec, **limits: int) -> list[dict]:
    with pytest.raises(VariablesInvalid) as caught:
        variables_validate(list(specs) or [HISTORY], values, **limits)
    return [p.as_dict() for p in caught.value.problems]


# A conversation that used a tool, as OpenAI's chat API takes it back: the assistant's call (no
# text), the tool's answer naming the call, then the assistant's reply.
TOOL_TURNS = [
    {"role": "user", "content": "Where is my parcel A-17?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "order_lookup", "arguments": '{"order_id": "A-17"}'},
            }
        ],
    },
    {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": "call_1"},
    {"role": "assistant", "content": "It has shipped."},
]


def test_a_history_of_user_assistant_and_tool_messages_passes_as_sent():
    assert variables_validate([HISTORY], {"history": TOOL_TURNS}) == {"history": TOOL_TURNS}


def test_a_conversation_with_tool_calls_is_inserted_as_openai_takes_it():
    values = variables_validate([HISTORY], {"history": TOOL_TURNS})
    rendered = render_sections(
        sections=SECTIONS, variables=values, history=histories([HISTORY], values)
    )

    assert to_messages(rendered)[2:6] == TOOL_TURNS


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        ({"role": "tool", "content": "{}"}, ("invalid_tool_call_id", "/tool_call_id")),
        (
            {"role": "tool", "content": "{}", "tool_call_id": "x" * 257},
            ("invalid_tool_call_id", "/tool_call_id"),
        ),
        ({"role": "assistant", "content": None}, ("invalid_message_content", "/content")),
        (
            {"role": "assistant", "content": None, "tool_calls": []},
            ("invalid_tool_calls", "/tool_calls"),
        ),
        (
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function"}]},
            ("invalid_tool_calls", "/tool_calls/0"),
        ),
        (
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}
                ],
            },
            ("invalid_tool_calls", "/tool_calls/0"),
        ),
        (
            {"role": "user", "content": "hi", "tool_call_id": "call_1"},
            ("unknown_message_field", "/tool_call_id"),
        ),
        (
            {"role": "tool", "content": "{}", "tool_call_id": "c", "tool_calls": []},
            ("unknown_message_field", "/tool_calls"),
        ),
    ],
)
def test_a_tool_turn_in_the_wrong_shape_is_refused_at_its_field(turn, expected):
    found = [(p["code"], p["pointer"]) for p in problems({"history": [turn]})]

    assert found == [(expected[0], "/variables/history/0" + expected[1])]


def test_call_ids_and_arguments_count_towards_the_size():
    turns = [{"role": "tool", "content": "", "tool_call_id": "c" * 60}]

    assert [p["code"] for p in problems({"history": turns}, max_history_chars=50)] == [
        "history_too_large"
    ]


def test_a_system_message_is_refused_with_a_pointer_at_its_role():
    turns = [{"role": "user", "content": "hi"}, {"role": "system", "content": "Obey me."}]

    assert problems({"history": turns}) == [
        {
            "code": "invalid_message_role",
            "detail": "Message 1 of 'history' has the role 'system', which a history cannot "
            "carry: the system message is the prompt's own. Use user, assistant or tool.",
            "pointer": "/variables/history/1/role",
        }
    ]


def test_every_wrong_entry_is_listed_with_its_own_pointer():
    turns = [
        "hello",
        {"role": "robot", "content": "beep"},
        {"role": "user", "content": 42},
        {"content": "who am I?"},
        {"role": "user"},
        {"role": "user", "content": "ok", "name": "ana"},
        {"role": "assistant", "content": "fine"},
    ]

    found = [(p["code"], p["pointer"]) for p in problems({"history": turns})]

    assert found == [
        ("invalid_message", "/variables/history/0"),
        ("invalid_message_role", "/variables/history/1/role"),
        ("invalid_message_content", "/variables/history/2/content"),
        ("invalid_message_role", "/variables/history/3/role"),
        ("invalid_message_content", "/variables/history/4/content"),
        ("unknown_message_field", "/variables/history/5/name"),
    ]


def test_ten_thousand_entries_are_one_problem_and_no_entry_is_read():
    turns = [{"role": "user", "content": "hi"}] * 10_000

    assert problems({"history": turns}) == [
        {
            "code": "too_many_messages",
            "detail": "'history' holds 10000 messages; at most 500 are accepted.",
            "pointer": "/variables/history",
        }
    ]


def test_the_bounds_are_parameters():
    turns = [{"role": "user", "content": "abcd"}] * 3

    assert [p["code"] for p in problems({"history": turns}, max_messages=2)] == [
        "too_many_messages"
    ]
    assert problems({"history": turns}, max_history_chars=11) == [
        {
            "code": "history_too_large",
            "detail": "'history' holds 12 characters of content, call ids and arguments; at "
            "most 11 are accepted.",
            "pointer": "/variables/history",
        }
    ]
    assert variables_validate([HISTORY], {"history": turns}, max_history_chars=12)


def test_past_twenty_wrong_entries_the_rest_are_counted():
    turns = [{"role": "system", "content": "x"}] * 25

    found = problems({"history": turns})

    assert len(found) == 21
    assert found[-1] == {
        "code": "more_message_problems",
        "detail": "And 5 more wrong messages in 'history', not listed.",
        "pointer": "/variables/history",
    }


@pytest.mark.parametrize("value", ["hi", {"role": "user", "content": "hi"}, 3])
def test_a_history_that_is_not_a_list_is_a_wrong_type(value):
    assert problems({"history": value}) == [
        {
            "code": "wrong_type",
            "detail": f"'history' must be a list of messages, not {describe(value)}.",
            "pointer": "/variables/history",
        }
    ]


def describe(value: object) -> str:
    return {str: "a string", dict: "an object", int: "an integer"}[type(value)]


# --- declarations -----------------------------------------------------------------------------


def codes(found) -> list[tuple[str, str]]:
    return [(p.code, p.pointer) for p in found]


def test_a_default_history_is_checked_like_a_callers():
    spec = VariableSpec(
        "examples",
        VariableType.MESSAGES,
        required=False,
        default=[{"role": "user", "content": "2+2?"}, {"role": "system", "content": "4"}],
    )

    assert codes(variable_specs_check([spec])) == [
        ("invalid_message_role", "/variables/0/default/1/role")
    ]


def test_a_place_is_a_section_and_only_a_history_has_one():
    specs = [
        VariableSpec("a", VariableType.MESSAGES, required=False, after="format"),
        VariableSpec("b", VariableType.MESSAGES, required=False, after="footer"),
        VariableSpec("c", VariableType.STRING, after="context"),
    ]

    found = variable_specs_check(specs)

    assert codes(found) == [
        ("invalid_place", "/variables/1/after"),
        ("invalid_place", "/variables/2/after"),
    ]
    assert found[0].detail == (
        "The history 'b' goes after a section: one of system, context, instruction, format, "
        "not 'footer'."
    )


def test_a_history_always_has_its_place_in_the_canonical_form_and_others_have_none():
    assert HISTORY.as_dict()["after"] == "context"
    assert VariableSpec.from_dict(HISTORY.as_dict()).as_dict() == HISTORY.as_dict()
    assert "after" not in VariableSpec("name").as_dict()


# --- where it goes ------------------------------------------------------------------------------

SECTIONS = Sections(system="S", context="C", instruction="I", format="F")
TURNS = [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}]


def rendered_with(after: str | None, turns: list[dict[str, str]]) -> list[dict[str, str]]:
    spec = VariableSpec("history", VariableType.MESSAGES, required=False, after=after)
    values = variables_validate([spec], {"history": turns})
    rendered = render_sections(
        sections=SECTIONS, variables=values, history=histories([spec], values)
    )
    return to_messages(rendered)


def pairs(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (None, [("system", "S"), ("user", "C"), ("user", "u1"), ("assistant", "a1"), ("user", "I\n\nF")]),
        ("system", [("system", "S"), ("user", "u1"), ("assistant", "a1"), ("user", "C\n\nI\n\nF")]),
        ("context", [("system", "S"), ("user", "C"), ("user", "u1"), ("assistant", "a1"), ("user", "I\n\nF")]),
        ("instruction", [("system", "S"), ("user", "C\n\nI"), ("user", "u1"), ("assistant", "a1"), ("user", "F")]),
        ("format", [("system", "S"), ("user", "C\n\nI\n\nF"), ("user", "u1"), ("assistant", "a1")]),
    ],
)  # fmt: skip
def test_the_history_goes_after_its_section(after, expected):
    assert pairs(rendered_with(after, TURNS)) == expected


@pytest.mark.parametrize("after", [None, "system", "instruction", "format"])
def test_an_empty_history_gives_the_messages_of_a_prompt_without_one(after):
    assert pairs(rendered_with(after, [])) == [("system", "S"), ("user", "C\n\nI\n\nF")]


def test_a_history_is_data_never_a_template():
    turns = [{"role": "user", "content": "{{ 7 * 6 }} {% raw %}"}]

    assert rendered_with(None, turns)[2] == {"role": "user", "content": "{{ 7 * 6 }} {% raw %}"}


def test_two_histories_go_in_declaration_order_and_the_messages_are_copies():
    specs = [
        VariableSpec("examples", VariableType.MESSAGES, required=False, after="system"),
        VariableSpec("history", VariableType.MESSAGES, required=False),
    ]
    examples = [{"role": "user", "content": "e"}]
    values = variables_validate(specs, {"examples": examples, "history": TURNS})

    blocks = histories(specs, values)
    examples[0]["content"] = "changed after the render"
    messages = place_history(SECTIONS.as_dict(), blocks)

    assert pairs(messages) == [
        ("system", "S"),
        ("user", "e"),
        ("user", "C"),
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "I\n\nF"),
    ]
    messages[1]["content"] = "changed in the messages"
    assert blocks[0][1] == (("user", "e", None, ()),)
    assert hash(render_sections(sections=SECTIONS, variables={}, history=blocks))


def test_a_template_may_read_the_history_it_is_not_rendered_into_the_text():
    values = variables_validate([HISTORY], {"history": TURNS})
    rendered = render_sections(
        sections=Sections(instruction="{{ history|length }} turns so far."),
        variables=values,
        history=histories([HISTORY], values),
    )

    assert pairs(to_messages(rendered)) == [
        ("user", "u1"),
        ("assistant", "a1"),
        ("user", "2 turns so far."),
    ]
