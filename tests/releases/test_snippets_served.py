"""releases.snippets over the release cache: an include that follows reads the snippet's release
as the cache holds it now, so the announce of a snippet's release change is all a node needs to
serve every follower the new text; a warm trusted node reads no SQL to serve includes."""

from __future__ import annotations

import pytest

from registry.actors import Actor
from registry.services import prompt_create
from releases import services
from releases.cache import ReleaseCache
from releases.snippets import ServedSnippets, snippet_versions
from tests.factories import AUTHOR, make_version

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")


@pytest.fixture
def node(monkeypatch):
    """A web node whose copies are trusted, as a subscribed listener makes them (no Redis here:
    announcements are handed to it directly, as the listener would)."""
    monkeypatch.setattr(ReleaseCache, "trusted", property(lambda self: True))
    return ReleaseCache(listen=False)


@pytest.fixture
def follower(environments):
    voice = prompt_create(key="brand.voice", actor=AUTHOR, is_snippet=True)
    for text in ("Be warm.", "Be brief."):
        make_version(voice, variables=[], templates={"en": {"system": text}})
    reply = prompt_create(key="support.reply", actor=AUTHOR)
    make_version(
        reply,
        variables=[],
        templates={"en": {"system": "{{ snippet('brand.voice') }}", "instruction": "Hi."}},
    )
    for prompt in (voice, reply):
        services.release_deploy(
            prompt=prompt, environment=environments["staging"], version=1, actor=MANAGER
        )
    return voice, environments["staging"]


def served(node: ReleaseCache) -> ServedSnippets:
    release = node.lookup("staging", "support.reply").release
    return ServedSnippets(
        lookup=lambda key: node.lookup("staging", key).release, pinned=release.pinned
    )


def test_an_announced_snippet_change_is_what_followers_include_next(
    node, follower, django_assert_num_queries
):
    voice, staging = follower
    assert served(node).get(("brand.voice", None)).number == 1  # warms the environment

    with django_assert_num_queries(0):
        library = served(node)
        assert snippet_versions([("brand.voice", None)], library=library) == (
            ("brand.voice", None, 1),
        )

    release = services.release_deploy(
        prompt=voice, environment=staging, version=2, actor=MANAGER, reason="new voice"
    )
    node.announce("staging", "brand.voice", release.revision)

    text = served(node).get(("brand.voice", None))
    assert (text.number, text.templates["en"]["system"]) == (2, "Be brief.")


@pytest.mark.usefixtures("follower")
def test_a_snippet_without_a_stable_release_serves_nothing(node):
    assert served(node).get(("brand.voice", 7)) is None  # pinned, and never loaded
    assert served(node).get(("no.such", None)) is None
