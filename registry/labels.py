"""What text a caller may choose as an identifier or a label: one rule, written once as regular
expressions that Python's ``re`` and ECMA-262 (the OpenAPI schema's ``pattern``) read alike, so
the server checks exactly what the published schema says.

``str.isprintable()`` would be the obvious test, but it depends on the Unicode version of the
interpreter (an unassigned code point is "not printable" until a later Python assigns it) and no
schema pattern can say it. What matters is narrower and stable: no character that breaks a log
line or a table cell, or that cannot be seen (so "A" and "A\\u200b" would be two variants that
look the same), and no space at either end of a label.

- ``INVISIBLE``: C0 and C1 controls and DEL, the soft hyphen, zero-width and direction marks,
  line and paragraph separators, embeddings and isolates, word joiners, the byte order mark.
- ``SPACE``: the space characters (a label may hold them inside, not at either end).

Pure (stdlib only), in the registry because it is the lowest layer: the releases app (variant
names), the runs app (event ids) and the API's schema use it.
"""

from __future__ import annotations

import re

INVISIBLE = r"\x00-\x1f\x7f-\x9f\xad\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
SPACE = r" \xa0\u1680\u2000-\u200a\u202f\u205f\u3000"

# ``(?!\n)`` before the final ``$``: Python's ``$`` (which Python-based validators and generators
# such as jsonschema and Schemathesis use) also matches before a trailing newline; ECMA-262's does
# not, and there the lookahead is always true.
END = r"(?!\n)$"
# An id (an event's id): no invisible character, and not only spaces. Spaces at the ends are the
# caller's to choose: an id is compared, never shown as a name.
ID_PATTERN = rf"^[^{INVISIBLE}]*[^{INVISIBLE}{SPACE}][^{INVISIBLE}]*{END}"
# A label (an experiment variant's name): no invisible character, no space at either end.
LABEL_PATTERN = rf"^[^{INVISIBLE}{SPACE}](?:[^{INVISIBLE}]*[^{INVISIBLE}{SPACE}])?{END}"

_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
_LABEL = re.compile(LABEL_PATTERN.removeprefix("^").removesuffix("$"))


def id_valid(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def label_valid(text: str) -> bool:
    return _LABEL.fullmatch(text) is not None
