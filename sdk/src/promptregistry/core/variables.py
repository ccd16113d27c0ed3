"""The check of a caller's variables against the ones a version declares: the server's rules.

The server's ``registry/variables.py`` validates with this very function (and checks
declarations with these types), so a local render refuses exactly what ``POST …/render`` refuses,
with the same codes, details and pointers: ``unknown_variable`` (with a near miss suggested),
``missing_variable``, ``wrong_type``. Every problem is listed at once, except that past
``MAX_UNKNOWN_LISTED`` unknown names the rest are counted in one ``more_unknown_variables``
problem (pointing at the variables), and only the first ``MAX_SUGGESTIONS`` get a suggestion.

Types are JSON's: ``bool`` is never an integer, ``3.0`` is not an integer, NaN and infinities
are not numbers. A ``messages`` variable (a conversation history) is a list of chat messages,
each checked by ``history.history_problems`` (roles, contents, count and size, every wrong entry
with its pointer). (Declarations are checked by the server when a version is written; the SDK only
reads committed versions, so it does not repeat that check.)
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from promptregistry.errors import VariablesInvalid

from .history import (
    DEFAULT_PLACE,
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGES,
    HistoryBlock,
    history_block,
    history_problems,
)


class VariableType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "list"
    OBJECT = "object"
    MESSAGES = "messages"  # a conversation history, inserted as chat messages (``history``)


@dataclass(frozen=True, slots=True)
class VariableSpec:
    """One declared variable; ``default`` None means "no default" (an optional variable
    without one renders as ``None``). ``after`` is a ``messages`` variable's place: the section
    its history follows (None: the default, after the context)."""

    name: str
    type: VariableType | str = VariableType.STRING
    required: bool = True
    default: object = None
    description: str = ""
    after: str | None = None

    def as_dict(self) -> dict[str, object]:
        kind = self.type.value if isinstance(self.type, VariableType) else self.type
        data: dict[str, object] = {
            "name": self.name,
            "type": kind,
            "required": self.required,
            # A copy, so that a caller editing the dict cannot change this frozen spec's list.
            "default": copy.deepcopy(self.default),
            "description": self.description,
        }
        # Only a history has a place (and always one, so both spellings of the default hash
        # alike); other variables keep the five fields they always had, and their hashes.
        if kind == VariableType.MESSAGES:
            data["after"] = self.after or DEFAULT_PLACE
        elif self.after is not None:
            data["after"] = self.after
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariableSpec:
        """A spec from its JSON form, as the server reads it: an unknown ``type`` stays the raw
        value (and makes every value a ``wrong_type``), and ``required`` defaults to "no default
        given"."""
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
            after=data.get("after"),
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
        case VariableType.MESSAGES:
            # The entries are ``history.history_problems``'s to judge, each with its pointer.
            return isinstance(value, list)
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


def with_article(kind: VariableType) -> str:
    """``"an integer"``, ``"a string"``: a type as problem details name it."""
    if kind == VariableType.MESSAGES:
        return "a list of messages"
    return f"an {kind.value}" if kind.value[0] in "aeiou" else f"a {kind.value}"


def pointer_token(token: object) -> str:
    """Escape one JSON Pointer reference token (RFC 6901: ``~`` then ``/``)."""
    return str(token).replace("~", "~0").replace("/", "~1")


# A request is at most a few MiB of names, but every suggestion costs a difflib comparison with
# every declared name (quadratic in the names' lengths): a 1 MiB body of unknown names once took
# ~47 s. So only the first few unknown names get a suggestion, only names of a plausible length
# are compared, and past a count the unknown names are summed up in one last problem.
MAX_SUGGESTIONS = 5
MAX_SUGGESTED_NAME_CHARS = 64
MAX_UNKNOWN_LISTED = 20
_SHORTENED_CHARS = 80  # an unknown name quoted in a detail (its pointer holds it whole)


def _near_miss(name: str, declared: Mapping[str, object]) -> str | None:
    if len(name) > MAX_SUGGESTED_NAME_CHARS:
        return None
    candidates = [d for d in declared if len(d) <= MAX_SUGGESTED_NAME_CHARS]
    near = difflib.get_close_matches(name, candidates, n=1)
    return near[0] if near else None


def _shortened(name: str) -> str:
    return name if len(name) <= _SHORTENED_CHARS else name[: _SHORTENED_CHARS - 1] + "…"


def _problem(code: str, detail: str, pointer: str) -> dict[str, object]:
    return {"code": code, "detail": detail, "pointer": pointer}


def variables_validate(
    specs: Sequence[VariableSpec | Mapping[str, Any]],
    values: Mapping[str, object],
    *,
    pointer: str = "/variables",
    max_messages: int = MAX_HISTORY_MESSAGES,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> dict[str, object]:
    """Check a caller's values against the declarations; return the values to render with.

    A ``messages`` value is checked entry by entry (``history.history_problems``, bounded by
    ``max_messages`` entries and ``max_history_chars`` characters of content). ``specs`` are ``VariableSpec``s or their JSON form (as a bundle carries them). Raises one
    ``VariablesInvalid`` listing every problem. The result holds exactly the declared names, in
    declaration order: an optional variable left out (or sent as null) gets a copy of its
    default, or ``None``, so ``{% if tone %}`` works under ``StrictUndefined``.
    """
    parsed = [
        spec if isinstance(spec, VariableSpec) else VariableSpec.from_dict(spec) for spec in specs
    ]
    problems: list[dict[str, object]] = []
    declared = {spec.name: spec for spec in parsed}
    unknown = [key for key in values if key not in declared]
    for index, key in enumerate(unknown[:MAX_UNKNOWN_LISTED]):
        hint = "."
        if index < MAX_SUGGESTIONS:
            near = _near_miss(str(key), declared)
            hint = f"; did you mean '{near}'?" if near else "."
        problems.append(
            _problem(
                "unknown_variable",
                f"'{_shortened(str(key))}' is not a variable of this version{hint}",
                f"{pointer}/{pointer_token(key)}",
            )
        )
    if len(unknown) > MAX_UNKNOWN_LISTED:
        more = len(unknown) - MAX_UNKNOWN_LISTED
        problems.append(
            _problem(
                "more_unknown_variables",
                f"And {more} more unknown variable{'s' if more > 1 else ''}, not listed.",
                pointer,
            )
        )

    resolved: dict[str, object] = {}
    for spec in parsed:
        at = f"{pointer}/{pointer_token(spec.name)}"
        value = values.get(spec.name)
        if value is None:
            if spec.required:
                problems.append(
                    _problem("missing_variable", f"The variable '{spec.name}' is required.", at)
                )
            resolved[spec.name] = copy.deepcopy(spec.default)
            continue
        kind = spec.type if isinstance(spec.type, VariableType) else None
        if kind is None or not value_matches(kind, value):
            expected = with_article(kind) if kind is not None else f"a {spec.type!r}"
            problems.append(
                _problem(
                    "wrong_type",
                    f"'{spec.name}' must be {expected}, not {describe_value(value)}.",
                    at,
                )
            )
        elif kind == VariableType.MESSAGES:
            problems.extend(
                history_problems(
                    spec.name,
                    value,  # type: ignore[arg-type]  # a list: value_matches said so
                    pointer=at,
                    max_messages=max_messages,
                    max_chars=max_history_chars,
                )
            )
        resolved[spec.name] = value

    if problems:
        raise VariablesInvalid(problems)
    return resolved


def histories(
    specs: Sequence[VariableSpec], values: Mapping[str, object]
) -> tuple[HistoryBlock, ...]:
    """The histories among values checked by ``variables_validate``, in declaration order, each
    with its place, ready for the render to insert (an empty or absent one inserts nothing)."""
    return tuple(
        history_block(spec.after, values[spec.name])  # type: ignore[arg-type]
        for spec in specs
        if spec.type == VariableType.MESSAGES and values.get(spec.name)
    )
