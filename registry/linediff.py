"""Line diffs whose cost is bounded before they run (DESIGN "Budgets before work").

``difflib.SequenceMatcher`` without autojunk is quadratic in the lines it compares: two 1,000-line
sections that differ everywhere cost ~0.2 s, a 50,000-character section of short lines tens of
seconds. So the lines the two texts share at the start and at the end are set aside first (a
linear scan, and the usual shape of an edit), and only the differing middle is compared line by
line, when it is at most ``max_lines`` long on each side. Past that, the middle is one replaced
block: ``line_diff_coarse``, which the caller flags, so a reader knows it is not line by line.

Opcodes are ``SequenceMatcher``'s ``(tag, i1, i2, j1, j2)``; the unified text is rendered from
them, so it never runs a second, unbounded matcher.

Inside a changed line, ``word_diff`` marks the words that changed, under the same kind of bounds
(per line, and per page through a ``WordBudget``): see "words inside a changed line" below.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

Opcode = tuple[str, int, int, int, int]

CONTEXT_LINES = 3


def _common_ends(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """How many lines the texts share at the start, then at the end (never overlapping)."""
    limit = min(len(a), len(b))
    start = 0
    while start < limit and a[start] == b[start]:
        start += 1
    end = 0
    while end < limit - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return start, end


def line_diff_bounded(a: Sequence[str], b: Sequence[str], *, max_lines: int) -> list[Opcode] | None:
    """The opcodes of a line-by-line diff, or None when more than ``max_lines`` lines differ on
    either side (comparing them would be too slow)."""
    start, end = _common_ends(a, b)
    middle_a, middle_b = a[start : len(a) - end], b[start : len(b) - end]
    if max(len(middle_a), len(middle_b)) > max_lines:
        return None
    matcher = difflib.SequenceMatcher(a=middle_a, b=middle_b, autojunk=False)
    middle = [
        (tag, i1 + start, i2 + start, j1 + start, j2 + start)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if i1 != i2 or j1 != j2
    ]
    return _ends(a, b, start, end, middle)


def line_diff_coarse(a: Sequence[str], b: Sequence[str]) -> list[Opcode]:
    """Shared lines at the start and end kept, everything between one replaced block: linear."""
    start, end = _common_ends(a, b)
    i2, j2 = len(a) - end, len(b) - end
    tag = "replace" if i2 > start and j2 > start else "delete" if i2 > start else "insert"
    middle = [(tag, start, i2, start, j2)] if i2 > start or j2 > start else []
    return _ends(a, b, start, end, middle)


def _ends(
    a: Sequence[str], b: Sequence[str], start: int, end: int, middle: list[Opcode]
) -> list[Opcode]:
    opcodes: list[Opcode] = [("equal", 0, start, 0, start)] if start else []
    opcodes += middle
    if end:
        opcodes.append(("equal", len(a) - end, len(a), len(b) - end, len(b)))
    return _merged(opcodes)  # both empty: no opcode, as SequenceMatcher answers


def _merged(opcodes: list[Opcode]) -> list[Opcode]:
    """Adjacent ``equal`` runs joined (the matcher's middle may start or end with one)."""
    out: list[Opcode] = []
    for code in opcodes:
        if out and code[0] == "equal" and out[-1][0] == "equal":
            tag, i1, _, j1, _ = out[-1]
            out[-1] = (tag, i1, code[2], j1, code[4])
        else:
            out.append(code)
    return out


def unified_text(a: Sequence[str], b: Sequence[str], opcodes: list[Opcode], label: str) -> str:
    """``difflib.unified_diff``'s text (3 lines of context), from opcodes already computed."""
    return "\n".join(_unified_lines(a, b, opcodes, label))


def _unified_lines(
    a: Sequence[str], b: Sequence[str], opcodes: list[Opcode], label: str
) -> Iterator[str]:
    started = False
    for group in _grouped(opcodes, CONTEXT_LINES):
        if not started:
            started = True
            yield f"--- {label}"
            yield f"+++ {label}"
        first, last = group[0], group[-1]
        yield f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@"
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                yield from (" " + line for line in a[i1:i2])
                continue
            if tag in {"replace", "delete"}:
                yield from ("-" + line for line in a[i1:i2])
            if tag in {"replace", "insert"}:
                yield from ("+" + line for line in b[j1:j2])


def _grouped(opcodes: list[Opcode], n: int) -> Iterator[list[Opcode]]:
    """Hunks with up to ``n`` lines of context: ``SequenceMatcher.get_grouped_opcodes``."""
    codes = list(opcodes)
    if not codes:
        return
    if codes[0][0] == "equal":
        tag, i1, i2, j1, j2 = codes[0]
        codes[0] = tag, max(i1, i2 - n), i2, max(j1, j2 - n), j2
    if codes[-1][0] == "equal":
        tag, i1, i2, j1, j2 = codes[-1]
        codes[-1] = tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal" and i2 - i1 > 2 * n:
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            yield group
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        yield group


def _range(start: int, stop: int) -> str:
    beginning, length = start + 1, stop - start
    if length == 1:
        return str(beginning)
    if not length:
        beginning -= 1
    return f"{beginning},{length}"


# --- words inside a changed line -------------------------------------------------------------
#
# A changed line is paired with its counterpart (the n-th deleted line of a replaced block with
# its n-th inserted line) and the two are compared token by token: a token is a run of word
# characters (any script: ``\w`` is Unicode), a run of whitespace, or one other character. The
# same bounds as for lines: the tokens both lines share at the start and the end are set aside
# (linear), the middle is compared only when it is at most ``WORD_DIFF_MAX_TOKENS`` tokens on each
# side and the page's ``WordBudget`` still covers it; otherwise the middle is one changed span and
# the result says it is not word by word (``exact=False``).

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")

# Tokens per side of a line's differing middle compared word by word (a quadratic comparison:
# 400 × 400 tokens is a few milliseconds); past it, the middle is one changed span.
WORD_DIFF_MAX_TOKENS = 400
# Token comparisons (|middle a| × |middle b|) a whole page may spend on word diffs: a page of
# 1,000 changed lines of 400 tokens each would otherwise cost 160 million. Past it, lines are
# still paired and their shared ends kept, their middles shown whole.
WORD_DIFF_PAGE_BUDGET = 4_000_000


@dataclass
class WordBudget:
    """What is left of a page's word-diff budget; one per page (or per request), shared by every
    line it compares, so the page's work is bounded however many lines changed."""

    remaining: int = WORD_DIFF_PAGE_BUDGET
    exhausted: bool = False

    def spend(self, cost: int) -> bool:
        if cost > self.remaining:
            self.exhausted = True
            return False
        self.remaining -= cost
        return True


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of a line: ``changed`` when it is not in the other line."""

    text: str
    changed: bool


@dataclass(frozen=True, slots=True)
class WordDiff:
    before: list[Span]
    after: list[Span]
    # False: the middle of the line was too long (or the page's budget spent) to compare word by
    # word; it is one changed span on each side.
    exact: bool = True


def tokens(text: str) -> list[str]:
    """Words, whitespace runs and single other characters; joined, they give back ``text``."""
    return _TOKEN.findall(text)


def word_diff(before: str, after: str, *, budget: WordBudget) -> WordDiff:
    """The spans of two paired lines, the changed ones marked (see the comment above)."""
    a, b = tokens(before), tokens(after)
    start, end = _common_ends(a, b)
    middle_a, middle_b = a[start : len(a) - end], b[start : len(b) - end]
    head, tail = "".join(a[:start]), "".join(a[len(a) - end :])
    exact = max(len(middle_a), len(middle_b)) <= WORD_DIFF_MAX_TOKENS and budget.spend(
        len(middle_a) * len(middle_b)
    )
    left: list[Span] = [Span(head, False)]
    right: list[Span] = [Span(head, False)]
    if exact and middle_a and middle_b:
        matcher = difflib.SequenceMatcher(a=middle_a, b=middle_b, autojunk=False)
        for tag, i1, i2, j1, j2 in _absorb_glue(matcher.get_opcodes(), middle_a):
            changed = tag != "equal"
            left.append(Span("".join(middle_a[i1:i2]), changed))
            right.append(Span("".join(middle_b[j1:j2]), changed))
    else:
        left.append(Span("".join(middle_a), True))
        right.append(Span("".join(middle_b), True))
    left.append(Span(tail, False))
    right.append(Span(tail, False))
    return WordDiff(_joined(left), _joined(right), exact)


def _absorb_glue(opcodes: list[Opcode], a: Sequence[str]) -> list[Opcode]:
    """An equal run of only spaces and punctuation between two changes counts as changed: two
    unrelated sentences share their spaces and commas, and marking every word between them on
    its own reads as confetti."""
    out: list[Opcode] = []
    for index, code in enumerate(opcodes):
        tag, i1, i2, j1, j2 = code
        inner = 0 < index < len(opcodes) - 1
        if tag == "equal" and inner and not any(_WORD.search(token) for token in a[i1:i2]):
            code = ("replace", i1, i2, j1, j2)
        out.append(code)
    return out


_WORD = re.compile(r"\w")


def _joined(spans: list[Span]) -> list[Span]:
    """Empty spans dropped, neighbours with the same mark joined."""
    out: list[Span] = []
    for span in spans:
        if not span.text:
            continue
        if out and out[-1].changed == span.changed:
            out[-1] = Span(out[-1].text + span.text, span.changed)
        else:
            out.append(span)
    return out
