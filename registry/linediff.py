"""Line diffs whose cost is bounded before they run (DESIGN "Budgets before work").

``difflib.SequenceMatcher`` without autojunk is quadratic in the lines it compares: two 1,000-line
sections that differ everywhere cost ~0.2 s, a 50,000-character section of short lines tens of
seconds. So the lines the two texts share at the start and at the end are set aside first (a
linear scan, and the usual shape of an edit), and only the differing middle is compared line by
line, when it is at most ``max_lines`` long on each side. Past that, the middle is one replaced
block: ``line_diff_coarse``, which the caller flags, so a reader knows it is not line by line.

Opcodes are ``SequenceMatcher``'s ``(tag, i1, i2, j1, j2)``; the unified text is rendered from
them, so it never runs a second, unbounded matcher.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

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
