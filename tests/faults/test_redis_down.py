"""Redis stopped: the web serves from the database, nothing a caller sends is refused or lost.

Redis is the release cache's pub/sub, the Django cache and the Celery broker. Behind a proxy taken
down (tests/faults/conftest.py), the server must answer every runtime and release call from
PostgreSQL, show a release change at once, accept events, and answer a run (its shadow jobs are
dropped and counted: shadows are a sample). When Redis is back, the cache is trusted again.
"""

from __future__ import annotations

import pytest

from releases.models import Release
from runs.models import Call, ShadowRun
from tests.celery_worker import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

KEY = "support.refund-reply"
DEGRADED = "x-registry-degraded"


def runtime_calls(web, key: str) -> dict[str, object]:
    """Resolve, render and bundle of staging, as a service calls them."""
    return {
        "resolve": web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", key),
        "render": web.post(
            f"/api/v1/prompts/{KEY}/render",
            key,
            {"environment": "staging", "variables": {"customer_name": "Al"}},
        ),
        "bundle": web.get("/api/v1/environments/staging/bundle", key),
    }


def test_with_redis_down_everything_answers_from_the_database_and_nothing_accepted_is_lost(
    released, shadow_all, web, redis_proxy, service_key, manager_key, model_server, settings
):
    import redis

    shadow_all(3)
    warm = runtime_calls(web, service_key)
    assert {name: r.status_code for name, r in warm.items()} == dict.fromkeys(warm, 200)

    redis_proxy.down()
    # 1. The runtime path reads the database: current answers, nothing stale to say.
    answers = runtime_calls(web, service_key)
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 200)
    assert not any(DEGRADED in r.headers for r in answers.values())
    assert answers["resolve"].json()["version"] == 2

    # 2. A release change is committed and shows at once, though its message never reached Redis.
    revision = Release.objects.get(prompt=released.prompt, environment__name="staging").revision
    deployed = web.post(
        f"/api/v1/releases/staging/{KEY}/deploy",
        manager_key,
        {"version": 1, "reason": "back to v1"},
        headers={"If-Match": str(revision)},
    )
    assert deployed.status_code == 200, deployed.text
    assert released.release("staging").stable_version.number == 1
    resolved = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", service_key)
    assert (resolved.status_code, resolved.json()["version"]) == (200, 1)

    # 3. An event batch is accepted and stored: events never go through Redis.
    events = [
        {
            "event_id": f"e-{n}",
            "prompt": KEY,
            "version": 2,
            "environment": "staging",
            "status": "ok",
        }
        for n in range(3)
    ]
    response = web.post("/api/v1/events", service_key, {"events": events})
    assert response.status_code == 202, response.text
    assert Call.objects.filter(request_id__in=["e-0", "e-1", "e-2"]).count() == 3

    # 4. The broker refuses: a run answers and is recorded; its shadow job is dropped and counted
    # (shadows are a sample), never a failed or slowed live call.
    body = {"environment": "staging", "variables": {"customer_name": "Al"}}
    response = web.post(f"/api/v1/prompts/{KEY}/run", service_key, body)
    assert response.status_code == 200, response.text
    assert response.json()["shadow"] == [3]  # sampled; its job could not be queued
    # The record is written once the answer is sent (decision 0041): a moment after it arrives.
    recorded = Call.objects.filter(request_id=response.json()["request_id"])
    wait_for(recorded.exists, "the call's record")
    wait_for(lambda: "could not be queued" in web.log.read_text(), "the drop")
    assert not ShadowRun.objects.exists()

    # 5. Redis that accepts connections and never answers (a wedged server, a host gone from the
    # network): every call still answers, and the job in hand is given up after a timeout
    # rather than holding the shadow queue for ever.
    redis_proxy.hold()
    answers = runtime_calls(web, service_key)
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 200)
    response = web.post(f"/api/v1/prompts/{KEY}/run", service_key, body)
    assert response.status_code == 200, response.text
    wait_for(lambda: web.log.read_text().count("could not be queued") >= 2, "the second drop")

    # 6. Redis back: the listener subscribes again and changes still show; shadow jobs queue.
    redis_proxy.up()
    again = web.post(f"/api/v1/releases/staging/{KEY}/deploy", manager_key, {"version": 2})
    assert again.status_code == 200, again.text
    resolved = web.get(f"/api/v1/prompts/{KEY}/resolve?environment=staging", service_key)
    assert (resolved.status_code, resolved.json()["version"]) == (200, 2)
    assert web.post(f"/api/v1/prompts/{KEY}/run", service_key, body).status_code == 200
    queue = redis.Redis.from_url(settings.REDIS_URL)
    try:
        wait_for(lambda: queue.llen(settings.CELERY_TASK_DEFAULT_QUEUE) >= 1, "the job")
    finally:
        queue.delete(settings.CELERY_TASK_DEFAULT_QUEUE)
        queue.close()
