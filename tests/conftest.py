"""Personas and clients shared by the suite (STYLE R14).

Each API key persona says in its comment what it may do; endpoint tests use them to check scopes
and environment limits the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from api.services import apikey_create
from registry.actors import Actor
from tests.factories import PromptFactory, UserFactory


@pytest.fixture
def make_client(db) -> Callable[..., APIClient]:
    """``make_client("prompts:read", environments=["staging"])``: a client with a fresh key."""

    def make(*scopes: str, environments: tuple[str, ...] = (), name: str = "tests") -> APIClient:
        key, raw = apikey_create(name=name, scopes=scopes, environments=environments)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        client.key = key
        return client

    return make


@pytest.fixture
def author_client(make_client) -> APIClient:
    """A prompt repository's CI: reads and writes prompts and drafts, commits them."""
    return make_client("prompts:read", "prompts:write", name="author-ci")


@pytest.fixture
def reader_client(make_client) -> APIClient:
    """A service that only reads prompts: every write answers 403 insufficient-scope."""
    return make_client("prompts:read", name="reader")


@pytest.fixture
def releaser_client(make_client) -> APIClient:
    """Release automation: changes releases, may read prompts, may not write them."""
    return make_client("prompts:read", "releases:write", name="release-bot")


@pytest.fixture
def anonymous_client() -> APIClient:
    """No key at all: every API call answers 401 with a Bearer challenge."""
    return APIClient()


@pytest.fixture
def author(db):
    """A person in the "Prompt authors" group: edits prompts and drafts, commits, no releases."""
    from django.contrib.auth.models import Group

    user = UserFactory(username="alice", is_staff=True)
    user.groups.add(Group.objects.get(name="Prompt authors"))
    return user


@pytest.fixture
def actor() -> Actor:
    return Actor(label="tests")


@pytest.fixture
def prompt(db):
    return PromptFactory(key="support.refund-reply")
