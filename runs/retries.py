"""How long to wait before retrying a model call (runs.providers): the provider's ``Retry-After``
when it gives one, capped, else exponential backoff with full jitter (DESIGN "Failure rules")."""

from __future__ import annotations

import contextlib
import email.utils
import math
import random
from datetime import UTC, datetime
from typing import Any

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 8.0
# A provider asking for a longer pause than this gets it shortened: a caller is waiting, and the
# next retry (or the fallback) is a better use of the time than a minute's sleep.
RETRY_AFTER_CAP_SECONDS = 20.0


def retry_after_seconds(response: Any) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or date)."""
    headers = getattr(response, "headers", None) or {}
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(headers.get("retry-after", ""))
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def backoff_seconds(retry: int, retry_after: float | None) -> float:
    """The server's Retry-After when given (capped), else exponential backoff with full jitter."""
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_SECONDS)
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**retry))
