"""Reading this process's Prometheus metrics in tests: the difference a test's own actions make
(other tests of the same process count too, so absolute values mean nothing)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import REGISTRY


def value(name: str, **labels: str) -> float:
    """A sample's value in this process's registry (0 when the series does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counting(name: str, **labels: str) -> Callable[[], float]:
    """``added()``: how much the sample grew since ``counting`` was called."""
    before = value(name, **labels)
    return lambda: value(name, **labels) - before
