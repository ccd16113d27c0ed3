"""Redis failing under the ASGI stream process's connected clients (issue 21).

The process's one subscription goes through a proxy the test takes down (tests/faults/conftest.py):
the clients stay connected, a change made meanwhile (whose message cannot even be published)
reaches every one of them through the database check, and when Redis is back the process
subscribes again and the next change reaches them too.
"""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from api import streamhub
from api.services import apikey_create
from registry.actors import Actor
from releases import services
from tests.streams import Followers, wait_for

pytestmark = pytest.mark.postgres

MANAGER = Actor(label="release-manager")
KEY = "support.refund-reply"


def test_clients_follow_through_a_redis_outage(asgi_server, released, redis_proxy, settings):
    redis_db = urlsplit(settings.REDIS_URL).path or "/0"
    settings.REDIS_URL = f"redis://127.0.0.1:{redis_proxy.port}{redis_db}"
    key = apikey_create(name="sdk", scopes=("prompts:read",))[1]
    where = {
        "prompt": released.prompt,
        "environment": released.environments["staging"],
        "actor": MANAGER,
        "reason": "test",
    }
    followers = Followers(asgi_server.url, key, 5)
    try:
        hub = streamhub._hub
        wait_for(lambda: hub is not None and hub.live, "the subscription")

        def everyone_has(revision: int) -> bool:
            return all((KEY, revision) in f.releases() for f in followers)

        started = services.release_canary_start(**where, version=3, percent=Decimal(10))
        wait_for(lambda: everyone_has(started.revision), "the canary, by message")

        redis_proxy.down()
        wait_for(lambda: not hub.live, "the hub to notice Redis is gone")
        ramped = services.release_canary_set_percent(**where, percent=Decimal(50))
        wait_for(lambda: everyone_has(ramped.revision), "the ramp, by the database check")

        redis_proxy.up()
        wait_for(lambda: hub.live, "the subscription to return")
        aborted = services.release_canary_abort(**where)
        wait_for(lambda: everyone_has(aborted.revision), "the abort")

        assert all(not f.ended for f in followers)  # nobody was cut off
        revisions = [started.revision, ramped.revision, aborted.revision]
        assert all(f.releases() == [(KEY, r) for r in revisions] for f in followers)
    finally:
        followers.close()
