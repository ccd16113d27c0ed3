"""The release stream on its ASGI path (issue 21): ``config.asgi`` under uvicorn, in-process.

- many clients of one process receive every change, in order, from its one subscription;
- a client reconnecting with its last event id receives what it missed (and one whose id this
  process does not know is told to fetch the bundle);
- the limits: streams per key (429) and per process (503), each with ``Retry-After``, and a slot
  given back when its client leaves;
- a stream ends after its life with a ``retry:`` hint.

The WSGI path's behaviour (refusals, hello, keep-alives, the database check) is in
tests/sdk/test_stream_endpoint.py; Redis failing under connected clients in
tests/faults/test_stream_redis_down.py; the SDK following either path in
tests/sdk/test_client_stream.py.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from api.services import apikey_create
from api.streamlimits import slots
from registry.actors import Actor
from releases import services
from tests.streams import Followers, wait_for

# A live server needs a transactional test, whose flush SQLite refuses (release events are
# append-only, enforced by a trigger): these run on PostgreSQL only.
pytestmark = pytest.mark.postgres

MANAGER = Actor(label="release-manager")
CLIENTS = 40


@pytest.fixture
def key(db) -> str:
    return apikey_create(name="sdk", scopes=("prompts:read",))[1]


def changes(released, count: int, *, start: int = 0) -> list[int]:
    """``count`` release changes in staging, from step ``start`` of a canary started, ramped and
    aborted; their revisions."""
    where = {
        "prompt": released.prompt,
        "environment": released.environments["staging"],
        "actor": MANAGER,
        "reason": "test",
    }
    steps = [
        lambda: services.release_canary_start(**where, version=3, percent=Decimal(10)),
        lambda: services.release_canary_set_percent(**where, percent=Decimal(25)),
        lambda: services.release_canary_set_percent(**where, percent=Decimal(50)),
        lambda: services.release_canary_abort(**where),
    ]
    return [steps[i % len(steps)]().revision for i in range(start, start + count)]


def test_many_clients_receive_every_change_in_order(asgi_server, released, key, needs_redis):
    threads = threading.active_count()
    followers = Followers(asgi_server.url, key, CLIENTS)
    try:
        assert all(f.status == 200 and f.said_hello for f in followers)
        # No thread per client: the executor's few (and the followers' own loop) at most.
        assert threading.active_count() - threads < CLIENTS / 2
        assert len({f.events[0][2] for f in followers}) == 1  # one state, one id

        revisions = changes(released, 4)

        expected = [("support.refund-reply", r) for r in revisions]
        wait_for(lambda: all(f.releases() == expected for f in followers), "every change")
        # Each event's id names the state after it: the hello's etag once the bundle has it.
        ids = [event_id for _, _, event_id in followers[0].events]
        assert len(set(ids)) == len(ids) == 5
    finally:
        followers.close()


def test_a_client_resuming_from_its_last_event_id_receives_what_it_missed(
    asgi_server, released, key, needs_redis, anonymous_client
):
    first = Followers(asgi_server.url, key)
    [before] = changes(released, 1)
    wait_for(lambda: first[0].releases() == [("support.refund-reply", before)], "the change")
    last_id = first[0].last_id
    first.close()

    missed = changes(released, 2, start=1)  # the canary ramped to 25, then 50 while away

    again = Followers(asgi_server.url, key, last_event_id=last_id)
    try:
        name, hello, _ = again[0].events[0]
        assert (name, hello["resumed"]) == ("hello", True)
        wait_for(lambda: len(again[0].releases()) == 2, "the missed changes")
        assert again[0].releases() == [("support.refund-reply", r) for r in missed]
        bundle = anonymous_client.get(
            "/api/v1/environments/staging/bundle", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
        assert again[0].last_id == hello["etag"] == bundle["ETag"]
    finally:
        again.close()

    # A client that heard only the hello resumes from the hello's id.
    quiet = Followers(asgi_server.url, key)
    hello_id = quiet[0].last_id
    quiet.close()
    [later] = changes(released, 1, start=3)  # the canary aborted
    back = Followers(asgi_server.url, key, last_event_id=hello_id)
    try:
        assert back[0].events[0][1]["resumed"] is True
        wait_for(lambda: back[0].releases() == [("support.refund-reply", later)], "the abort")
    finally:
        back.close()

    # An id this process never saw (another process's state, or one older than its history):
    # the hello says so, and the client fetches the bundle.
    stranger = Followers(asgi_server.url, key, last_event_id='"not-a-state-seen-here"')
    stranger.close()
    assert stranger[0].events[0][1]["resumed"] is False
    assert stranger[0].releases() == []


def test_streams_beyond_the_per_key_limit_are_a_429_with_retry_after(
    asgi_server, released, key, settings
):
    settings.RELEASE_STREAM_MAX_PER_KEY = 2
    held = Followers(asgi_server.url, key, 2)
    refused = Followers(asgi_server.url, key)
    other_key = apikey_create(name="other-service", scopes=("prompts:read",))[1]
    other = Followers(asgi_server.url, other_key)
    try:
        assert [f.status for f in held] == [200, 200]
        assert refused[0].status == 429
        assert refused[0].problem["type"] == "/problems/too-many-streams"
        assert 1 <= int(refused[0].headers["retry-after"]) <= settings.RELEASE_STREAM_RETRY_SECONDS
        assert other[0].status == 200  # another key has its own share

        held.close()  # the clients leave: their slots are given back
        wait_for(lambda: slots.held_by(refused_key_id(key)) == 0, "the slots to be given back")
        again = Followers(asgi_server.url, key)
        assert again[0].status == 200
        again.close()
    finally:
        refused.close()
        other.close()


def refused_key_id(raw: str) -> int:
    from api.keyring import keyring

    return keyring.authenticate(raw).pk


def test_streams_beyond_the_per_process_limit_are_a_503_with_retry_after(
    asgi_server, released, key, settings
):
    settings.RELEASE_STREAM_MAX_PER_PROCESS = 3
    held = Followers(asgi_server.url, key, 3)
    refused = Followers(asgi_server.url, key)
    try:
        assert [f.status for f in held] == [200, 200, 200]
        assert refused[0].status == 503
        assert refused[0].problem["type"] == "/problems/streams-full"
        assert 1 <= int(refused[0].headers["retry-after"]) <= settings.RELEASE_STREAM_RETRY_SECONDS
    finally:
        held.close()
        refused.close()
    wait_for(lambda: slots.total == 0, "every slot to be given back")


def test_a_stream_ends_after_its_life_with_a_retry_hint(asgi_server, released, key, settings):
    settings.RELEASE_STREAM_MAX_SECONDS = 1
    followers = Followers(asgi_server.url, key, 3)
    try:
        wait_for(lambda: all(f.ended for f in followers), "the streams to end")
        retry_ms = settings.RELEASE_STREAM_RETRY_SECONDS * 1000
        assert all(0 < f.retry <= retry_ms for f in followers)
        assert all([name for name, _, _ in f.events] == ["hello"] for f in followers)
    finally:
        followers.close()
    wait_for(lambda: slots.total == 0, "every slot to be given back")
