"""Snippets on the runtime path: resolve, render, run and the bundle serve what the environment
serves of each snippet (pinned: that version; following: the snippet's stable release there),
a snippet's release change reaches the prompts following it at once (new text, new ETag), and
the SDK renders from the bundle exactly what the server renders."""

from __future__ import annotations

import json

import pytest
from promptregistry.core import bundle_from_json, resolve, to_messages, version_render

from registry.actors import Actor
from registry.services import prompt_create
from releases import services
from tests.factories import AUTHOR, make_version

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")
KEY = "support.reply"
RESOLVE = f"/api/v1/prompts/{KEY}/resolve"
RENDER = f"/api/v1/prompts/{KEY}/render"
VARIABLES = [{"name": "customer_name", "type": "string", "required": True}]


@pytest.fixture
def service(make_client):
    return make_client("prompts:read", name="checkout-service")


@pytest.fixture
def publish_changes(django_capture_on_commit_callbacks):
    def run(call):
        with django_capture_on_commit_callbacks(execute=True):
            return call()

    return run


@pytest.fixture
def snippets(environments):
    """``brand.voice`` (v1 "Be warm.", v2 "Be brief.", both with French) stable at v1 in
    staging; ``rules.safety`` v1, included pinned by the brand voice's v2; ``support.reply``
    following the brand voice in its system section and pinning v2 in its context."""
    voice = prompt_create(key="brand.voice", actor=AUTHOR, is_snippet=True)
    safety = prompt_create(key="rules.safety", actor=AUTHOR, is_snippet=True)
    make_version(safety, variables=[], templates={"en": {"system": "No PII."}})
    make_version(
        voice, variables=[], templates={"en": {"system": "Be warm."}, "fr": {"system": "Chaleur."}}
    )
    make_version(
        voice,
        variables=[],
        templates={
            "en": {"system": "Be brief.", "format": "{{ snippet('rules.safety', version=1) }}"},
            "fr": {"system": "Bref."},
        },
    )
    reply = prompt_create(key=KEY, actor=AUTHOR)
    make_version(
        reply,
        variables=VARIABLES,
        templates={
            locale: {
                "system": "{{ snippet('brand.voice') }}",
                "context": "Pinned: {{ snippet('brand.voice', version=2) }}",
                "instruction": "Hello {{ customer_name }}.",
            }
            for locale in ("en", "fr")
        },
    )
    staging = environments["staging"]
    for prompt, number in ((voice, 1), (reply, 1)):
        services.release_deploy(
            prompt=prompt, environment=staging, version=number, actor=MANAGER, reason="setup"
        )
    return {"voice": voice, "reply": reply, "staging": staging}


def render(client, **body):
    body = {"environment": "staging", "variables": {"customer_name": "Ana"}, **body}
    return client.post(RENDER, json.dumps(body), content_type="application/json")


def test_render_serves_the_followed_snippets_stable_and_the_pinned_version(service, snippets):
    answer = render(service).json()
    assert answer["rendered"]["system"] == "Be warm."
    assert answer["rendered"]["context"] == "Pinned: Be brief.\n\nNo PII."
    assert answer["snippets"] == [
        {"key": "brand.voice", "pinned": None, "version": 1},
        {"key": "brand.voice", "pinned": 2, "version": 2},
        {"key": "rules.safety", "pinned": 1, "version": 1},
    ]
    french = render(service, locale="fr").json()["rendered"]
    assert (french["system"], french["context"]) == ("Chaleur.", "Pinned: Bref.")


def test_a_snippet_deploy_and_rollback_reach_a_follower_at_once(service, snippets, publish_changes):
    query = {"environment": "staging", "subject": "user-1"}
    first = service.get(RESOLVE, query)  # the cache is warm from here on
    assert render(service).json()["rendered"]["system"] == "Be warm."

    publish_changes(
        lambda: services.release_deploy(
            prompt=snippets["voice"],
            environment=snippets["staging"],
            version=2,
            actor=MANAGER,
            reason="new voice",
        )
    )

    after = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=first["ETag"])
    assert after.status_code == 200  # the follower's own revision did not move; its ETag did
    assert after.json()["revision"] == first.json()["revision"]
    assert after.json()["snippets"][0] == {"key": "brand.voice", "pinned": None, "version": 2}
    assert render(service).json()["rendered"]["system"] == "Be brief.\n\nNo PII."

    publish_changes(
        lambda: services.release_rollback(
            prompt=snippets["voice"], environment=snippets["staging"], actor=MANAGER
        )
    )

    rolled_back = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=after["ETag"])
    assert rolled_back.status_code == 200
    assert rolled_back.json()["snippets"][0]["version"] == 1
    assert render(service).json()["rendered"]["system"] == "Be warm."


def test_a_followed_snippet_not_released_there_is_a_clear_render_problem(
    service, snippets, environments
):
    services.release_deploy(
        prompt=snippets["reply"],
        environment=environments["development"],
        version=1,
        actor=MANAGER,
        reason="try",
    )
    response = render(service, environment="development")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["code"] == "snippet_unavailable"
    assert error["pointer"] == "/templates/en/system"
    resolved = service.get(RESOLVE, {"environment": "development"}).json()
    assert resolved["snippets"][0] == {"key": "brand.voice", "pinned": None, "version": None}


@pytest.mark.parametrize("locale", ["en", "fr"])
def test_the_sdk_renders_from_the_bundle_what_the_server_renders(service, snippets, locale):
    response = service.get("/api/v1/environments/staging/bundle")
    body = response.json()
    assert sorted(body["snippets"]) == ["brand.voice", "rules.safety"]
    bundle = bundle_from_json(body, etag=response["ETag"])
    resolution = resolve(bundle.releases[KEY], subject="user-1", locale=locale)
    local = version_render(
        resolution.version,
        locale=resolution.locale,
        variables={"customer_name": "Ana"},
        snippets=resolution.snippets,
    )
    served = render(service, locale=locale).json()
    assert local == served["rendered"]
    assert to_messages(local) == served["messages"]


# --- the authoring API ----------------------------------------------------------------------------


def test_the_authoring_api_marks_a_snippet_and_refuses_a_cycle_with_a_problem(author_client):
    created = author_client.post(
        "/api/v1/prompts", {"key": "rules.a", "snippet": True}, format="json"
    )
    assert (created.status_code, created.json()["snippet"]) == (201, True)
    author_client.post("/api/v1/prompts", {"key": "rules.b", "snippet": True}, format="json")
    body = {"message": "m", "commit": True, "model": {"provider": "local", "model": "echo-1"}}
    author_client.post(
        "/api/v1/prompts/rules.a/versions",
        {**body, "templates": {"en": {"system": "A."}}},
        format="json",
    )
    author_client.post(
        "/api/v1/prompts/rules.b/versions",
        {**body, "templates": {"en": {"system": "{{ snippet('rules.a') }}"}}},
        format="json",
    )
    refused = author_client.post(
        "/api/v1/prompts/rules.a/versions",
        {**body, "templates": {"en": {"system": "{{ snippet('rules.b') }}"}}},
        format="json",
    )
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/invalid-content")
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        ("snippet_cycle", "/templates")
    ]
    versions = author_client.get("/api/v1/prompts/rules.a/versions").json()
    assert [v["number"] for v in versions["results"]] == [1]  # nothing saved half-way
    unmark = author_client.patch("/api/v1/prompts/rules.a", {"snippet": False}, format="json")
    assert unmark.status_code == 400
    assert [e["code"] for e in unmark.json()["errors"]] == ["snippet_in_use"]


# --- the release history of a follower ------------------------------------------------------------


def test_a_followers_release_page_shows_what_its_snippets_served(client, snippets):
    from django.contrib.auth.models import Group

    from releases.models import Release
    from tests.factories import UserFactory

    services.release_deploy(
        prompt=snippets["voice"],
        environment=snippets["staging"],
        version=2,
        actor=MANAGER,
        reason="new voice",
    )
    rita = UserFactory(username="rita", is_staff=True)
    rita.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(rita)
    release = Release.objects.get(prompt=snippets["reply"], environment=snippets["staging"])

    page = client.get(f"/admin/releases/release/{release.pk}/change/")

    rows = page.context["snippet_rows"]
    assert [(r.event.release.prompt.key, r.event.reason) for r in rows] == [
        ("brand.voice", "new voice"),
        ("brand.voice", "setup"),
    ]
    assert [(c.before, c.after) for c in rows[0].changes if c.part == "stable"] == [("1", "2")]
    assert "Snippets it follows" in page.content.decode()


def test_a_snippet_version_its_followers_cannot_serve_is_refused_unless_overridden(
    snippets, environments
):
    from releases.errors import PromotionBlocked
    from releases.models import Release

    make_version(snippets["voice"], variables=[], templates={"en": {"system": "English only."}})
    deploy = {"prompt": snippets["voice"], "environment": snippets["staging"], "actor": MANAGER}

    with pytest.raises(PromotionBlocked) as refused:
        services.release_deploy(version=3, **deploy)
    assert refused.value.gate == "snippet-followers"
    assert "support.reply v1 includes brand.voice in fr in staging" in refused.value.message
    release = Release.objects.get(prompt=snippets["voice"], environment=snippets["staging"])
    assert release.stable_version.number == 1

    # Where nothing follows it, nothing refuses it; past the gate, a reason is kept.
    services.release_deploy(
        prompt=snippets["voice"], environment=environments["development"], version=3, actor=MANAGER
    )
    services.release_deploy(version=3, override_gates=True, reason="French next week", **deploy)
    release.refresh_from_db()
    assert release.stable_version.number == 3
    assert release.events.order_by("-id").first().overridden_gates[0]["gate"] == (
        "snippet-followers"
    )
