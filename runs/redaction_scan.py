"""The scanner the redaction rules share (``runs.redaction``, ``runs.redaction_secrets``).

A rule is a candidate pattern and a decider: the pattern finds candidates left to right, the decider
looks at each one in Python (a checksum, what it is glued to) and says which spans to replace and
where the search goes on. Pure module: the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    text: str


# A decider looks at one candidate and returns the spans to replace (none: rejected) and where the
# search resumes.
Decider = Callable[[str, re.Match[str]], tuple[list[Span], int]]


def scan(
    text: str,
    pattern: re.Pattern[str],
    decide: Decider,
    *,
    right_after: re.Pattern[str] | None = None,
) -> str:
    """``text`` with the spans ``decide`` keeps replaced, in one left-to-right scan.

    ``right_after`` is ``pattern`` without its lookbehind: it is tried where a replacement ends,
    since the lookbehind sees the text replaced, not the placeholder (``a@b.comx-y@c.de``: once
    the first address is a placeholder, the second starts after ``]``). Without it each such
    neighbour would cost ``redact_text`` another pass.
    """
    out: list[str] = []
    done = 0
    pos = 0
    while True:
        match = right_after.match(text, done) if right_after and out and pos == done else None
        if match is None and (match := pattern.search(text, pos)) is None:
            break
        spans, resume = decide(text, match)
        for span in spans:
            out.append(text[done : span.start])
            out.append(span.text)
            done = span.end
        pos = max(resume, match.start() + 1)
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


def glued(text: str, index: int) -> bool:
    """Whether the character at ``index`` joins the token before it into a longer word."""
    return index < len(text) and (text[index].isalnum() or text[index] in "_-")
