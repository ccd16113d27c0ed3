"""Shared by the runs tests: model calls go to servers on loopback only."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _loopback_only(no_proxy) -> None:
    """Every runs test, not only those using ``model_server``: no proxy takes a call elsewhere."""
