"""Test data, built through the services so rows are always what the product itself would write."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from registry.actors import Actor
from registry.content import VersionContent
from registry.models import Prompt, PromptVersion
from registry.services import version_create

AUTHOR = Actor(label="tests")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    key = factory.Sequence(lambda n: f"support.reply-{n}")
    description = "Replies to a customer."
    default_locale = "en"
    tags = factory.LazyFunction(lambda: ["support"])


# A tool in OpenAI's format, as a binding declares it (issue 15): the tests' usual one.
ORDER_LOOKUP = {
    "type": "function",
    "function": {
        "name": "order_lookup",
        "description": "Find an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def content_data(**overrides: Any) -> dict[str, Any]:
    """A valid version body, as the API takes it: one declared variable used in every locale."""
    data: dict[str, Any] = {
        "variables": [
            {
                "name": "customer_name",
                "type": "string",
                "required": True,
                "description": "The customer's first name.",
            },
        ],
        "model": {"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.2}},
        "templates": {
            "en": {
                "system": "You are a courteous support agent.",
                "instruction": "Greet {{ customer_name }} and answer the question.",
            },
        },
    }
    data.update(overrides)
    return data


def make_version(
    prompt: Prompt,
    *,
    commit: bool = True,
    message: str = "A version.",
    actor: Actor = AUTHOR,
    **overrides: Any,
) -> PromptVersion:
    return version_create(
        prompt=prompt,
        actor=actor,
        message=message,
        commit=commit,
        content=VersionContent.from_dict(content_data(**overrides)),
    )


def event(**overrides: Any) -> dict[str, Any]:
    """A valid outcome of ``support.refund-reply`` v2 in staging (the ``released`` fixture)."""
    data: dict[str, Any] = {
        "event_id": f"evt-{uuid.uuid4()}",
        "prompt": "support.refund-reply",
        "version": 2,
        "environment": "staging",
        "status": "ok",
        "occurred_at": (timezone.now() - timedelta(minutes=1)).isoformat(),
    }
    data.update(overrides)
    return data
