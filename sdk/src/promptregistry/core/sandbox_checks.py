"""Checks that run *before* an operation that builds a large value in one go.

``'x' * n``, ``center(n)``, ``'%*d'``, ``replace('', s)``, ``10 ** n``, ``join``, ``lipsum(n)``,
``wordwrap``, ``indent``: afterwards the memory is already spent, so each is refused when the value
it would build could not be output (``RenderBudget.allow``). ``sandbox`` wires them into the
environment's operators, calls and filters.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .budget import BudgetExceeded, current_budget

_MAX_INT_BITS = 4096

# --- pre-checks of the operations that build a large value in one go ---------------------------

_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _width(digits: str) -> int:
    # int() refuses strings over 4300 digits; anything over nine digits is too wide anyway.
    return int(digits) if len(digits) <= 9 else 10**9


def _ints(values: object) -> Iterator[int]:
    items: Iterable[object]
    if isinstance(values, Mapping):
        items = values.values()
    elif isinstance(values, tuple | list):
        items = values
    else:
        items = (values,)
    for item in items:
        if isinstance(item, int):
            yield item


def check_printf(fmt: str, args: object) -> None:
    """``'%*d' % (n, 1)``, ``'%.999999999f'|format(x)``: widths and precisions are sizes."""
    budget = current_budget()
    starred = False
    for spec in _PRINTF_SPEC.finditer(fmt):
        for part in spec.groups():
            if part == "*":
                starred = True
            elif part:
                budget.allow(_width(part), "A %-format width")
    if starred:
        for value in _ints(args):
            budget.allow(value, "A %-format width")


def _check_format_string(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """``'{:>999999999}'.format(x)`` and nested widths (``'{:{w}}'``) are sizes too."""
    budget = current_budget()
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # malformed: the call itself raises, and that becomes a render error
    for _literal, _field, spec, _conversion in fields:
        if not spec:
            continue
        for digits in _DIGITS.findall(spec):
            budget.allow(_width(digits), "A format width")
        if "{" in spec:
            for value in (*_ints(args), *_ints(dict(kwargs))):
                budget.allow(value, "A format width")


def _replace_size(text: str, old: str, new: str, count: object) -> int:
    occurrences = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(0, len(new) - len(old))


def counted_items(items: Iterable[object], separator: int, what: str) -> list[object]:
    """Materialize what a join will glue together, refusing as soon as it is too long."""
    budget = current_budget()
    total = 0
    kept: list[object] = []
    for item in items:
        budget.printable(item, what)  # a nested list is weighed before str() walks it
        total += len(str(item)) + separator
        budget.allow(total, what)
        kept.append(item)
    return kept


def check_str_method(owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    budget = current_budget()
    if name in {"center", "ljust", "rjust", "zfill"}:
        width = args[0] if args else kwargs.get("width")
        if isinstance(width, int):
            budget.allow(width, f"{name}({width})")
    elif name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tabsize, int):
            budget.allow(len(owner) + owner.count("\t") * tabsize, "expandtabs()")
    elif name == "replace" and len(args) >= 2:
        old, new = args[0], args[1]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        if isinstance(old, str) and isinstance(new, str):
            budget.allow(_replace_size(owner, old, new, count), "replace()")
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        budget.allow(len(owner) * max(1, longest), "translate()")
    elif name == "format":
        _check_format_string(owner, args, kwargs)
    elif name == "format_map" and args and isinstance(args[0], Mapping):
        _check_format_string(owner, (), args[0])


def check_repeat(left: object, right: object) -> None:
    for sequence, times in ((left, right), (right, left)):
        if isinstance(times, int) and isinstance(sequence, str | list | tuple):
            budget = current_budget()
            # A list's weight counts its nested values: [[big]] * n repeats all of big n times
            # for whatever prints or compares the result.
            weight = len(sequence) if isinstance(sequence, str) else budget.weigh(sequence)
            budget.allow(weight * max(times, 0), "Repeating a value")
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and left.bit_length() + right.bit_length() > _MAX_INT_BITS
    ):
        raise BudgetExceeded("render_too_large", "A multiplication gives too large a number.")


def check_power(base: object, exponent: object) -> None:
    # 10 ** 10000000 would run until the worker is killed; a prompt needs no such number.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and abs(base).bit_length() * max(exponent, 0) > _MAX_INT_BITS
    ):
        raise BudgetExceeded("render_too_large", "A power gives too large a number.")


# --- filters (called with the arguments a template writes, value first) ---------------------


def _center_check(value: Any, width: Any = 80) -> None:
    if isinstance(width, int):
        current_budget().allow(width, f"center({width})")


def _indent_check(text: Any, width: Any = 4, first: Any = False, blank: Any = False) -> None:
    unit = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    text = str(text)
    current_budget().allow(len(text) + (text.count("\n") + 1) * unit, "indent()")


def _count_check(value: Any, count: Any, fill_with: Any = None) -> None:
    if isinstance(count, int):
        current_budget().allow(count, "batch() or slice()")


def _replace_check(text: Any, old: Any, new: Any, count: Any = None) -> None:
    current_budget().allow(_replace_size(str(text), str(old), str(new), count), "replace()")


def _format_check(value: Any, *args: Any, **kwargs: Any) -> None:
    check_printf(str(value), kwargs or args)


def _wordwrap_check(
    text: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> None:
    separator = str(wrapstring if wrapstring is not None else "\n")  # the newline_sequence
    text = str(text)
    # At most one line per two characters (a letter and a space), so one separator each.
    current_budget().allow(len(text) + (len(text) // 2 + 1) * len(separator), "wordwrap()")


def _tojson_check(value: Any, indent: Any = None) -> None:
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if width > 16:
        # Indentation repeats per nesting level and line; no prompt needs more than a few spaces.
        raise BudgetExceeded("render_too_large", "tojson() indents by at most 16.")


# Filter name -> its check, called with the arguments a template writes (value first).
FILTER_CHECKS: dict[str, Callable[..., None]] = {
    "center": _center_check,
    "indent": _indent_check,
    "batch": _count_check,
    "slice": _count_check,
    "replace": _replace_check,
    "format": _format_check,
    "wordwrap": _wordwrap_check,
    "tojson": _tojson_check,
}
