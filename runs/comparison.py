"""How a shadow's answer compares with the live answer (DESIGN.md, "ShadowRun").

``compare(live, shadow, structured=...)`` returns a ``Comparison``:

- ``exact_match``. Text: equal once every run of whitespace is one space and the ends are stripped
  (a model's trailing newline or double space is not a different answer; case and punctuation
  are). Structured (the version has a JSON response schema): both sides parse and their values are
  equal, key order irrelevant, ``1`` equal to ``1.0`` but never to ``true``.
- ``similarity`` in [0, 1]: the Dice coefficient of the two answers' multisets of word unigrams
  and bigrams, case-folded (tokens are words and single punctuation marks). Unigrams let short
  answers ("yes" / "no") score, bigrams reward the same order; Dice over multisets is symmetric by
  construction (``difflib.SequenceMatcher`` is not, and is quadratic in the worst case), 1.0 for
  identical token lists, and costs O(n). Only the first ``MAX_TOKENS`` tokens of each side count,
  so the cost is bounded however long the answers: two answers that differ only beyond that share
  a similarity of 1.0 without being an exact match. Structured answers are compared on their
  canonical JSON text (sorted keys); an exact match always scores 1.0 (``1`` and ``1.0`` print
  differently but are equal).
- ``structure_diff`` (structured only, else None): where the values differ, depth first with keys
  sorted and arrays compared index by index. Each entry is ``{"path": <JSON pointer>, "change":
  "added" | "removed" | "changed" | "type", "live": ..., "shadow": ...}``: ``added`` has only
  ``shadow``, ``removed`` only ``live``, ``type`` holds the JSON type names (``object``,
  ``array``, ``string``, ``number``, ``boolean``, ``null``), ``changed`` the two values. A value
  is kept when its JSON text has at most ``MAX_VALUE_CHARS`` characters; a longer string is cut to
  that many characters ending with "…", a longer object or array becomes its JSON text cut the same
  way. At most ``MAX_DIFF_ENTRIES`` differences are listed, then one ``{"path": "", "change":
  "truncated", "omitted": <how many more>}``. When either side is not valid JSON the diff is one
  ``{"path": "", "change": "unparseable", "live": ..., "shadow": ...}`` entry whose sides say
  "valid JSON" or why it is not, and the answers compare as text.

Pure module: the standard library only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from itertools import islice, pairwise
from typing import Any

MAX_TOKENS = 20_000
MAX_DIFF_ENTRIES = 50
MAX_VALUE_CHARS = 80

_TOKEN = re.compile(r"\w+|[^\w\s]")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Comparison:
    exact_match: bool
    similarity: float  # 0 (nothing in common) to 1 (the same words in the same order)
    structure_diff: list[dict[str, Any]] | None  # None when the answer is not structured


def compare(live: str, shadow: str, *, structured: bool) -> Comparison:
    if not structured:
        return _compare_text(live, shadow, diff=None)
    live_value, live_error = _parse(live)
    shadow_value, shadow_error = _parse(shadow)
    if live_error is not None or shadow_error is not None:
        unparseable = {
            "path": "",
            "change": "unparseable",
            "live": live_error or "valid JSON",
            "shadow": shadow_error or "valid JSON",
        }
        return _compare_text(live, shadow, diff=[unparseable])
    diff = structure_diff(live_value, shadow_value)
    if not diff:
        return Comparison(exact_match=True, similarity=1.0, structure_diff=[])
    return Comparison(
        exact_match=False,
        similarity=similarity(_canonical(live_value), _canonical(shadow_value)),
        structure_diff=diff,
    )


def normalize_text(text: str) -> str:
    """Every run of whitespace one space, the ends stripped: what text exact matches compare."""
    return " ".join(text.split())


def similarity(a: str, b: str) -> float:
    """Dice coefficient of the token unigram-and-bigram multisets of ``a`` and ``b`` (see the
    module docstring); 1.0 when both have no tokens at all."""
    features_a, features_b = _features(a), _features(b)
    total = sum(features_a.values()) + sum(features_b.values())
    if total == 0:
        return 1.0
    shared = sum((features_a & features_b).values())
    return 2 * shared / total


def _compare_text(live: str, shadow: str, *, diff: list[dict[str, Any]] | None) -> Comparison:
    exact = normalize_text(live) == normalize_text(shadow)
    return Comparison(
        exact_match=exact,
        # Equal normalized texts have equal tokens: 1.0 exactly, without the work.
        similarity=1.0 if exact else similarity(live, shadow),
        structure_diff=diff,
    )


def _features(text: str) -> Counter[str | tuple[str, str]]:
    tokens = [match.group().casefold() for match in islice(_TOKEN.finditer(text), MAX_TOKENS)]
    features: Counter[str | tuple[str, str]] = Counter(tokens)
    features.update(pairwise(tokens))
    return features


# --- structured answers -------------------------------------------------------------------------


def _parse(text: str) -> tuple[Any, str | None]:
    """The JSON value and None, or None and why ``text`` is not strict JSON (no NaN, no
    Infinity: they are not JSON, and NaN is not even equal to itself)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except ValueError as exc:  # a refused constant, or an integer with too many digits
        return None, f"invalid JSON: {exc}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def structure_diff(live: Any, shadow: Any) -> list[dict[str, Any]]:
    """The differences between two parsed JSON values (see the module docstring), capped.

    Iterative (an explicit stack), so any depth ``json.loads`` accepted is walked; every node is
    visited once, and past the cap the differences are only counted.
    """
    entries: list[dict[str, Any]] = []
    omitted = 0
    # (path, live, shadow); children are pushed in reverse so they pop in document order.
    stack: list[tuple[str, Any, Any]] = [("", live, shadow)]
    while stack:
        path, a, b = stack.pop()
        entry = _difference(path, a, b)
        if entry is None:
            if isinstance(a, dict):
                keys = sorted(a.keys() | b.keys(), reverse=True)
                stack.extend(
                    (f"{path}/{_escape(key)}", a.get(key, _MISSING), b.get(key, _MISSING))
                    for key in keys
                )
            elif isinstance(a, list):
                stack.extend(
                    (f"{path}/{index}", _item(a, index), _item(b, index))
                    for index in reversed(range(max(len(a), len(b))))
                )
            continue
        if len(entries) < MAX_DIFF_ENTRIES:
            entries.append(entry)
        else:
            omitted += 1
    if omitted:
        entries.append({"path": "", "change": "truncated", "omitted": omitted})
    return entries


def _difference(path: str, a: Any, b: Any) -> dict[str, Any] | None:
    """The entry for this node, or None when it is equal here (containers: look at the children)."""
    if a is _MISSING:
        return {"path": path, "change": "added", "shadow": _shown(b)}
    if b is _MISSING:
        return {"path": path, "change": "removed", "live": _shown(a)}
    type_a, type_b = _json_type(a), _json_type(b)
    if type_a != type_b:
        return {"path": path, "change": "type", "live": type_a, "shadow": type_b}
    if type_a in ("object", "array") or a == b:
        return None
    return {"path": path, "change": "changed", "live": _shown(a), "shadow": _shown(b)}


def _item(items: list[Any], index: int) -> Any:
    return items[index] if index < len(items) else _MISSING


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: True == 1 in Python, not in JSON
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _escape(key: str) -> str:
    """A JSON pointer reference token (RFC 6901): "~" as "~0", "/" as "~1"."""
    return key.replace("~", "~0").replace("/", "~1")


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, dict | list):
        text = _canonical(value)
        return value if len(text) <= MAX_VALUE_CHARS else _cut(text)
    return value


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
