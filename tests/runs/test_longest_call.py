"""How long a model call may take when nothing cancels it (``runs.providers.longest_seconds``):
what a stream whose client left waits for a classifier's moderation (``runs.streaming``)."""

from __future__ import annotations

import pytest

from registry.content import ModelBinding, ModelTarget
from runs.models import Provider
from runs.providers import longest_seconds
from runs.retries import RETRY_AFTER_CAP_SECONDS


def provider(name: str, timeout: float, retries: int) -> Provider:
    return Provider(name=name, timeout_seconds=timeout, max_retries=retries)


def test_every_target_every_retry_and_its_longest_wait():
    binding = ModelBinding(
        provider="a", model="m", fallbacks=(ModelTarget("b", "n"), ModelTarget("gone", "x"))
    )
    providers = {"a": provider("a", 10, 2), "b": provider("b", 5, 0)}

    # a: 3 calls and 2 waits; b: 1 call; an unconfigured target is refused at once.
    assert longest_seconds(binding, providers) == pytest.approx(
        3 * 10 + 2 * RETRY_AFTER_CAP_SECONDS + 5
    )


def test_a_response_schema_adds_one_repair_per_target():
    binding = ModelBinding(provider="a", model="m", response_schema={"type": "object"})

    assert longest_seconds(binding, {"a": provider("a", 10, 0)}) == pytest.approx(20)
