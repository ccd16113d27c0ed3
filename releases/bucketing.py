"""The traffic-split contract (DESIGN.md, "Traffic split contract"), version 1.

    bucket(salt, subject) = int.from_bytes(sha256((salt + ":" + subject).encode("utf-8")).digest()[:8], "big") % 10000

Splits are ``(label, weight)`` in basis points (0–10000), walked in order: the first whose
cumulative edge exceeds the bucket wins; past the last edge the subject gets the stable version.

Worked example: splits ``[("A", 3000), ("B", 3000)]`` have edges 3000 and 6000, so buckets 0–2999
get A, 3000–5999 get B and 6000–9999 stay on stable. Raising B to 4000 moves the edge to 7000:
only buckets 6000–6999 change (stable -> B), which is why raising a canary only adds subjects.

Every decision (canary, experiment, shadow sampling) draws with its own salt, so one never skews
another. Changing this formula is a new ``HASH_VERSION`` with new salts, never an edit: SDKs in
the field compute the same buckets from the same bundle. The SDK has its own copy of this module;
both pass ``../shared/contracts/bucketing-vectors.json``.

Pure module: imports only ``hashlib`` and the standard library's typing helpers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

HASH_VERSION = 1
BUCKETS = 10_000


class Reason(StrEnum):
    STABLE = "stable"
    CANARY = "canary"
    EXPERIMENT = "experiment"
    # Not drawn: the caller named the version (the OpenAI-compatible endpoints' prompt.version,
    # decision 0042). Never in a bundle, so SDKs never meet it.
    PINNED = "pinned"


@dataclass(frozen=True, slots=True)
class Assignment:
    label: str  # "stable", "canary" or the experiment variant's name
    reason: Reason
    bucket: int | None  # 0..9999, for debugging and the UI; None when nothing was drawn
    sticky: bool  # False when the server drew the subject itself


def bucket(salt: str, subject: str) -> int:
    digest = hashlib.sha256((salt + ":" + subject).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(splits: Sequence[tuple[str, int]], bucket_: int) -> str | None:
    """The label whose cumulative edge first exceeds ``bucket_``; None past the last edge."""
    edge = 0
    for label, weight in splits:
        edge += weight
        if bucket_ < edge:
            return label
    return None
