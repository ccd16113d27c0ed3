"""Budgets and rate limits on the run API (issue 19, item 3; runs.budgets, decision 0051): each
limit stops a run before its model call with a 429 ``budget-exceeded`` and ``Retry-After``,
recording nothing; resolve and render are never limited; spend is counted once per call; a zero
limit is refused; and a run no budget applies to costs no round trip to Redis."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest.mock import patch

import pytest
from django.core.exceptions import ValidationError
from django.core.signals import request_finished
from django.db import IntegrityError, OperationalError, close_old_connections, transaction

from runs import budgets, calls, execution, spool
from runs.budgets import counter_key, counters, seconds_to_next
from runs.models import Budget, Call, ModelPrice, Provider
from tests.metrics import counting

URL = "/api/v1/prompts/support.refund-reply/run"
CHAT = "/openai/v1/chat/completions"
BODY = {"environment": "staging", "variables": {"customer_name": "Ada"}}


@pytest.fixture(autouse=True)
def _own_counters(monkeypatch) -> None:
    """Counters and buckets of this test only: the suite's processes share one Redis database,
    and their prompts' ids may be the same."""
    monkeypatch.setattr(budgets, "_PREFIX", f"test-budget:{uuid.uuid4().hex}:")
    monkeypatch.setattr(budgets, "_BUCKET_PREFIX", f"budget-{uuid.uuid4().hex}:")


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", "prompts:read", name="runner")


def run(client, body: dict[str, Any] | None = None, url: str = URL, **headers: str):
    return client.post(
        url, data=json.dumps(body or BODY), content_type="application/json", **headers
    )


def priced() -> None:
    """echo-1 costs 500,000 per million tokens: a run of a few tokens costs more than 1."""
    ModelPrice.objects.create(
        provider=Provider.objects.get(name="local"),
        model="echo-1",
        input_per_million=Decimal(500_000),
        output_per_million=Decimal(500_000),
    )


def refused(response, *, scope: str, limit: str) -> dict[str, Any]:
    assert response.status_code == 429, response.content
    problem = response.json()
    assert problem["type"] == "/problems/budget-exceeded"
    assert (problem["budget"]["scope"], problem["budget"]["limit"]) == (scope, limit)
    assert int(response["Retry-After"]) >= 1
    return problem


@pytest.mark.parametrize(
    ("scope", "limit", "value"),
    [
        ("key", "tokens_per_day", 1),
        ("prompt", "cost_per_day", Decimal("1")),
        ("environment", "tokens_per_month", 1),
        ("key", "cost_per_month", Decimal("1")),
    ],
)
def test_a_spent_budget_stops_the_next_run_before_its_model_call(
    released, model_server, runner, scope, limit, value
) -> None:
    priced()
    target = {
        "key": {"api_key_id": runner.key.pk},
        "prompt": {"prompt": released.prompt},
        "environment": {"environment": released.environments["staging"]},
    }[scope]
    Budget.objects.create(**target, **{limit: value})
    refusals = counting("promptregistry_budget_refusals_total", scope=scope, limit=limit)

    first = run(runner)
    assert first.status_code == 200, first.content  # nothing spent yet: within the budget
    calls_made, recorded = len(model_server.requests), Call.objects.count()

    response = run(runner)
    problem = refused(response, scope=scope, limit=limit)
    assert "no model was called" in problem["detail"]
    period = "day" if limit.endswith("_day") else "month"
    assert int(response["Retry-After"]) <= seconds_to_next(period, datetime.now(UTC)) + 1
    assert len(model_server.requests) == calls_made  # no model call ...
    assert Call.objects.count() == recorded  # ... and no record
    assert refusals() == 1


def test_a_key_past_its_daily_budget_is_stopped_and_its_calls_name_it(
    released, model_server, runner
) -> None:
    """Issue 19's done-when: the key's spend shows on its call records and the refusal in the
    metrics."""
    budget = Budget.objects.create(api_key_id=runner.key.pk, tokens_per_day=1)
    refusals = counting("promptregistry_budget_refusals_total", scope="key", limit="tokens_per_day")
    answer = run(runner).json()
    call = Call.objects.get(request_id=answer["request_id"])
    assert (call.run_by_key_id, call.run_by_key_label) == (runner.key.pk, "runner")

    refused(run(runner), scope="key", limit="tokens_per_day")
    assert refusals() == 1
    spent = counters.read(
        [counter_key("key", budget.api_key_id, datetime.now(UTC).strftime("d%Y%m%d"), "tokens")]
    )
    assert spent == [Decimal(call.input_tokens + call.output_tokens)]


def test_requests_per_minute_take_from_the_shared_bucket(released, model_server, runner) -> None:
    Budget.objects.create(prompt=released.prompt, requests_per_minute=2)
    assert run(runner).status_code == 200
    assert run(runner).status_code == 200
    calls_made = len(model_server.requests)
    response = run(runner)
    problem = refused(response, scope="prompt", limit="requests_per_minute")
    assert problem["budget"]["value"] == "2"
    assert 1 <= int(response["Retry-After"]) <= 30  # a token is back in 30 s at 2 a minute
    assert len(model_server.requests) == calls_made


def test_the_openai_compatible_endpoints_share_the_budgets(released, model_server, runner) -> None:
    Budget.objects.create(environment=released.environments["staging"], requests_per_minute=1)
    body = {
        "model": "prompt:support.refund-reply",
        "environment": "staging",
        "variables": {"customer_name": "Ada"},
    }
    assert run(runner).status_code == 200
    response = run(runner, body, url=CHAT)
    assert response.status_code == 429, response.content
    assert response.json()["error"]["code"] == "budget_exceeded"
    assert int(response["Retry-After"]) >= 1


def test_resolve_and_render_are_never_limited_by_a_budget(released, model_server, runner) -> None:
    Budget.objects.create(prompt=released.prompt, tokens_per_day=1, requests_per_minute=1)
    assert run(runner).status_code == 200
    refused(run(runner), scope="prompt", limit="tokens_per_day")
    for _ in range(3):
        resolved = runner.get(
            "/api/v1/prompts/support.refund-reply/resolve", {"environment": "staging"}
        )
        assert resolved.status_code == 200, resolved.content
        rendered = runner.post(
            "/api/v1/prompts/support.refund-reply/render",
            data=json.dumps(BODY),
            content_type="application/json",
        )
        assert rendered.status_code == 200, rendered.content


def test_a_disabled_budget_limits_nothing(released, model_server, runner) -> None:
    Budget.objects.create(prompt=released.prompt, requests_per_minute=1, enabled=False)
    assert [run(runner).status_code for _ in range(3)] == [200, 200, 200]


def test_a_run_no_budget_applies_to_costs_no_round_trip(released, model_server, runner) -> None:
    Budget.objects.create(prompt=released.prompt.__class__.objects.create(key="other.prompt"),
                          tokens_per_day=1, requests_per_minute=1)  # fmt: skip
    with patch.object(budgets, "_bucket_take", side_effect=AssertionError("no bucket")):
        assert [run(runner).status_code for _ in range(3)] == [200, 200, 200]
    assert counters.round_trips == 0


def test_a_record_written_then_drained_again_is_counted_once(
    released, model_server, runner, needs_redis
) -> None:
    """A write that committed but failed on the way back: the record is kept (runs.spool), and the
    drain finds it written. The spend is counted by the run, once; the drain adds nothing."""
    budget = Budget.objects.create(prompt=released.prompt, tokens_per_day=1_000_000)
    written = calls.call_insert

    def committed_then_lost(call: Call) -> None:
        written(call)
        raise OperationalError("the connection was lost after the commit")

    with patch.object(execution, "call_insert", committed_then_lost):
        response = run(runner)
        answer = response.json()
        # The answer goes first, its record once it is sent (decision 0041): closing ends it,
        # which must not close the test's connection (its transaction holds the test's data).
        request_finished.disconnect(close_old_connections)
        try:
            response.close()
        finally:
            request_finished.connect(close_old_connections)
    call = Call.objects.get(request_id=answer["request_id"])
    assert spool.spool_length() == 1
    assert spool.spool_drain() == 1  # skipped as written already
    assert Call.objects.filter(request_id=answer["request_id"]).count() == 1
    day = datetime.now(UTC).strftime("d%Y%m%d")
    spent = counters.read([counter_key("prompt", budget.prompt_id, day, "tokens")])
    assert spent == [Decimal(call.input_tokens + call.output_tokens)]


def test_a_missing_counter_is_rebuilt_from_the_call_records(released, model_server, runner) -> None:
    """A budget added after the day's calls (or Redis flushed): the first check counts the
    records, so the run is refused at once rather than given a fresh day."""
    assert run(runner).status_code == 200
    Budget.objects.create(prompt=released.prompt, tokens_per_day=1)
    refused(run(runner), scope="prompt", limit="tokens_per_day")


@pytest.mark.parametrize("limit", ["requests_per_minute", "tokens_per_day", "cost_per_month"])
def test_a_zero_limit_is_refused_with_what_to_do_instead(released, limit) -> None:
    budget = Budget(prompt=released.prompt, **{limit: 0})
    with pytest.raises(ValidationError) as refusal:
        budget.full_clean()
    assert "disable the API key" in str(refusal.value.message_dict[limit])
    with pytest.raises(IntegrityError), transaction.atomic():
        budget.save()
    assert not Budget.objects.exists()


def test_a_budget_limits_exactly_one_scope_and_something(released) -> None:
    both = Budget(prompt=released.prompt, api_key_id=7, tokens_per_day=5)
    with pytest.raises(ValidationError, match="exactly one"):
        both.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        both.save()
    with pytest.raises(ValidationError, match="at least one limit"):
        Budget(prompt=released.prompt).full_clean()


def test_retry_after_a_spent_day_or_month_is_the_next_utc_period() -> None:
    now = datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC)
    assert seconds_to_next("day", now) == 30
    assert seconds_to_next("month", now) == 30
    assert seconds_to_next("day", now - timedelta(hours=1)) == 3630


def test_a_budget_saved_is_heard_by_a_process_holding_the_budgets(
    released, model_server, runner, needs_redis
) -> None:
    """With the release cache's listener trusted, budgets are held in memory (no query per
    run); saving one drops the copy, so the next run is checked against it."""
    assert run(runner).status_code == 200
    assert budgets.release_cache().trusted
    budgets.budget_cache.applying(key_id=None, prompt_id=0, environment_id=0)  # held now
    Budget.objects.create(prompt=released.prompt, requests_per_minute=1)
    assert run(runner).status_code == 200
    refused(run(runner), scope="prompt", limit="requests_per_minute")
