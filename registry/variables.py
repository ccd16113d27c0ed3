"""Declared variables: what a prompt version promises to accept, and the check of what a caller sent.

A version declares its variables (name, type, required, default, description). Two separate checks
use that list, and both collect *every* problem instead of stopping at the first, so an author or a
calling service fixes everything in one round trip:

- ``variable_specs_check`` checks the declarations themselves, when a draft is written;
- ``variables_validate`` checks the values a caller sends, before anything is rendered (STYLE R10).

Types are JSON's, because values arrive as JSON and leave to SDKs in other languages: ``bool`` is
never an integer, ``3.0`` is not an integer, NaN and infinities are not numbers.

Pure module: no Django, no models, so the standalone SDK can reuse it.
"""

from __future__ import annotations

import copy
import difflib
import keyword
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from registry.errors import Problem, VariablesInvalid

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
    }
)


class VariableType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "list"
    OBJECT = "object"


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """One declared variable.

    ``default`` is only meaningful for an optional variable; ``None`` means "no default" (so a
    default of JSON ``null`` cannot be declared, and needs none: an optional variable without a
    default renders as ``None`` already).
    """

    name: str
    type: VariableType = VariableType.STRING
    required: bool = True
    default: object = None
    description: str = ""

    def as_dict(self) -> dict[str, object]:
        kind = self.type.value if isinstance(self.type, VariableType) else self.type
        return {
            "name": self.name,
            "type": kind,
            "required": self.required,
            # A copy, so that a caller editing the dict cannot change this frozen spec's list.
            "default": copy.deepcopy(self.default),
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariableSpec:
        """Build a spec from its JSON/YAML form without validating it.

        Validation is ``variable_specs_check``'s job, which needs the raw values to say what is
        wrong: so a field of the wrong kind is carried through as given (an unknown ``type`` stays
        the raw string instead of failing here). ``required`` defaults to "no default given", so
        ``{name: tone, default: friendly}`` is an optional variable, as its author meant.
        """
        raw_type = data.get("type", VariableType.STRING)
        kind: Any
        try:
            kind = VariableType(raw_type)
        except (ValueError, TypeError):
            kind = raw_type
        default = data.get("default")
        return cls(
            name=data.get("name", ""),
            type=kind,
            required=data.get("required", default is None),
            default=default,
            description=data.get("description", ""),
        )


def value_matches(kind: VariableType, value: object) -> bool:
    """Whether ``value`` is a JSON value of type ``kind`` (``bool`` is not a number)."""
    match kind:
        case VariableType.STRING:
            return isinstance(value, str)
        case VariableType.INTEGER:
            return isinstance(value, int) and not isinstance(value, bool)
        case VariableType.NUMBER:
            if isinstance(value, bool):
                return False
            if isinstance(value, float):
                return math.isfinite(value)
            return isinstance(value, int)
        case VariableType.BOOLEAN:
            return isinstance(value, bool)
        case VariableType.LIST:
            return isinstance(value, list)
        case VariableType.OBJECT:
            return isinstance(value, dict) and all(isinstance(key, str) for key in value)
    return False


def describe_value(value: object) -> str:
    """The JSON name of a value's type, with an article, for problem details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        if all(isinstance(key, str) for key in value):
            return "an object"
        return "an object with non-string keys"
    return f"a {type(value).__name__}"


def _with_article(kind: VariableType) -> str:
    return f"an {kind.value}" if kind.value[0] in "aeiou" else f"a {kind.value}"


def _pointer_token(token: object) -> str:
    """Escape one JSON Pointer reference token (RFC 6901: ``~`` then ``/``)."""
    return str(token).replace("~", "~0").replace("/", "~1")


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
    specs: Sequence[VariableSpec], *, pointer: str = "/variables"
) -> list[Problem]:
    """Every problem in a version's variable declarations (empty list: they are fine).

    Pointers name the field: ``/variables/2/name``. Rules:

    1. the name is an ASCII identifier (letter first), at most 64 characters, no leading ``_``,
       not a Python keyword nor a name Jinja reserves (``RESERVED_NAMES``), unique;
    2. the type is a ``VariableType``; ``required`` is a boolean;
    3. a default, when given, has the declared type;
    4. a required variable has no default: one that may be left out is optional, and a default
       on a required one would never be used, so having both is refused rather than guessed at;
    5. the description is a string of at most 500 characters.
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
                        f"The default of '{label}' must be {_with_article(kind)}, "
                        f"not {describe_value(spec.default)}.",
                        f"{at}/default",
                    )
                )
            if spec.required is True:
                problems.append(
                    Problem(
                        "required_with_default",
                        f"'{label}' is required and has a default; give a default and mark it "
                        "optional, or keep it required without a default.",
                        f"{at}/required",
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
) -> dict[str, object]:
    """Check a caller's values against the declarations; return the values to render with.

    Every problem is collected, then one ``VariablesInvalid`` lists them all: ``unknown_variable``
    (not declared; a near miss is suggested), ``missing_variable`` (required and absent or null),
    ``wrong_type`` (the detail says what was expected and what came). Pointers name the variable:
    ``/variables/customer_name``.

    The result holds exactly the declared names, in declaration order, because the template runs
    under ``StrictUndefined``: an optional variable the caller left out (or sent as null) gets a
    copy of its default, or ``None`` when it has none, so ``{% if tone %}`` works instead of
    failing as undefined.
    """
    problems: list[Problem] = []
    declared = {spec.name: spec for spec in specs}
    for key in values:
        if key not in declared:
            near = difflib.get_close_matches(str(key), list(declared), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else "."
            problems.append(
                Problem(
                    "unknown_variable",
                    f"'{key}' is not a variable of this version{hint}",
                    f"{pointer}/{_pointer_token(key)}",
                )
            )

    resolved: dict[str, object] = {}
    for spec in specs:
        at = f"{pointer}/{_pointer_token(spec.name)}"
        value = values.get(spec.name)
        if value is None:
            if spec.required:
                problems.append(
                    Problem("missing_variable", f"The variable '{spec.name}' is required.", at)
                )
            resolved[spec.name] = copy.deepcopy(spec.default)
            continue
        kind = spec.type if isinstance(spec.type, VariableType) else None
        if kind is None or not value_matches(kind, value):
            expected = _with_article(kind) if kind is not None else f"a {spec.type!r}"
            problems.append(
                Problem(
                    "wrong_type",
                    f"'{spec.name}' must be {expected}, not {describe_value(value)}.",
                    at,
                )
            )
        resolved[spec.name] = value

    if problems:
        raise VariablesInvalid(problems)
    return resolved
