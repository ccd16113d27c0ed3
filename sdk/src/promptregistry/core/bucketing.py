"""The traffic-split contract, version 1: the SDK's own copy of the server's formula.

    bucket(salt, subject) = int.from_bytes(sha256((salt + ":" + subject).encode("utf-8")).digest()[:8], "big") % 10000

Splits are ``(label, weight)`` in basis points (0–10000), walked in order: the first whose
cumulative edge exceeds the bucket wins; past the last edge the subject gets the stable version.
Splits ``[("A", 3000), ("B", 3000)]`` give buckets 0–2999 to A, 3000–5999 to B and the rest to
stable.

A change of formula is a new ``HASH_VERSION`` (the bundle says which one it was computed for),
never an edit: services in the field compute the same buckets as the server from the same
bundle. Both implementations pass ``shared/contracts/bucketing-vectors.json``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum

HASH_VERSION = 1
BUCKETS = 10_000


class Reason(StrEnum):
    """Why a version was served."""

    STABLE = "stable"
    CANARY = "canary"
    EXPERIMENT = "experiment"


def bucket(salt: str, subject: str) -> int:
    digest = hashlib.sha256((salt + ":" + subject).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(splits: Sequence[tuple[str, int]], bucket: int) -> str | None:
    """The label whose cumulative edge first exceeds ``bucket``; None past the last edge."""
    edge = 0
    for label, weight in splits:
        edge += weight
        if bucket < edge:
            return label
    return None
