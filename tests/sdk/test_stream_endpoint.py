"""GET /api/v1/environments/{environment}/stream: release changes as server-sent events.

The view's own behaviour, through Django's test client (the live-server tests of the SDK following
it are in test_client_stream.py): the same refusals as the bundle, a ``hello`` with the bundle's
ETag, a ``release`` event per change (from Redis pub/sub, or from the database every second
without Redis), keep-alive comments, and the end after ``RELEASE_STREAM_MAX_SECONDS``.

A stream is read event by event (``next``), so a test waits only as long as the event takes; every
stream is bounded by a lowered ``RELEASE_STREAM_MAX_SECONDS``, so a missing event ends the stream
(and fails the test) instead of hanging it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.test import override_settings

from api import stream
from api.runtime import revisions_etag
from registry.actors import Actor
from releases import services
from releases.selectors import release_revisions
from tests.api.helpers import assert_problem

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")


def stream_url(environment: str) -> str:
    return f"/api/v1/environments/{environment}/stream"


def events(response) -> Iterator[tuple[str, object]]:
    """``(event, data)`` per server-sent event, and ``("comment", text)`` per comment line."""
    buffer = b""
    for chunk in response.streaming_content:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            name, data = "message", None
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    yield "comment", line[1:].strip()
                elif line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
            if data is not None:
                yield name, data


@pytest.fixture
def service(make_client):
    """An SDK's key: reads prompts in every environment."""
    return make_client("prompts:read", name="checkout-service")


@pytest.fixture
def untrusted_cache(monkeypatch):
    """This process's release cache without a Redis listener: lookups read the database, so an
    outage shows."""
    from releases import cache
    from releases.cache import ReleaseCache

    node = ReleaseCache(listen=False)
    monkeypatch.setattr(cache, "_cache", node)
    return node


@pytest.fixture(params=["redis", "database"])
def change_feed(request, settings, django_capture_on_commit_callbacks):
    """How the stream learns of changes: Redis pub/sub (needs REDIS_URL), or the database checked
    every second (no Redis). Yields ``apply(call)``, which runs a release change as a commit
    would: with its after-commit message published."""
    if request.param == "redis":
        request.getfixturevalue("needs_redis")
    else:
        settings.REDIS_URL = ""

    def apply(call):
        with django_capture_on_commit_callbacks(execute=True):
            return call()

    return apply


def canary(released, environment: str = "staging", percent: int = 50):
    return services.release_canary_start(
        prompt=released.prompt,
        environment=released.environments[environment],
        version=3 if environment == "staging" else 2,
        percent=Decimal(percent),
        actor=MANAGER,
        reason="try v3",
    )


# --- what a stream says --------------------------------------------------------------------------


@override_settings(RELEASE_STREAM_MAX_SECONDS=5)
def test_the_stream_starts_with_hello_and_the_bundles_etag(service, released):
    bundle = service.get("/api/v1/environments/staging/bundle")

    response = service.get(stream_url("staging"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    name, data = next(events(response))
    assert (name, data) == ("hello", {"environment": "staging", "etag": bundle["ETag"]})
    response.close()


@override_settings(RELEASE_STREAM_MAX_SECONDS=10)
def test_a_release_change_is_an_event_with_its_prompt_and_revision(service, released, change_feed):
    response = service.get(stream_url("staging"))
    stream = events(response)
    assert next(stream)[0] == "hello"

    release = change_feed(lambda: canary(released))

    assert next(stream) == (
        "release",
        {"prompt": "support.refund-reply", "revision": release.revision},
    )
    response.close()


@override_settings(RELEASE_STREAM_MAX_SECONDS=3)
def test_a_change_in_another_environment_is_not_sent(service, released, change_feed):
    response = service.get(stream_url("staging"))

    change_feed(lambda: canary(released, "production"))

    sent = [name for name, _ in events(response) if name != "comment"]
    assert sent == ["hello"]


@override_settings(RELEASE_STREAM_MAX_SECONDS=10, REDIS_URL="redis://127.0.0.1:1/0")
def test_with_redis_down_the_stream_checks_the_database(service, released, untrusted_cache):
    response = service.get(stream_url("staging"))
    stream = events(response)
    assert next(stream)[0] == "hello"

    release = canary(released)  # no message could be published: only the database knows

    assert next(stream) == (
        "release",
        {"prompt": "support.refund-reply", "revision": release.revision},
    )
    response.close()


def test_the_stream_ends_after_its_maximum_and_keeps_alive_meanwhile(
    service, released, settings, monkeypatch
):
    settings.RELEASE_STREAM_MAX_SECONDS = 1
    monkeypatch.setattr(stream, "STREAM_KEEPALIVE_SECONDS", 0.2)

    response = service.get(stream_url("staging"))
    received = list(events(response))  # returns only because the stream ends

    assert received[0][0] == "hello"
    assert ("comment", "keep-alive") in received
    assert {name for name, _ in received} == {"hello", "comment"}


def test_the_hello_names_the_newest_bundle_after_a_change(service, released, settings):
    settings.RELEASE_STREAM_MAX_SECONDS = 1
    canary(released)
    bundle = service.get("/api/v1/environments/staging/bundle")

    response = service.get(stream_url("staging"))

    assert next(events(response)) == ("hello", {"environment": "staging", "etag": bundle["ETag"]})
    response.close()


def test_each_event_has_the_bundles_etag_after_it_as_its_id(service, released, settings):
    settings.RELEASE_STREAM_MAX_SECONDS = 10  # bounds the wait should the event never come
    settings.REDIS_URL = ""
    before = service.get("/api/v1/environments/staging/bundle")["ETag"]
    response = service.get(stream_url("staging"))
    chunks = iter(response.streaming_content)
    hello = next(chunks)
    canary(released)  # only the database knows: the stream's check finds it within a second

    change = next(chunk for chunk in chunks if b"event: release" in chunk)
    after = revisions_etag("staging", release_revisions(environment="staging"))
    response.close()

    assert hello.startswith(f"id: {before}\n".encode())
    assert change.startswith(f"id: {after}\n".encode())


@override_settings(RELEASE_STREAM_MAX_SECONDS=1)
def test_resuming_on_the_wsgi_path_works_only_when_nothing_changed(service, released):
    etag = service.get("/api/v1/environments/staging/bundle")["ETag"]

    same = service.get(stream_url("staging"), HTTP_LAST_EVENT_ID=etag)
    other = service.get(stream_url("staging"), HTTP_LAST_EVENT_ID='"another-state"')

    assert next(events(same)) == (
        "hello",
        {"environment": "staging", "etag": etag, "resumed": True},
    )
    assert next(events(other))[1]["resumed"] is False  # this path keeps no history: fetch
    same.close()
    other.close()


@override_settings(RELEASE_STREAM_MAX_SECONDS=5, RELEASE_STREAM_MAX_PER_KEY=1)
def test_a_key_holding_its_streams_is_refused_until_one_is_closed(service, released):
    held = service.get(stream_url("staging"))  # its slot is taken before its first event

    refused = service.get(stream_url("staging"))

    assert_problem(refused, 429, "/problems/too-many-streams")
    assert 1 <= int(refused["Retry-After"]) <= 10
    held.close()  # the server closes the response when its client leaves
    again = service.get(stream_url("staging"))
    assert again.status_code == 200
    again.close()


# --- refusals ------------------------------------------------------------------------------------


def test_no_key_is_a_401_with_a_bearer_challenge(anonymous_client, released):
    response = anonymous_client.get(stream_url("staging"))

    assert_problem(response, 401, "/problems/unauthenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_an_unknown_key_is_a_401(anonymous_client, released):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Bearer pr_not-a-real-key")

    assert_problem(anonymous_client.get(stream_url("staging")), 401, "/problems/unauthenticated")


def test_a_key_without_prompts_read_is_a_403(make_client, released):
    reporter = make_client("events:write", name="reporter")

    body = assert_problem(reporter.get(stream_url("staging")), 403, "/problems/insufficient-scope")
    assert body["required_scope"] == "prompts:read"


def test_a_key_limited_to_staging_cannot_follow_production(make_client, released):
    staging_only = make_client("prompts:read", environments=("staging",))

    body = assert_problem(
        staging_only.get(stream_url("production")), 403, "/problems/environment-forbidden"
    )
    assert body["environment"] == "production"


def test_an_unknown_environment_is_a_404(service, released):
    assert_problem(service.get(stream_url("nowhere")), 404, "/problems/environment-not-found")


@pytest.mark.parametrize("method", ["post", "put", "delete", "head"])
def test_other_methods_are_a_405(service, released, method):
    response = getattr(service, method)(stream_url("staging"))

    assert response.status_code == 405


def test_with_the_database_down_an_environment_never_loaded_is_a_503(
    service, released, untrusted_cache, database_down
):
    service.get(stream_url("nowhere"))  # the key is known from now on
    database_down()

    response = service.get(stream_url("staging"))

    assert_problem(response, 503, "/problems/database-unavailable")
    assert response["Retry-After"] == "5"


def test_with_the_database_down_a_held_environment_still_says_hello(
    service, released, untrusted_cache, database_down, settings
):
    settings.RELEASE_STREAM_MAX_SECONDS = 2
    settings.REDIS_URL = ""
    bundle = service.get("/api/v1/environments/staging/bundle")  # this process holds staging
    database_down()

    response = service.get(stream_url("staging"))
    received = list(events(response))  # the revision checks fail meanwhile; the stream goes on

    assert received[0] == ("hello", {"environment": "staging", "etag": bundle["ETag"]})
    assert [name for name, _ in received] == ["hello"]


def test_the_openapi_schema_describes_the_stream(anonymous_client):
    schema = anonymous_client.get("/api/v1/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/environments/{environment}/stream"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"401", "403", "404"} <= set(operation["responses"])
