"""runs.events.events_ingest(): per-event checks, redaction, cost, idempotency, query budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.calls import subject_hash
from runs.events import MAX_EVENTS, EventBatchTooLarge, events_ingest
from runs.models import Call, ModelPrice, Provider
from runs.redaction import redact, redact_text
from tests.factories import PromptFactory, event, make_version

pytestmark = pytest.mark.django_db

EMAIL = "jane.doe@example.com"


def problems_of(result, index: int = 0) -> list[tuple[str, str]]:
    [rejected] = [r for r in result.rejected if r.index == index]
    return [(p.code, p.pointer) for p in rejected.problems]


def test_it_stores_a_reported_outcome_with_every_field(released):
    occurred = timezone.now() - timedelta(hours=2)
    sent = event(
        event_id="evt-1",
        occurred_at=occurred.isoformat().replace("+00:00", "Z"),
        variant="canary",
        sticky=True,
        subject="user-42",
        locale="fr_ca",
        request_id="req-1",
        release_revision=3,
        provider="openai",
        model="gpt-4o-mini",
        latency_ms=812.5,
        time_to_first_token_ms=120,
        input_tokens=1000,
        output_tokens=500,
        cost=0.0123,
        status="error",
        error_class="Timeout",
        feedback=-0.5,
        schema_valid=False,
        inputs={"customer_name": "Jane", "contact": f"write to {EMAIL}"},
        output=f"Dear Jane, we wrote to {EMAIL}.",
    )

    result = events_ingest(events=[sent])

    assert (result.accepted, result.duplicates, result.rejected) == (("evt-1",), (), ())
    call = Call.objects.get(event_id="evt-1")
    assert call.source == Call.Source.REPORTED
    assert (call.prompt, call.version, call.environment) == (
        released.prompt,
        released.versions[2],
        released.environments["staging"],
    )
    assert call.created_at == occurred
    assert (call.variant, call.sticky, call.locale, call.request_id) == (
        "canary",
        True,
        "fr-CA",
        "req-1",
    )
    assert (call.release_revision, call.provider, call.model) == (3, "openai", "gpt-4o-mini")
    assert (call.latency_ms, call.time_to_first_token_ms) == (812.5, 120.0)
    assert (call.input_tokens, call.output_tokens, call.cost) == (1000, 500, Decimal("0.0123"))
    assert (call.status, call.error_class, call.feedback, call.schema_valid) == (
        "error",
        "Timeout",
        -0.5,
        False,
    )


def test_it_stores_inputs_and_output_redacted_and_the_subject_only_as_its_hash(released):
    sent = event(
        subject="jane@example.org",
        inputs={"customer_name": "Jane", "contact": f"write to {EMAIL}", "nested": [EMAIL]},
        output=f"We wrote to {EMAIL}.",
    )

    events_ingest(events=[sent])

    call = Call.objects.get(event_id=sent["event_id"])
    assert call.inputs == redact(sent["inputs"])
    assert call.output == redact_text(sent["output"])
    assert EMAIL not in str(call.inputs)
    assert EMAIL not in call.output
    assert call.subject_hash == subject_hash("jane@example.org")
    stored = str(Call.objects.filter(pk=call.pk).values().get())
    assert "jane@example.org" not in stored


def test_optional_fields_take_their_defaults(released):
    before = timezone.now()
    sent = {k: v for k, v in event().items() if k != "occurred_at"}

    events_ingest(events=[sent])

    call = Call.objects.get(event_id=sent["event_id"])
    assert call.created_at >= before  # when it arrived
    assert call.request_id == sent["event_id"]
    assert (call.sticky, call.subject_hash, call.variant, call.inputs, call.output) == (
        False,
        "",
        "",
        {},
        "",
    )
    assert call.cost is None


@pytest.mark.parametrize(("subject", "sticky"), [("user-1", True), (None, False)])
def test_sticky_defaults_to_whether_a_subject_was_sent(released, subject, sticky):
    sent = event(subject=subject)

    events_ingest(events=[sent])

    assert Call.objects.get(event_id=sent["event_id"]).sticky is sticky


def test_null_is_the_same_as_leaving_an_optional_field_out(released):
    sent = event(latency_ms=None, variant=None, inputs=None, feedback=None)

    result = events_ingest(events=[sent])

    assert result.accepted == (sent["event_id"],)
    call = Call.objects.get(event_id=sent["event_id"])
    assert (call.latency_ms, call.variant, call.inputs, call.feedback) == (None, "", {}, None)


# --- Cost ----------------------------------------------------------------------------------------


@pytest.fixture
def price(db) -> ModelPrice:
    provider = Provider.objects.create(name="openai", base_url="https://api.openai.com/v1")
    return ModelPrice.objects.create(
        provider=provider,
        model="gpt-4o-mini",
        input_per_million=Decimal("0.15"),
        output_per_million=Decimal("0.60"),
    )


def test_a_missing_cost_is_computed_from_the_model_price(released, price):
    sent = event(provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=500)

    events_ingest(events=[sent])

    # 1000 x 0.15 / 1M + 500 x 0.60 / 1M
    assert Call.objects.get(event_id=sent["event_id"]).cost == Decimal("0.00045")


def test_a_reported_cost_wins_over_the_price(released, price):
    sent = event(provider="openai", model="gpt-4o-mini", input_tokens=1000, cost=2)

    events_ingest(events=[sent])

    assert Call.objects.get(event_id=sent["event_id"]).cost == Decimal(2)


@pytest.mark.parametrize(
    "fields",
    [
        {"provider": "openai", "model": "gpt-unpriced", "input_tokens": 10},
        {"provider": "other", "model": "gpt-4o-mini", "input_tokens": 10},
        {"provider": "openai", "model": "gpt-4o-mini"},  # no tokens: nothing to price
    ],
)
def test_without_a_price_or_tokens_the_cost_stays_unknown(released, price, fields):
    sent = event(**fields)

    events_ingest(events=[sent])

    assert Call.objects.get(event_id=sent["event_id"]).cost is None


def test_a_computed_cost_beyond_the_column_rejects_the_event(released, price):
    price.input_per_million = Decimal(1000)
    price.save()
    sent = event(provider="openai", model="gpt-4o-mini", input_tokens=2_000_000_000)

    result = events_ingest(events=[sent])

    assert problems_of(result) == [("out_of_range", "/events/0/cost")]
    assert not Call.objects.exists()


# --- Idempotency ---------------------------------------------------------------------------------


def test_a_repeated_batch_stores_nothing_new_and_lists_the_duplicates(released):
    batch = [event(event_id="a", feedback=1), event(event_id="b")]
    events_ingest(events=batch)

    again = events_ingest(events=[{**batch[0], "feedback": -1}, batch[1], event(event_id="c")])

    assert (again.accepted, again.duplicates, again.rejected) == (("c",), ("a", "b"), ())
    assert Call.objects.count() == 3
    # The first report stands: a retry never rewrites a stored event.
    assert Call.objects.get(event_id="a").feedback == 1


def test_within_a_batch_the_first_copy_of_an_id_wins(released):
    batch = [event(event_id="x", feedback=1), event(event_id="x", feedback=-1), event(event_id="x")]

    result = events_ingest(events=batch)

    assert (result.accepted, result.duplicates) == (("x",), ("x",))
    assert Call.objects.get(event_id="x").feedback == 1


def test_an_invalid_first_copy_does_not_hide_a_valid_later_one(released):
    batch = [event(event_id="x", latency_ms=-1), event(event_id="x", latency_ms=5)]

    result = events_ingest(events=batch)

    assert result.accepted == ("x",)
    assert problems_of(result, 0) == [("out_of_range", "/events/0/latency_ms")]
    assert Call.objects.get(event_id="x").latency_ms == 5


# --- Validation ----------------------------------------------------------------------------------

INVALID = [
    ("event_id", "", "blank"),
    ("event_id", "x" * 101, "too_long"),
    ("event_id", "tab\there", "not_printable"),
    ("event_id", 12, "wrong_type"),
    ("prompt", ["support.refund-reply"], "wrong_type"),
    ("version", "2", "wrong_type"),
    ("version", 0, "out_of_range"),
    ("version", True, "wrong_type"),
    ("version", 2.5, "wrong_type"),
    ("environment", "", "blank"),
    ("status", "failed", "invalid_choice"),
    ("variant", "v" * 65, "too_long"),
    ("sticky", "yes", "wrong_type"),
    ("subject", 42, "wrong_type"),
    ("locale", "not a locale", "invalid_locale"),
    ("request_id", "r" * 101, "too_long"),
    ("release_revision", -1, "out_of_range"),
    ("provider", "p" * 64, "too_long"),
    ("model", {"name": "gpt"}, "wrong_type"),
    ("latency_ms", -0.1, "out_of_range"),
    ("latency_ms", "fast", "wrong_type"),
    ("latency_ms", 10**400, "out_of_range"),
    ("time_to_first_token_ms", -1, "out_of_range"),
    ("input_tokens", -1, "out_of_range"),
    ("input_tokens", 1.5, "wrong_type"),
    ("output_tokens", 2**31, "out_of_range"),
    ("cost", -0.01, "out_of_range"),
    ("cost", 1_000_000, "out_of_range"),
    ("cost", 10**30, "out_of_range"),
    ("error_class", "E" * 101, "too_long"),
    ("feedback", 1.01, "out_of_range"),
    ("feedback", -2, "out_of_range"),
    ("feedback", True, "wrong_type"),
    ("schema_valid", 1, "wrong_type"),
    ("inputs", ["a"], "wrong_type"),
    ("inputs", {"name": "\ud800"}, "invalid_unicode"),
    ("output", 42, "wrong_type"),
    ("output", "broken \ud800", "invalid_unicode"),
    ("occurred_at", "yesterday", "invalid_datetime"),
    ("occurred_at", "2025-05-01T12:00:00", "invalid_datetime"),  # no offset
    ("occurred_at", "2025-05-01", "invalid_datetime"),
    ("occurred_at", "2025-13-01T12:00:00Z", "invalid_datetime"),
    ("occurred_at", 1714564800, "invalid_datetime"),
]


@pytest.mark.parametrize(("name", "value", "code"), INVALID)
def test_it_rejects_an_invalid_value_and_stores_nothing(released, name, value, code):
    result = events_ingest(events=[event(**{name: value})])

    assert result.accepted == ()
    assert problems_of(result) == [(code, f"/events/0/{name}")]
    assert not Call.objects.exists()


@pytest.mark.parametrize("name", ["event_id", "prompt", "version", "environment", "status"])
@pytest.mark.parametrize("missing", ["absent", "null"])
def test_it_requires_the_identifying_fields(released, name, missing):
    sent = event()
    if missing == "absent":
        del sent[name]
    else:
        sent[name] = None

    result = events_ingest(events=[sent])

    assert problems_of(result) == [("required", f"/events/0/{name}")]


def test_it_refuses_unknown_fields_by_name(released):
    result = events_ingest(events=[event(score=3, **{"a/b": 1})])

    assert problems_of(result) == [
        ("unknown_field", "/events/0/a~1b"),
        ("unknown_field", "/events/0/score"),
    ]


def test_it_rejects_an_event_that_is_not_an_object(released):
    result = events_ingest(events=["evt-1", event(event_id="ok")])

    assert problems_of(result) == [("wrong_type", "/events/0")]
    assert result.accepted == ("ok",)


def test_it_lists_every_problem_of_an_event(released):
    result = events_ingest(events=[{"event_id": "e", "version": -1, "feedback": 9, "x": 1}])

    [rejected] = result.rejected
    assert rejected.event_id == "e"
    assert sorted(problems_of(result)) == sorted(
        [
            ("unknown_field", "/events/0/x"),
            ("required", "/events/0/prompt"),
            ("out_of_range", "/events/0/version"),
            ("required", "/events/0/environment"),
            ("required", "/events/0/status"),
            ("out_of_range", "/events/0/feedback"),
        ]
    )


def test_a_rejected_event_echoes_its_id_only_when_the_id_is_valid(released):
    result = events_ingest(events=[event(event_id="x" * 101, status="?")])

    assert result.rejected[0].event_id is None


@pytest.mark.parametrize(
    ("fields", "code", "name"),
    [
        ({"prompt": "support.nothing"}, "unknown_prompt", "prompt"),
        ({"version": 9}, "unknown_version", "version"),
        ({"environment": "moon"}, "unknown_environment", "environment"),
    ],
)
def test_it_rejects_what_the_registry_does_not_know(released, fields, code, name):
    result = events_ingest(events=[event(**fields)])

    assert problems_of(result) == [(code, f"/events/0/{name}")]


def test_it_rejects_a_draft_version(released):
    draft = make_version(released.prompt, commit=False)

    result = events_ingest(events=[event(version=draft.number)])

    assert problems_of(result) == [("version_not_committed", "/events/0/version")]


def test_it_rejects_an_environment_the_caller_may_not_report_for(released):
    batch = [event(environment="production", version=1), event(environment="staging")]

    result = events_ingest(events=batch, allowed_environments=["staging"])

    assert problems_of(result) == [("environment_forbidden", "/events/0/environment")]
    assert list(Call.objects.values_list("environment__name", flat=True)) == ["staging"]


def test_a_version_of_another_prompt_is_not_this_prompts_version(released):
    other = make_version(PromptFactory(key="other.prompt"))

    result = events_ingest(events=[event(prompt="other.prompt", version=2), event(version=1)])

    assert other.number == 1
    assert problems_of(result) == [("unknown_version", "/events/0/version")]
    assert len(result.accepted) == 1


@pytest.mark.parametrize(
    ("offset", "code"),
    [(timedelta(minutes=6), "in_the_future"), (timedelta(days=-31), "too_old")],
)
def test_it_rejects_an_event_outside_the_time_window(released, settings, offset, code):
    settings.CALL_RETENTION_DAYS = 30

    result = events_ingest(events=[event(occurred_at=(timezone.now() + offset).isoformat())])

    assert problems_of(result) == [(code, "/events/0/occurred_at")]


@pytest.mark.parametrize("offset", [timedelta(minutes=4), timedelta(days=-29)])
def test_it_accepts_a_skewed_clock_and_old_events_within_the_retention(released, offset):
    result = events_ingest(events=[event(occurred_at=(timezone.now() + offset).isoformat())])

    assert len(result.accepted) == 1


def test_it_reads_any_rfc_3339_offset(released, monkeypatch):
    sent = event(occurred_at="2030-01-01T00:00:00+02:00")
    # That time lies ahead: the test's clock is set to just after it.
    fixed = datetime(2029, 12, 31, 22, 1, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: fixed)

    result = events_ingest(events=[sent])

    assert result.accepted == (sent["event_id"],)
    stored = Call.objects.get(event_id=sent["event_id"]).created_at
    assert stored == fixed - timedelta(minutes=1)


# --- Limits and budget ---------------------------------------------------------------------------


def test_a_batch_over_the_limit_is_refused_whole(released):
    with pytest.raises(EventBatchTooLarge) as refused:
        events_ingest(events=[event() for _ in range(MAX_EVENTS + 1)])

    assert refused.value.limit == MAX_EVENTS
    assert not Call.objects.exists()


def test_a_batch_costs_the_same_queries_whatever_its_size(released, price):
    def queries(size: int) -> int:
        batch = [
            event(provider="openai", model="gpt-4o-mini", input_tokens=i, version=1 + i % 3)
            for i in range(size)
        ]
        with CaptureQueriesContext(connection) as captured:
            result = events_ingest(events=batch)
        assert len(result.accepted) == size
        return len(captured)

    assert queries(1) == queries(40)


def test_a_batch_with_nothing_valid_runs_no_query(released):
    with CaptureQueriesContext(connection) as captured:
        result = events_ingest(events=[event(latency_ms=-1), "nope"])

    assert len(result.rejected) == 2
    assert captured.captured_queries == []
