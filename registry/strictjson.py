"""Strict JSON: the one parser for JSON a caller sends (the API's bodies, the runtime views' bodies,
JSON typed into the admin, dataset files).

Python's ``json`` is laxer than JSON, and what it lets through fails later, after work was done:

- ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, and numbers that overflow to infinity
  (``1e400``) are not numbers anyone can use; the renderer cannot write them back and
  PostgreSQL's ``jsonb`` refuses them;
- ``"\\u0000"`` is valid JSON, but PostgreSQL's ``text`` and ``jsonb`` cannot hold it;
- ``"\\ud800"`` (a surrogate with no partner) is accepted, and then no UTF-8 encoder can write it:
  not PostgreSQL, not the response;
- nesting is bounded only by the interpreter's recursion limit, and every recursive walk later
  (validation, redaction, rendering) pays for it.

So a run or a render whose inputs cannot be recorded would call the model and then fail to store
the call. Everything above is refused here, before any view sees the value, with a JSON Pointer
to each offending value (at most ``MAX_ERRORS``; keys count too, and point at their object).

Cheap on ordinary bodies: the parse is the C decoder; the tree is walked only when the text holds
an escape that could be a NUL or a surrogate, a refused number was met, or it has more opening
brackets than the depth bound (so it might be too deep).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings

MAX_ERRORS = 10

# Escapes that may decode to U+0000 or to a surrogate (a pair decodes to one character and is
# fine; the walk tells which). Raw NULs and raw surrogates cannot get through: the decoder refuses
# control characters in strings, and UTF-8 cannot encode surrogates.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_SURROGATE = re.compile("[\ud800-\udfff]")

NOT_JSON_NUMBER = "not_a_json_number"
NUMBER_TOO_LARGE = "number_too_large"
NULL_CHARACTER = "null_characters_not_allowed"
LONE_SURROGATE = "lone_surrogates_not_allowed"
TOO_DEEP = "nesting_too_deep"

_DETAILS = {
    NULL_CHARACTER: "Null characters (\\u0000) are not allowed.",
    LONE_SURROGATE: "Unpaired surrogates (\\ud800-\\udfff) are not allowed.",
    NUMBER_TOO_LARGE: "The number is too large.",
}


@dataclass(frozen=True, slots=True)
class JSONError:
    code: str
    detail: str
    pointer: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.detail, "pointer": self.pointer}


class JSONRefused(ValueError):
    """The text is not JSON this service accepts.

    ``malformed`` is true when it is not JSON at all (syntax, encoding, ``NaN``, too deep to
    read): an API answers ``malformed-request``; otherwise it is JSON holding values that cannot
    be stored (``validation-error``). ``errors`` points at each value found, when there is one.
    Like ``json.JSONDecodeError``, ``msg`` is the reason alone and ``colno`` the column of a
    syntax error (None otherwise); ``str()`` is the whole sentence, for a problem's detail.
    """

    def __init__(
        self,
        reason: str,
        *,
        malformed: bool,
        errors: list[JSONError] | tuple[()] = (),
        colno: int | None = None,
        where: str = "",
    ) -> None:
        prefix = "The body is not valid JSON: " if malformed else ""
        super().__init__(prefix + reason + where)
        self.msg = reason
        self.colno = colno
        self.malformed = malformed
        self.errors = list(errors)


class _Refused:
    """Stands in for a refused number while the decoder runs; the walk then finds where it is."""

    __slots__ = ("code", "detail")

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail


def strict_json_loads(raw: str | bytes, *, max_depth: int | None = None) -> Any:
    """Parse ``raw`` (bytes must be UTF-8) or raise ``JSONRefused``.

    ``max_depth`` (default: ``settings.JSON_MAX_DEPTH``) bounds the nesting of arrays and objects;
    a bare scalar is depth 0.
    """
    if max_depth is None:
        max_depth = settings.JSON_MAX_DEPTH
    if isinstance(raw, bytes | bytearray):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONRefused(str(exc), malformed=True) from exc
    else:
        text = raw
    refused: list[_Refused] = []

    def constant(name: str) -> _Refused:
        marker = _Refused(NOT_JSON_NUMBER, f"{name} is not a JSON number.")
        refused.append(marker)
        return marker

    def number(literal: str) -> float | _Refused:
        value = float(literal)
        if math.isfinite(value):
            return value
        marker = _Refused(NUMBER_TOO_LARGE, _DETAILS[NUMBER_TOO_LARGE])
        refused.append(marker)
        return marker

    try:
        data = json.loads(text, parse_constant=constant, parse_float=number)
    except RecursionError as exc:
        raise JSONRefused("it is nested too deeply.", malformed=True) from exc
    except json.JSONDecodeError as exc:
        where = f": line {exc.lineno} column {exc.colno} (char {exc.pos})"
        raise JSONRefused(exc.msg, malformed=True, colno=exc.colno, where=where) from exc
    except ValueError as exc:  # ints past sys.get_int_max_str_digits()
        raise JSONRefused(str(exc), malformed=True) from exc
    might_be_deep = text.count("[") + text.count("{") > max_depth
    if refused or might_be_deep or _SUSPECT_ESCAPE.search(text):
        _check(data, max_depth=max_depth, any_refused=bool(refused))
    return data


def _check(data: Any, *, max_depth: int, any_refused: bool) -> None:
    errors: list[JSONError] = []
    too_deep = False
    # An explicit stack, so no depth the decoder accepted can overflow this walk.
    stack: list[tuple[str, int, Any]] = [("", 0, data)]
    while stack and len(errors) < MAX_ERRORS:
        pointer, depth, value = stack.pop()
        if isinstance(value, str):
            code = _string_problem(value)
            if code:
                errors.append(JSONError(code, _DETAILS[code], pointer))
        elif isinstance(value, _Refused):
            errors.append(JSONError(value.code, value.detail, pointer))
        elif isinstance(value, dict | list):
            if depth >= max_depth:
                too_deep = True
                errors.append(
                    JSONError(TOO_DEEP, f"Nested deeper than {max_depth} levels.", pointer)
                )
                continue
            if isinstance(value, list):
                items = [(f"{pointer}/{i}", item) for i, item in enumerate(value)]
            else:
                items = []
                for key, item in value.items():
                    code = _string_problem(key)
                    if code:
                        # The key cannot go into a pointer (the answer could not be encoded):
                        # point at its object, and leave what is under it unread.
                        errors.append(JSONError(code, "A key: " + _DETAILS[code], pointer))
                        continue
                    items.append((f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}", item))
            stack.extend((at, depth + 1, item) for at, item in reversed(items))
    if not errors:
        return
    numbers_only = all(e.code in (NOT_JSON_NUMBER, NUMBER_TOO_LARGE) for e in errors)
    if any_refused and numbers_only:
        raise JSONRefused(errors[0].detail, malformed=True, errors=errors)
    if too_deep and all(e.code == TOO_DEEP for e in errors):
        raise JSONRefused("it is nested too deeply.", malformed=True, errors=errors)
    raise JSONRefused(
        "The body holds values that cannot be stored.", malformed=False, errors=errors
    )


def _string_problem(text: str) -> str:
    if "\x00" in text:
        return NULL_CHARACTER
    if _SURROGATE.search(text):
        return LONE_SURROGATE
    return ""


def storable(text: str) -> str:
    """``text`` as PostgreSQL can keep it, in ``text`` and ``jsonb`` alike: it refuses a NUL
    character and a lone surrogate, which a model may well answer (or echo from a template), and
    a record refused for them would be lost. Each becomes U+FFFD, the character that stands for
    one that could not be kept."""
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))
