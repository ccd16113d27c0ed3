"""Declared variables: what a prompt version promises to accept, and the check of what a caller sent.

A version declares its variables (name, type, required, default, description). Two separate checks
use that list, and both collect *every* problem instead of stopping at the first, so an author or a
calling service fixes everything in one round trip:

- ``variable_specs_check`` checks the declarations themselves, when a draft is written;
- ``variables_validate`` checks the values a caller sends, before anything is rendered (STYLE R10).

Types are JSON's, because values arrive as JSON and leave to SDKs in other languages: ``bool`` is
never an integer, ``3.0`` is not an integer, NaN and infinities are not numbers. A ``messages``
variable is a conversation history (``promptregistry.core.history``): a list of chat messages
that the render inserts after a section, checked entry by entry.

The types, ``VariableSpec`` and the check of values are the SDK's (``promptregistry.core``, as
the sandbox and the locale rules are: decision 0011); this module adds the check of declarations,
which only authoring needs, and the registry's problem type. Pure module: no Django, no models.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping, Sequence
from typing import Any

from promptregistry import errors as core_errors
from promptregistry.core import variables as core
from promptregistry.core.history import (
    DEFAULT_PLACE,
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGES,
    PLACES,
    HistoryBlock,
    history_block,
    history_problems,
    place_problem,
)
from promptregistry.core.variables import (
    VariableSpec,
    VariableType,
    describe_value,
    histories,
    value_matches,
    with_article,
)

from registry.errors import ConversationInvalid, Problem, VariablesInvalid

__all__ = [
    "DEFAULT_PLACE",
    "MAX_HISTORY_CHARS",
    "MAX_HISTORY_MESSAGES",
    "PLACES",
    "VariableSpec",
    "VariableType",
    "conversation_block",
    "describe_value",
    "histories",
    "value_matches",
    "variable_specs_check",
    "variables_validate",
]

MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 500

# ASCII only: names travel as JSON keys into SDKs in other languages, and Python (which Jinja
# compiles to) NFKC-normalizes non-ASCII identifiers, so "ﬁle" in a template would silently look
# up "file". A leading underscore is refused because the sandbox hides such names anyway.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)

# Names a template cannot use as a plain variable: Jinja's lowercase constants, the names Jinja
# binds itself (``loop`` in a for, ``caller``/``varargs``/``kwargs`` in a macro, ``self``), and
# the environment's globals, which a variable of the same name would silently shadow.
RESERVED_NAMES = frozenset(
    {
        "true",
        "false",
        "none",
        "self",
        "loop",
        "caller",
        "varargs",
        "kwargs",
        "range",
        "dict",
        "lipsum",
        "cycler",
        "joiner",
        "namespace",
        "snippet",
    }
)


def _name_problem(name: object) -> tuple[str, str] | None:
    """``(code, detail)`` saying why ``name`` cannot be a variable name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "invalid_name", "A variable needs a name."
    if len(name) > MAX_NAME_CHARS:
        return (
            "name_too_long",
            f"The variable name '{name[:MAX_NAME_CHARS]}…' is longer than {MAX_NAME_CHARS} "
            "characters.",
        )
    if name.startswith("_"):
        return (
            "invalid_name",
            f"The variable name '{name}' starts with '_', which templates cannot reach.",
        )
    if not _NAME.fullmatch(name):
        return (
            "invalid_name",
            f"The variable name '{name}' must start with a letter and use only ASCII letters, "
            "digits and '_'.",
        )
    if keyword.iskeyword(name) or name in RESERVED_NAMES:
        return "invalid_name", f"'{name}' is reserved in templates; choose another variable name."
    return None


def variable_specs_check(
    specs: Sequence[VariableSpec],
    *,
    pointer: str = "/variables",
    max_messages: int = MAX_HISTORY_MESSAGES,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> list[Problem]:
    """Every problem in a version's variable declarations (empty list: they are fine).

    Pointers name the field: ``/variables/2/name``. Rules:

    1. the name is an ASCII identifier (letter first), at most 64 characters, no leading ``_``,
       not a Python keyword nor a name Jinja reserves (``RESERVED_NAMES``), unique;
    2. the type is a ``VariableType``; ``required`` is a boolean;
    3. a default, when given, has the declared type;
    4. a required variable has no default: one that may be left out is optional, and a default
       on a required one would never be used, so having both is refused rather than guessed at;
    5. the description is a string of at most 500 characters;
    6. a ``messages`` variable's default is a history as a caller's value would be checked
       (roles, contents, count and size); its ``after`` is a section (or none: after the
       context), and no other type has an ``after``.
    """
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        at = f"{pointer}/{index}"
        name_problem = _name_problem(spec.name)
        if name_problem is not None:
            code, detail = name_problem
            problems.append(Problem(code, detail, f"{at}/name"))
        elif spec.name in seen:
            problems.append(
                Problem(
                    "duplicate_variable",
                    f"The variable '{spec.name}' is declared more than once.",
                    f"{at}/name",
                )
            )
        if isinstance(spec.name, str):
            seen.add(spec.name)
        label = spec.name if isinstance(spec.name, str) and spec.name else f"#{index}"

        kind = spec.type if isinstance(spec.type, VariableType) else None
        if kind is None:
            choices = ", ".join(member.value for member in VariableType)
            problems.append(
                Problem(
                    "invalid_type",
                    f"The type of '{label}' must be one of {choices}, not {spec.type!r}.",
                    f"{at}/type",
                )
            )
        if not isinstance(spec.required, bool):
            problems.append(
                Problem(
                    "invalid_required",
                    f"'required' of '{label}' must be true or false.",
                    f"{at}/required",
                )
            )
        if spec.default is not None:
            if kind is not None and not value_matches(kind, spec.default):
                problems.append(
                    Problem(
                        "invalid_default",
                        f"The default of '{label}' must be {with_article(kind)}, "
                        f"not {describe_value(spec.default)}.",
                        f"{at}/default",
                    )
                )
            elif kind is VariableType.MESSAGES:
                problems += [
                    Problem(str(p["code"]), str(p["detail"]), str(p["pointer"]))
                    for p in history_problems(
                        label,
                        spec.default,  # type: ignore[arg-type]  # a list: value_matches said so
                        pointer=f"{at}/default",
                        max_messages=max_messages,
                        max_chars=max_history_chars,
                    )
                ]
            if spec.required is True:
                problems.append(
                    Problem(
                        "required_with_default",
                        f"'{label}' is required and has a default; give a default and mark it "
                        "optional, or keep it required without a default.",
                        f"{at}/required",
                    )
                )
        if kind is VariableType.MESSAGES:
            wrong_place = place_problem(label, spec.after, pointer=f"{at}/after")
            if wrong_place is not None:
                problems.append(
                    Problem(
                        str(wrong_place["code"]),
                        str(wrong_place["detail"]),
                        str(wrong_place["pointer"]),
                    )
                )
        elif spec.after is not None and kind is not None:
            problems.append(
                Problem(
                    "invalid_place",
                    f"Only a messages variable has a place; '{label}' is "
                    f"{with_article(kind)}, so leave 'after' out.",
                    f"{at}/after",
                )
            )
        if not isinstance(spec.description, str):
            problems.append(
                Problem(
                    "invalid_description",
                    f"The description of '{label}' must be text.",
                    f"{at}/description",
                )
            )
        elif len(spec.description) > MAX_DESCRIPTION_CHARS:
            problems.append(
                Problem(
                    "description_too_long",
                    f"The description of '{label}' is longer than {MAX_DESCRIPTION_CHARS} "
                    "characters.",
                    f"{at}/description",
                )
            )
    return problems


def variables_validate(
    specs: Sequence[VariableSpec],
    values: Mapping[str, object],
    *,
    pointer: str = "/variables",
    max_messages: int = MAX_HISTORY_MESSAGES,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> dict[str, object]:
    """Check a caller's values against the declarations; return the values to render with.

    The SDK's check (``promptregistry.core.variables``), so that a local render and the server
    refuse the same values with the same problems: ``unknown_variable`` (a near miss is
    suggested), ``missing_variable`` (required and absent or null), ``wrong_type``; every one
    listed in one ``VariablesInvalid``, pointers naming the variable (``/variables/name``).
    The result holds exactly the declared names, in declaration order, with an optional
    variable's default (or ``None``) where the caller sent none, since templates run under
    ``StrictUndefined``. A history (``messages``) is checked entry by entry, each wrong entry
    listed with its pointer (``/variables/history/3/role``), and bounded by ``max_messages``
    entries and ``max_history_chars`` characters (callers pass the settings
    ``PROMPT_HISTORY_MAX_MESSAGES`` and ``PROMPT_HISTORY_MAX_CHARS``).
    """
    try:
        return core.variables_validate(
            specs,
            values,
            pointer=pointer,
            max_messages=max_messages,
            max_history_chars=max_history_chars,
        )
    except core_errors.VariablesInvalid as exc:
        raise VariablesInvalid(
            [Problem(e["code"], e["detail"], e["pointer"]) for e in exc.errors]
        ) from None


# A conversation a caller sends with a run goes after everything the prompt renders.
CONVERSATION_PLACE = PLACES[-1]


def conversation_block(
    messages: Sequence[Any],
    *,
    pointer: str,
    max_messages: int = MAX_HISTORY_MESSAGES,
    max_chars: int = MAX_HISTORY_CHARS,
) -> HistoryBlock:
    """Messages a caller sends to be appended after the prompt's own (the OpenAI-compatible
    endpoints' ``messages`` and ``input``), checked as a history variable's value is: roles
    user, assistant and tool (never system: that is the prompt's own), tool call ids and calls
    well formed, at most ``max_messages`` messages and ``max_chars`` characters. Every problem
    is listed in one ``ConversationInvalid``, pointing under ``pointer``; the block is a copy,
    placed after the last section (decision 0042)."""
    label = pointer.rsplit("/", 1)[-1]
    found = history_problems(
        label, messages, pointer=pointer, max_messages=max_messages, max_chars=max_chars
    )
    if found:
        raise ConversationInvalid(Problem(p["code"], p["detail"], p["pointer"]) for p in found)
    return history_block(CONVERSATION_PLACE, messages)
