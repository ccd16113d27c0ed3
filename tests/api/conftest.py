"""Data the API tests share: a prompt with one committed version, and one with a draft on top."""

from __future__ import annotations

import pytest

from registry.models import Prompt, PromptVersion
from tests.factories import make_version

PROMPT = "/api/v1/prompts/support.refund-reply"


@pytest.fixture
def committed(prompt: Prompt) -> PromptVersion:
    """Version 1 of ``support.refund-reply``, committed."""
    return make_version(prompt, message="First version.")


@pytest.fixture
def draft(prompt: Prompt, committed: PromptVersion) -> PromptVersion:
    """Version 2 of ``support.refund-reply``: the open draft, child of version 1."""
    return make_version(
        prompt,
        commit=False,
        message="Work in progress.",
        templates={
            "en": {
                "system": "You are a courteous support agent.",
                "instruction": "Greet {{ customer_name }} warmly.",
            }
        },
    )
