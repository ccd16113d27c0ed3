"""The output fields (api/fields.py) write values as the API always has, now that the output
serializers produce the answers instead of hand-written dicts: a datetime with its ``+00:00``, a
percent from basis points, a policy's number as given, a missing line left out rather than null.
The answers that rely on each are held here too."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework import serializers

from api.fields import (
    AbsentWhenNullIntegerField,
    BasisPointsPercentField,
    NumberField,
    OffsetDateTimeField,
)
from registry.actors import Actor
from releases.services import release_canary_start


class Sample(serializers.Serializer):
    at = OffsetDateTimeField(allow_null=True)
    percent = BasisPointsPercentField()
    step = NumberField()
    line = AbsentWhenNullIntegerField(required=False)


def test_each_field_writes_the_value_as_the_api_always_has():
    at = datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC)

    data = Sample({"at": at, "percent": 1250, "step": 10, "line": 3}).data

    assert data == {
        "at": "2026-12-06T10:00:00.123456+00:00",
        "percent": 12.5,
        "step": 10,
        "line": 3,
    }
    assert type(data["step"]) is int
    assert type(Sample({"at": None, "percent": 0, "step": 2.5}).data["percent"]) is float


def test_nulls_stay_null_and_a_missing_line_is_left_out():
    data = Sample({"at": None, "percent": 10000, "step": 2.5, "line": None}).data

    assert data == {"at": None, "percent": 100.0, "step": 2.5}
    assert "line" not in data


@pytest.mark.django_db
def test_a_release_answer_keeps_its_offset_and_percents(make_client, released):
    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal("12.5"),
        actor=Actor(label="tests"),
    )

    answer = make_client("prompts:read").get(f"/api/v1/releases/staging/{released.prompt.key}")

    body = answer.json()
    assert body["canary"]["percent"] == 12.5
    assert body["updated_at"].endswith("+00:00")
    assert (
        datetime.fromisoformat(body["updated_at"])
        == released.prompt.releases.get(environment__name="staging").updated_at
    )


@pytest.mark.django_db
def test_a_canary_analysis_answer_gives_the_steps_percent_as_its_policy_does(make_client, released):
    client = make_client("prompts:read", "releases:write")
    release = f"/api/v1/releases/staging/{released.prompt.key}"
    policy = {"steps": [10, 50, 100], "min_minutes": [15, 30, 0], "min_calls": 100}
    started = client.post(f"{release}/canary", {"version": 3, "analysis": policy}, format="json")
    assert started.status_code == 200, started.content

    analysis = client.get(f"{release}/canary/analysis")

    assert analysis.status_code == 200
    assert b'"percent":10,' in analysis.content  # 10 as the policy says, not 10.0
    assert started.json()["canary"]["percent"] == 10.0  # the release's weight, a percent
