"""The SDK's rendering (promptregistry.core.rendering) against the server's (registry.rendering):
the same sections and chat messages for the demo prompts, with sample and generated variables,
and the same refusals (codes, details, pointers, lines) for templates that fail. Pure."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from promptregistry.core import VersionData, version_render
from promptregistry.core import rendering as sdk
from promptregistry.core.snippets import SnippetText
from promptregistry.errors import RegistryError as SdkError
from promptregistry.errors import RenderError

from api.demo_data import PROMPTS
from registry import rendering as server
from registry.errors import ProblemsError
from registry.variables import VariableSpec, histories, variables_validate

# Sample variables for each demo prompt, as a service would send them.
SAMPLES: dict[str, dict[str, Any]] = {
    "support.refund-reply": {"customer_name": "Zoé", "order_id": "A-17", "refund_amount": 42.5},
    "support.ticket-triage": {"ticket": "Where is my parcel?\nOrdered two weeks ago. Chargeback?"},
    "marketing.product-description": {
        "product_name": "Trail 40 backpack",
        "features": ["40 litres", "rain cover", "hip belt"],
        "tone": "playful",
    },
    "engineering.code-review-summary": {
        "diff": "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n",
        "max_items": 3,
    },
    "sales.meeting-recap": {
        "transcript": "Ana: we sign in May.\nBo: pricing next week.",
        "attendees": ["Ana", "Bo"],
    },
    "search.query-rewrite": {"query": "gtx boots wmns 38"},
    "support.faq": {"question": "Where is my order?"},
    "brand.voice": {},
    "rules.safety": {},
    "support.agent": {
        "customer_name": "Zoé",
        "conversation": [
            {"role": "user", "content": "Where is A-17?"},
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
        ],
        "question": "When will it arrive?",
    },
}
# The demo's snippets as an environment serving each one's latest version would include them.
DEMO_SNIPPETS = {
    (prompt["key"], pinned): SnippetText(
        prompt["key"],
        pinned or len(prompt["versions"]),
        prompt["versions"][(pinned or len(prompt["versions"])) - 1]["templates"],
    )
    for prompt in PROMPTS
    if prompt.get("snippet")
    for pinned in (None, *range(1, len(prompt["versions"]) + 1))
}

# (prompt key, version number, locale) for every demo version and translation.
DEMO_CASES = [
    (prompt["key"], number, locale)
    for prompt in PROMPTS
    for number, version in enumerate(prompt["versions"], start=1)
    for locale in version["templates"]
]


def demo_version(key: str, number: int) -> dict[str, Any]:
    prompt = next(p for p in PROMPTS if p["key"] == key)
    return prompt["versions"][number - 1]


def server_outcome(
    version: dict[str, Any], locale: str, values: dict[str, Any], **limits: Any
) -> tuple[str, Any]:
    """What ``POST …/render`` computes: validate, render the locale's sections, messages.

    Without a deadline (on both sides), unless one is given: which budget refuses a heavy
    template must not depend on the machine's speed."""
    limits.setdefault("deadline_ms", None)
    try:
        specs = [VariableSpec.from_dict(v) for v in version["variables"]]
        checked = variables_validate(specs, values)
        rendered = server.render_sections(
            sections=server.Sections.from_mapping(version["templates"][locale]),
            variables=checked,
            locale=locale,
            history=histories(specs, checked),
            **limits,
        )
    except ProblemsError as exc:
        return (type(exc).__name__, exc.message, [p.as_dict() for p in exc.problems])
    return ("ok", rendered.as_dict(), server.to_messages(rendered))


def sdk_outcome(
    version: dict[str, Any], locale: str, values: dict[str, Any], **limits: Any
) -> tuple[str, Any]:
    limits.setdefault("deadline_ms", None)
    data = VersionData(
        number=1,
        content_hash="",
        variables=tuple(version["variables"]),
        model=version["model"],
        templates=version["templates"],
    )
    try:
        rendered = version_render(data, locale=locale, variables=values, **limits)
    except SdkError as exc:
        # The server splits templates that cannot run (TemplateInvalid) from renders that
        # failed (RenderFailed); the SDK's single RenderError keeps the server's message.
        kind = {
            "The prompt's templates are not valid.": "TemplateInvalid",
            "The prompt could not be rendered with these variables.": "RenderFailed",
        }.get(exc.message, type(exc).__name__)
        return (kind, exc.message, exc.errors)  # type: ignore[attr-defined]
    return ("ok", rendered, sdk.to_messages(rendered))


@pytest.mark.parametrize(("key", "number", "locale"), DEMO_CASES)
def test_a_demo_prompt_renders_as_on_the_server(key, number, locale):
    version = demo_version(key, number)

    outcome = sdk_outcome(version, locale, SAMPLES[key], snippets=DEMO_SNIPPETS)

    assert outcome == server_outcome(version, locale, SAMPLES[key], snippets=DEMO_SNIPPETS)
    assert outcome[0] == "ok"
    assert outcome[2][0]["role"] == "system"


def test_the_refund_reply_renders_what_the_customer_reads():
    _, sections, messages = sdk_outcome(
        demo_version("support.refund-reply", 3), "en", SAMPLES["support.refund-reply"]
    )

    assert sections["context"].endswith("Customers have 30 days to ask for a refund.")
    assert messages == [
        {"role": "system", "content": sections["system"]},
        {
            "role": "user",
            "content": f"{sections['context']}\n\n{sections['instruction']}\n\n{sections['format']}",
        },
    ]


# Generated values of each declared type: text with Jinja-looking and odd characters, numbers of
# every size, lists; sometimes an optional variable is left out or a required one is missing.
text = st.lists(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(["{{", "}}", "{%", "\n", " "])),
    max_size=30,
).map("".join)
BY_TYPE = {
    "string": text,
    "integer": st.integers(),
    "number": st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    "list": st.lists(st.one_of(text, st.integers()), max_size=4),
    "messages": st.lists(
        st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": text}),
        max_size=4,
    ),
}


@st.composite
def demo_values(draw: st.DrawFn) -> tuple[str, int, str, dict[str, Any]]:
    key, number, locale = draw(st.sampled_from(DEMO_CASES))
    values: dict[str, Any] = {}
    for spec in demo_version(key, number)["variables"]:
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            continue  # left out: the default, or a missing_variable on both sides
        values[spec["name"]] = draw(BY_TYPE[spec.get("type", "string")])
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        values["unexpected"] = draw(text)
    return key, number, locale, values


@settings(max_examples=300)
@given(demo_values())
def test_generated_values_render_as_on_the_server(case):
    key, number, locale, values = case
    version = demo_version(key, number)

    assert sdk_outcome(version, locale, values, snippets=DEMO_SNIPPETS) == server_outcome(
        version, locale, values, snippets=DEMO_SNIPPETS
    )


@pytest.mark.parametrize("max_chars", [1, 40, 120, 400])
def test_the_output_cap_refuses_the_same_renders(max_chars):
    version = demo_version("support.refund-reply", 3)
    values = SAMPLES["support.refund-reply"]

    outcome = sdk_outcome(version, "en", values, max_chars=max_chars)

    assert outcome == server_outcome(version, "en", values, max_chars=max_chars)
    if max_chars < 400:
        assert outcome[2][0]["code"] == "render_too_large"


def one_section(template: str) -> dict[str, Any]:
    return {
        "variables": [
            {"name": "items", "type": "list", "required": False, "default": [3, 1, 2]},
            {"name": "profile", "type": "object", "required": False, "default": {"a": 1}},
        ],
        "model": {},
        "templates": {"fr": {"system": "Bonjour.", "instruction": template}},
    }


# Each of these fails (or nearly fails) on the server; the SDK must answer alike, to the letter.
TEMPLATES = [
    "{{ missing }}",
    "{{ profile.b }}",
    "{{ profile['b'] }}",
    "{{ 1 / 0 }}",
    "{{ items.__class__ }}",
    "{{ items|attr('__class__') }}",
    "{% set n = '__cla' ~ 'ss__' %}{{ items|attr(n) }}",  # refused at run time, not statically
    "{{ '{0.__class__}'.format(items) }}",
    "{{ items.append(4) }}",
    "{% include 'other' %}",
    "{{ items|nosuchfilter }}",
    "{% if items is nosuchtest %}x{% endif %}",
    "{% if %}",
    "line one\n{{ 'x' * 10000000 }}",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}",
    "{{ range(200000)|list }}",
    "{{ lipsum(100000) }}",
    "{{ items|map('string') }}",
    "{{ cycler }}",
    "{{ '%*d' % (10000000, 1) }}",
    "{{ 'ab'|center(10000000) }}",
    "{{ 10 ** 100000 }}",
    "{{ items|join(', ') }} / {{ items|sort|list }} / {{ profile|tojson }}",
    "{% set ns = namespace(n=0) %}{% for i in items %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
    "{{ items|sum }} {{ items|max }} {{ '%.2f'|format(3.14159) }}",
    "   padded {{ items|first }}   \n\n",
]


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_failing_or_tricky_template_gets_the_server_answer(template):
    version = one_section(template)

    outcome = sdk_outcome(version, "fr", {})

    assert outcome == server_outcome(version, "fr", {})


def test_a_forbidden_access_names_section_locale_and_line():
    with pytest.raises(RenderError) as caught:
        sdk.render_sections(
            sections={"context": "ok\n{{ x.__class__ }}"}, variables={"x": 1}, locale="fr"
        )

    assert caught.value.errors == [
        {
            "code": "template_forbidden",
            "detail": "The context section (fr), line 2: Templates cannot reach the attribute "
            "'__class__'.",
            "pointer": "/templates/fr/context",
            "line": 2,
        }
    ]


def test_an_unknown_section_is_refused_rather_than_dropped():
    with pytest.raises(RenderError) as caught:
        sdk.render_sections(sections={"instructions": "Hi"}, variables={})

    assert [e["code"] for e in caught.value.errors] == ["unknown_section"]


@pytest.mark.parametrize(
    "limits", [{"max_steps": 0}, {"max_chars": 0}, {"deadline_ms": 0}, {"deadline_ms": -1}]
)
def test_limits_must_be_positive(limits):
    with pytest.raises(ValueError, match="positive"):
        sdk.render_sections(sections={"system": "x"}, variables={}, **limits)
    compiled = sdk.compile_sections({"system": "x"})
    with pytest.raises(ValueError, match="positive"):  # the compiled path checks them too
        sdk.render_compiled(compiled, variables={}, **limits)


def test_a_section_compiles_once():
    sdk.compile_cache_clear()
    sections = {"system": "Hello {{ name }}", "instruction": "Bye {{ name }}"}

    for _ in range(3):
        sdk.render_sections(sections=sections, variables={"name": "Ana"})

    info = sdk.compile_cache_info()
    assert (info.misses, info.hits, info.size) == (2, 4, 2)


@pytest.mark.parametrize(
    ("sections", "messages"),
    [
        ({"system": "", "context": "", "instruction": "", "format": ""}, []),
        ({"system": "S", "context": "", "instruction": "", "format": ""}, [("system", "S")]),
        ({"system": "", "context": "C", "instruction": "", "format": "F"}, [("user", "C\n\nF")]),
        (
            {"system": "S", "context": "C", "instruction": "I", "format": "F"},
            [("system", "S"), ("user", "C\n\nI\n\nF")],
        ),
    ],
)
def test_messages_are_the_server_messages(sections, messages):
    expected = [{"role": role, "content": content} for role, content in messages]

    assert sdk.to_messages(sections) == expected
    assert server.to_messages(server.Sections(**sections)) == expected


# --- conversation history (a ``messages`` variable) ----------------------------------------------


def chat_version(after: str | None) -> dict[str, Any]:
    """A chat prompt: a history placed ``after`` a section (None: the default place)."""
    history: dict[str, Any] = {"name": "history", "type": "messages", "required": False}
    if after is not None:
        history["after"] = after
    return {
        "variables": [
            {"name": "question", "type": "string"},
            {
                "name": "examples",
                "type": "messages",
                "required": False,
                "after": "system",
                "default": [
                    {"role": "user", "content": "Is 7 prime?"},
                    {"role": "assistant", "content": "Yes."},
                ],
            },
            history,
        ],
        "model": {},
        "templates": {
            "en": {
                "system": "You answer in one line.",
                "context": "Known facts: {{ (history or [])|length }} turns so far.",
                "instruction": "{{ question }}",
                "format": "Answer in English.",
            }
        },
    }


TURNS = [
    {"role": "user", "content": "Hello {{ question }}"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "tool", "content": '{"ok": true}', "tool_call_id": "call_1"},
]


@pytest.mark.parametrize("after", [None, "system", "context", "instruction", "format"])
@pytest.mark.parametrize("turns", [TURNS, [], None])
def test_a_history_is_placed_as_on_the_server(after, turns):
    version = chat_version(after)
    values = {"question": "Is 9 prime?", "history": turns}

    outcome = sdk_outcome(version, "en", values)

    assert outcome == server_outcome(version, "en", values)
    roles = [m["role"] for m in outcome[2]]
    assert roles[:3] == ["system", "user", "assistant"]  # the examples, after the system
    # The user text is split only where a history goes between two of its sections.
    splits = bool(turns) and after in (None, "context", "instruction")
    assert len(outcome[2]) == 3 + (len(TURNS) if turns else 0) + (2 if splits else 1)


# Histories of every shape, right and wrong: roles (system among them), contents that are not
# strings, extra fields, entries that are not objects, lists too long or too large for the limits.
message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool"]), "content": text}
    ),
    st.fixed_dictionaries(
        {
            "role": st.one_of(st.sampled_from(["system", "robot", ""]), st.integers(), st.none()),
            "content": st.one_of(text, st.integers(), st.none(), st.lists(text, max_size=1)),
        },
        optional={"name": text, "tool_call_id": text},
    ),
    text,
    st.integers(),
)


@settings(max_examples=200)
@given(
    st.one_of(st.lists(message, max_size=30), text, st.none()),
    st.sampled_from([None, "system", "context", "instruction", "format"]),
)
def test_generated_histories_get_the_server_answer(turns, after):
    version = chat_version(after)
    values = {"question": "q", "history": turns}

    assert sdk_outcome(version, "en", values) == server_outcome(version, "en", values)


def test_the_sdk_bounds_a_history_as_the_server_does_by_default():
    version = chat_version(None)
    values = {"question": "q", "history": [{"role": "user", "content": "x" * 1000}] * 201}

    outcome = sdk_outcome(version, "en", values)

    assert outcome == server_outcome(version, "en", values)
    assert [p["code"] for p in outcome[2]] == ["history_too_large"]


# --- snippets: the same includes, the same text and the same refusals ---------------------------

SNIPPETS = {
    ("brand.voice", None): SnippetText(
        "brand.voice",
        4,
        {
            "fr": {"system": "Soyez chaleureux.", "format": "{{ snippet('rules', version=1) }}"},
            "en": {"system": "Be warm."},
        },
    ),
    ("rules", 1): SnippetText("rules", 1, {"fr": {"system": "Pas de données perso."}}),
    ("loop", None): SnippetText("loop", 1, {"fr": {"system": "{{ snippet('loop') }}"}}),
    ("english", None): SnippetText("english", 2, {"en": {"system": "English only."}}),
    ("broken", None): SnippetText("broken", 1, {"fr": {"system": "{{ 1 / 0 }}"}}),
    ("big", None): SnippetText("big", 1, {"fr": {"system": "x" * 300}}),
}

INCLUDES = [
    "{{ snippet('brand.voice') }}",
    "{{ snippet('rules', version=1) }} / {{ snippet('brand.voice') }}",
    "{{ snippet('no.such') }}",
    "{{ snippet('rules', version=2) }}",
    "{{ snippet('loop') }}",
    "{{ snippet('english') }}",
    "{{ snippet('broken') }}",
    "{% for i in range(60) %}{{ snippet('rules', version=1) }}{% endfor %}",
    "{{ snippet('big') }}{{ snippet('big') }}",
    "{{ snippet(items) }}",
    "{% set snippet = 1 %}{{ snippet }}",
]


@pytest.mark.parametrize("template", INCLUDES)
def test_an_include_gets_the_server_answer(template):
    version = one_section(template)

    outcome = sdk_outcome(version, "fr", {}, snippets=SNIPPETS, max_chars=500)

    assert outcome == server_outcome(version, "fr", {}, snippets=SNIPPETS, max_chars=500)


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("{{ snippet('no.such') }}", "snippet_unavailable"),
        ("{{ snippet('english') }}", "snippet_locale_missing"),
        ("{{ snippet('loop') }}", "snippet_too_deep"),
        (
            "{% for i in range(60) %}{{ snippet('rules', version=1) }}{% endfor %}",
            "too_many_snippets",
        ),
        ("{{ snippet('broken') }}", "snippet_error"),
        ("{{ snippet('big') }}{{ snippet('big') }}", "render_too_large"),
        ("{{ snippet(items) }}", "template_forbidden"),
    ],
)
def test_an_include_is_bounded_and_refused_with_a_clear_code(template, code):
    max_chars = 500 if code == "render_too_large" else 5000
    outcome = sdk_outcome(one_section(template), "fr", {}, snippets=SNIPPETS, max_chars=max_chars)

    assert outcome[0] != "ok"
    assert [problem["code"] for problem in outcome[2]] == [code]


def test_an_included_text_counts_once_towards_the_output_cap():
    # "Bonjour." (8) + 300 characters of snippet: under a cap of 320 only if counted once.
    outcome = sdk_outcome(
        one_section("{{ snippet('big') }}"), "fr", {}, snippets=SNIPPETS, max_chars=320
    )

    assert outcome[0] == "ok"
    assert outcome[1]["instruction"] == "x" * 300
