"""Rate limits per API key and scope (issue 12, finding 7c): a burst over the limit answers 429
``throttled`` with ``Retry-After`` on the runtime path and the DRF API, per key, shared by every
web node through Redis, and Redis failing never fails a request."""

from __future__ import annotations

import json
import logging
import socket

import pytest
import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from api import ratelimit
from api.ratelimit import Limit, RateLimiter, limit_parse, limiter_client
from runs.models import Call
from tests.api.helpers import assert_problem
from tests.factories import event

KEY = "support.refund-reply"
RESOLVE = f"/api/v1/prompts/{KEY}/resolve"
RENDER = f"/api/v1/prompts/{KEY}/render"
RUN = f"/api/v1/prompts/{KEY}/run"
BUNDLE = "/api/v1/environments/staging/bundle"
CHAT = "/v1/chat/completions"
THROTTLED = "/problems/throttled"


def limits(**scopes: str):
    return override_settings(
        API_RATE_LIMITS={k.replace("_", ":"): v for k, v in scopes.items()},
        API_RATE_LIMITS_ENABLED=True,
    )


@pytest.fixture(autouse=True)
def _empty_buckets(empty_rate_buckets):
    """Every test here starts from empty buckets (``empty_rate_buckets``)."""


def resolve(client):
    return client.get(RESOLVE, {"environment": "staging", "subject": "u"})


def assert_throttled(response) -> int:
    problem = assert_problem(response, 429, THROTTLED)
    wait = int(response["Retry-After"])
    assert wait >= 1
    assert problem["detail"]
    return wait


@limits(prompts_read="3/min")
def test_a_burst_over_the_limit_on_the_runtime_path_is_a_429(make_client, released):
    service = make_client("prompts:read", name="busy")
    other = make_client("prompts:read", name="quiet")
    body = json.dumps({"environment": "staging", "variables": {"customer_name": "A"}})

    answers = [
        resolve(service),
        service.post(RENDER, body, content_type="application/json"),
        service.get(BUNDLE),
    ]
    refused = [resolve(service), service.get(BUNDLE)]

    assert [r.status_code for r in answers] == [200, 200, 200]
    for response in refused:
        assert 1 <= assert_throttled(response) <= 20  # one token every 20 s
    assert resolve(other).status_code == 200  # another key has its own bucket


@limits(runs_execute="1/min", prompts_read="off")
def test_a_run_over_the_limit_calls_no_model(make_client, released, model_server):
    runner = make_client("runs:execute", name="runner")
    body = json.dumps({"environment": "staging", "variables": {"customer_name": "A"}})

    first = runner.post(RUN, body, content_type="application/json")
    model_server.reset()
    second = runner.post(RUN, body, content_type="application/json")

    assert first.status_code == 200, first.content
    assert_throttled(second)
    assert model_server.requests.for_path(CHAT) == []
    assert Call.objects.count() == 1


@limits(prompts_read="2/min")
def test_the_drf_api_shares_the_keys_bucket_for_the_scope(make_client, released):
    reader = make_client("prompts:read", name="reader")
    other = make_client("prompts:read", name="other")

    first = reader.get("/api/v1/prompts")
    second = resolve(reader)  # the runtime path takes from the same prompts:read bucket
    third = reader.get("/api/v1/prompts")

    assert (first.status_code, second.status_code) == (200, 200)
    assert_throttled(third)
    assert other.get("/api/v1/prompts").status_code == 200


@limits(events_write="1/hour")
def test_events_over_the_limit_are_a_429_and_store_nothing(make_client, released):
    reporter = make_client("events:write", name="reporter")

    first = reporter.post("/api/v1/events", {"events": [event()]}, format="json")
    second = reporter.post("/api/v1/events", {"events": [event()]}, format="json")

    assert first.status_code == 202, first.content
    assert 1 <= assert_throttled(second) <= 3600
    assert Call.objects.count() == 1


@override_settings(API_RATE_LIMITS={"prompts:read": "1/hour"}, API_RATE_LIMITS_ENABLED=False)
def test_limits_can_be_turned_off(make_client, released):
    service = make_client("prompts:read")

    assert [resolve(service).status_code for _ in range(3)] == [200, 200, 200]


@limits(prompts_read="off", default="1/hour")
def test_off_lifts_one_scope(make_client, released):
    service = make_client("prompts:read")

    assert [resolve(service).status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.usefixtures("needs_redis")
@limits(prompts_read="3/hour")
def test_two_web_nodes_share_one_bucket_through_redis():
    """Two processes' limiters on the same Redis: the third token taken by either is the last."""
    node_a = RateLimiter(limiter_client())
    node_b = RateLimiter(limiter_client())

    taken = [
        node_a.take(key_id=7, scope="prompts:read"),
        node_b.take(key_id=7, scope="prompts:read"),
        node_a.take(key_id=7, scope="prompts:read"),
    ]

    assert taken == [0.0, 0.0, 0.0]
    assert node_b.take(key_id=7, scope="prompts:read") > 0
    assert node_a.take(key_id=7, scope="prompts:read") > 0
    assert node_a.take(key_id=8, scope="prompts:read") == 0.0  # another key
    assert node_b.take(key_id=7, scope="runs:execute") == 0.0  # another scope (default limit)


def _dead_redis() -> redis.Redis:
    """A client for a loopback port nothing listens on: every command fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{port}/0"):
        return limiter_client()


@limits(prompts_read="2/hour")
def test_redis_down_fails_open_and_limits_in_process(caplog):
    limiter = RateLimiter(_dead_redis())

    with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
        taken = [limiter.take(key_id=1, scope="prompts:read") for _ in range(3)]

    assert taken[:2] == [0.0, 0.0]
    assert taken[2] > 0  # the process's own bucket still limits
    # Logged once: for the cooldown, the limiter does not try (and time out on) Redis again.
    assert len([r for r in caplog.records if "Redis failed" in r.getMessage()]) == 1


@limits(prompts_read="100/s")
def test_redis_down_never_fails_a_request(make_client, released, monkeypatch, caplog):
    service = make_client("prompts:read")
    monkeypatch.setattr(ratelimit.limiter, "_client", _dead_redis())
    monkeypatch.setattr(ratelimit.limiter, "_script", None)

    with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
        response = resolve(service)
        listed = service.get("/api/v1/prompts")

    assert response.status_code == 200, response.content
    assert listed.status_code == 200
    assert any("Redis failed" in r.getMessage() for r in caplog.records)


@override_settings(REDIS_URL="")
@limits(prompts_read="2/hour")
def test_without_redis_each_process_keeps_its_own_buckets():
    limiter = RateLimiter()

    assert [limiter.take(key_id=1, scope="prompts:read") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take(key_id=1, scope="prompts:read") == pytest.approx(1800, rel=0.01)


def test_limits_are_parsed_and_a_typo_stops_the_process():
    assert limit_parse("600/min") == Limit(capacity=600, per_second=10.0)
    assert limit_parse("5/s") == Limit(capacity=5, per_second=5.0)
    assert limit_parse("off") is None
    for bad in ("600", "600/fortnight", "0/s", "-1/s", "many/s"):
        with pytest.raises(ImproperlyConfigured):
            limit_parse(bad)


class CountingScript:
    """Wraps a limiter's Lua script to count round trips to Redis."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.script, self.calls = limiter._redis().register_script(ratelimit._TAKE), 0
        limiter._script = self

    def __call__(self, **kwargs):
        self.calls += 1
        return self.script(**kwargs)


@pytest.mark.usefixtures("needs_redis")
@limits(prompts_read="500/day", default="off")
def test_a_busy_key_leases_tokens_and_never_gets_more_than_its_limit():
    """Two nodes take tokens a few at a time (a round trip per lease, not per request); together
    they never let more than the bucket through, and refusals cost no round trip once known."""
    nodes = [RateLimiter(limiter_client()) for _ in range(2)]
    counters = [CountingScript(node) for node in nodes]

    allowed = sum(nodes[i % 2].take(key_id=9, scope="prompts:read") == 0.0 for i in range(700))

    assert ratelimit.lease_size(limit_parse("500/day")) == 10
    assert allowed == 500
    # 50 leases of 10, then one refusal per node that both remember.
    assert sum(c.calls for c in counters) == 52


def test_a_lease_grows_only_to_a_fiftieth_of_the_burst_and_of_the_refill():
    assert ratelimit.lease_max(limit_parse("1000000/s")) == 1000  # the ceiling
    assert ratelimit.lease_max(limit_parse("100000/s")) == 1000
    assert ratelimit.lease_max(limit_parse("10000/s")) == 200
    # A large burst refilled slowly: a lease that expires unspent would lose a big share of the
    # refill, so it does not grow.
    assert ratelimit.lease_max(limit_parse("100000/hour")) == 20
    assert ratelimit.lease_max(limit_parse("500/day")) == 10
    assert ratelimit.lease_max(limit_parse("5/s")) == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.usefixtures("needs_redis")
@limits(prompts_read="3000/s", default="off")
def test_a_key_spending_its_leases_fast_leases_more_each_time(monkeypatch):
    """Leases double while the process spends each one before it expires (fewer round trips for
    a busy key), start again small once one expires, and the bucket still lets no more through
    than its limit."""
    clock = FakeClock()
    monkeypatch.setattr(ratelimit, "time", clock)
    node = RateLimiter(limiter_client())
    counter = CountingScript(node)
    assert (
        ratelimit.lease_size(limit_parse("3000/s")),
        ratelimit.lease_max(limit_parse("3000/s")),
    ) == (20, 60)

    allowed = sum(node.take(key_id=11, scope="prompts:read") == 0.0 for _ in range(500))

    assert allowed == 500
    # 20, 40, then 60 at a time: 20 + 40 + 7 x 60 = 480, and one more lease for the last 20.
    assert counter.calls == 10

    clock.now += 2 * ratelimit._LEASE_SECONDS  # the lease expires unspent
    node.take(key_id=11, scope="prompts:read")
    assert counter.calls == 11
    assert node._leases[f"{ratelimit._KEY_PREFIX}11:prompts:read"].size == 20


def _redis_seconds(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1e6


@pytest.mark.usefixtures("needs_redis")
@limits(prompts_read="3000/s", default="off")
def test_growing_leases_never_let_more_than_the_limit_through():
    """Two nodes, each leasing up to 60 at a time: what they let through stays within the burst
    plus what the bucket refilled meanwhile, on Redis's clock (the one the bucket uses).

    What is checked is the shared bucket, so the nodes wait for Redis as long as it takes: with
    the limiter's own short timeouts, a loaded machine makes a node fail open (limit locally,
    as it must, tested above), and what it then lets through is no longer the bucket's."""
    nodes = [
        RateLimiter(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)) for _ in range(2)
    ]
    fell_back = []
    for node in nodes:
        local_take = node._local.take
        node._local.take = lambda *args, take=local_take: fell_back.append(args) or take(*args)
    clock = limiter_client()

    started = _redis_seconds(clock)
    allowed = sum(nodes[i % 2].take(key_id=12, scope="prompts:read") == 0.0 for i in range(8000))
    elapsed = _redis_seconds(clock) - started

    assert not fell_back

    assert allowed <= 3000 + 3000 * elapsed
    assert allowed >= 3000 - 2 * ratelimit.lease_max(limit_parse("3000/s"))  # few lost
