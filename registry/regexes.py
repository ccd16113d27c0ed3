"""Which regular expressions may run on the server: the catastrophic-backtracking check.

Authors write regexes in two places, the ``regex`` scorer of a dataset case and the ``pattern`` /
``patternProperties`` keywords of a JSON Schema (a response schema, a ``json_schema`` scorer).
Both run on Python's ``re``, which cannot be interrupted, so one check refuses the dangerous ones
before they are saved, and the inputs they are matched against are bounded at run time:

1. At check time, a pattern is refused when a quantifier applies to something that itself holds a
   quantifier or an alternation (``(a+)+``, ``(\\w+\\s?)*``, ``(a|ab)*``: exponential), or when it
   has more than one unbounded quantifier (``*``, ``+``, ``{n,}``, or a bound over 100) without
   being anchored at the start, or more than two with (``.*foo.*bar``: cubic under ``search``).
   Possessive quantifiers (``a++``) and atomic groups (``(?>...)``) never backtrack, so they do not
   count: that is the way to write such a pattern safely.
2. At run time, only texts of at most ``MAX_REGEX_INPUT_CHARS`` characters are matched (a longer
   one fails, saying so), so the remaining worst case, quadratic, stays around a second.

Pure (stdlib only), in the registry because it is the lowest layer: the registry checks response
schemas with it and the evaluations app its scorers (STYLE R21: shared helpers move down).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from re import _constants as sre  # the parser's opcodes: the only way to read Python's own syntax
from re import _parser as sre_parse
from typing import Any

MAX_REGEX_CHARS = 1_000
MAX_REGEX_INPUT_CHARS = 10_000
UNBOUNDED_REPEAT = 100  # a {m,n} with n above this backtracks like an unbounded one

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT)


@functools.lru_cache(maxsize=512)
def regex_problem(pattern: str, *, anchored: bool) -> tuple[str, str]:
    """("", "") for a pattern that compiles and is safe, else (code, detail).

    ``anchored``: the caller matches from the start (``fullmatch``), as if the pattern began with
    ``^``; a pattern that does begin with ``^`` (or ``\\A``) counts as anchored anyway."""
    try:
        parsed = sre_parse.parse(pattern)
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return "invalid_regex", f"Not a valid Python regular expression: {exc}"
    nested: list[str] = []
    unbounded = _walk(list(parsed), nested, inside_repeat=False)
    if nested:
        return (
            "unsafe_regex",
            "A quantifier applies to a group that holds another quantifier or an alternation "
            "(as in (a+)+ or (a|ab)*), which can take exponential time; make the inner part "
            "possessive (a++) or atomic ((?>...)).",
        )
    first = parsed[0] if len(parsed) else (None, None)
    multiline = bool(parsed.state.flags & re.MULTILINE)
    anchored = anchored or (
        first[0] is sre.AT
        and (
            first[1] is sre.AT_BEGINNING_STRING or (first[1] is sre.AT_BEGINNING and not multiline)
        )
    )
    allowed = 2 if anchored else 1
    if unbounded > allowed:
        return (
            "unsafe_regex",
            f"The pattern has {unbounded} unbounded quantifiers; at most {allowed} "
            f"{'when anchored' if anchored else 'unless it is anchored with ^'} may backtrack, "
            "or matching can take polynomial time. Make the others possessive (.*+, \\w++).",
        )
    return "", ""


def _walk(items: Sequence[tuple[Any, Any]], nested: list[str], *, inside_repeat: bool) -> int:
    """The unbounded backtracking quantifiers in ``items``; appends to ``nested`` for every
    backtracking quantifier or alternation found inside a backtracking quantifier."""
    count = 0
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            variable = low != high
            if variable and inside_repeat:
                nested.append("repeat")
            count += int(variable and (high is sre.MAXREPEAT or high > UNBOUNDED_REPEAT))
            count += _walk(list(body), nested, inside_repeat=inside_repeat or variable)
        elif op is sre.BRANCH:
            if inside_repeat:
                nested.append("branch")
            count += sum(_walk(list(b), nested, inside_repeat=inside_repeat) for b in av[1])
        elif op is sre.GROUPREF_EXISTS:
            if inside_repeat:
                nested.append("branch")
            for branch in av[1:]:
                if branch is not None:
                    count += _walk(list(branch), nested, inside_repeat=inside_repeat)
        elif op is sre.SUBPATTERN:
            count += _walk(list(av[3]), nested, inside_repeat=inside_repeat)
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            count += _walk(list(av[1]), nested, inside_repeat=inside_repeat)
        elif op is sre.ATOMIC_GROUP:
            _walk(list(av), nested, inside_repeat=False)  # never backtracked into: not counted
        elif op is sre.POSSESSIVE_REPEAT:
            _walk(list(av[2]), nested, inside_repeat=False)
    return count


def search_regex_problem(pattern: str) -> tuple[str, str]:
    """("", "") for a pattern safe to search whole inputs with, else (code, detail).

    Stricter than ``regex_problem``, which allows one unbounded backtracking quantifier: a search
    over a whole input (redaction's custom rules, a guardrail's deny patterns) may allow none, or
    it takes quadratic time. With one more appended, ``regex_problem`` refuses the pattern exactly
    when it had one (the newline ends a verbose-mode comment, so the appended quantifier always
    counts)."""
    if len(pattern) > MAX_REGEX_CHARS:
        return "invalid_regex", f"A regular expression of at most {MAX_REGEX_CHARS} characters."
    code, detail = regex_problem(pattern, anchored=False)
    if code:
        return code, detail
    if regex_problem(pattern + "\n(?:.*)", anchored=False)[0]:
        return (
            "unsafe_regex",
            "A search over whole inputs, where any backtracking unbounded quantifier can take "
            "quadratic time: make it possessive (\\d++, [^ ]*+) or bound it ({1,40}).",
        )
    return "", ""
