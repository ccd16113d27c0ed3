"""runs.calls.call_insert: the run path's record in one INSERT, the same row the ORM would write."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.calls import call_insert
from runs.models import Call


def call(released, **overrides) -> Call:
    version = released.versions[2]
    fields = {
        "request_id": "req-1",
        "source": Call.Source.RUN,
        "created_at": timezone.now(),
        "prompt_id": released.prompt.pk,
        "version_id": version.pk,
        "environment_id": released.environments["staging"].pk,
        "variant": "canary",
        "sticky": True,
        "release_revision": 4,
        "locale": "fr-CA",
        "subject_hash": "ab" * 32,
        "provider": "local",
        "model": "echo-1",
        "latency_ms": 12.5,
        "input_tokens": 10,
        "output_tokens": 3,
        "cost": Decimal("0.00001300"),
        "status": Call.Status.OK,
        "schema_valid": True,
        "inputs": {"customer_name": "Zoë ☃", "nested": [1, 2.5, None, {"k": "[redacted]"}]},
        "output": "Bonjour Zoë",
        "attempts": [{"provider": "local", "model": "echo-1", "outcome": "ok"}],
    }
    return Call(**{**fields, **overrides})


def columns(row: Call) -> dict:
    return {f.attname: getattr(row, f.attname) for f in Call._meta.concrete_fields}


def test_the_row_written_is_the_one_the_orm_would_write(released) -> None:
    new = call(released)
    saved = Call.objects.create(**{**columns(new), "id": None, "request_id": "req-2"})
    written = call_insert(new)

    assert written.pk is not None
    assert not written._state.adding
    fresh = columns(Call.objects.get(pk=written.pk))
    expected = columns(Call.objects.get(pk=saved.pk))
    assert {**fresh, "id": None, "request_id": None} == {**expected, "id": None, "request_id": None}
    assert fresh["inputs"]["customer_name"] == "Zoë ☃"
    assert fresh["cost"] == Decimal("0.00001300")
    assert fresh["event_id"] is None  # the defaults the model declares are written too
    assert fresh["feedback_key_label"] == ""


def test_a_row_the_database_refuses_raises_and_writes_nothing(released) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        call_insert(call(released, cost=Decimal(-1)))  # call_cost_not_negative

    assert not Call.objects.exists()
