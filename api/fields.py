"""Output fields: values written the way the API has always written them.

The output serializers produce every answer of the authoring and release paths, and the schema
is read from them, so a shape is written once. DRF's own fields would change some values on the
wire (a datetime's ``+00:00`` into ``Z``, a policy's ``10`` into ``10.0``); these keep them, and
tell drf-spectacular the JSON type they write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rest_framework import serializers


class OffsetDateTimeField(serializers.DateTimeField):
    """ISO 8601 with the offset spelt out, ``2026-12-06T10:00:00.123456+00:00``
    (``datetime.isoformat``), as release, experiment and results answers write their times.
    The other answers write DRF's ``...Z``; both are RFC 3339."""

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class BasisPointsPercentField(serializers.FloatField):
    """A weight stored in basis points (0–10000) written as the percent it means: 1000 → 10.0."""

    def to_representation(self, value: int) -> float:
        return value / 100


class NumberField(serializers.FloatField):
    """A JSON number written as it was given: an integer stays one (a policy's step ``10``)."""

    def to_representation(self, value: Any) -> int | float:
        return value


class AbsentWhenNullChoiceField(serializers.ChoiceField):
    """A choice left out of the answer, not written as null, when there is none (the ``after``
    of a variable that is not a history); declare it ``required=False``."""

    def get_attribute(self, instance: Any) -> Any:
        value = super().get_attribute(instance)
        if value is None:
            raise serializers.SkipField()
        return value


class AbsentWhenNullIntegerField(serializers.IntegerField):
    """An integer left out of the answer, not written as null, when there is none (a warning's
    ``line``); declare it ``required=False`` so the schema says it may be absent."""

    def get_attribute(self, instance: Any) -> Any:
        value = super().get_attribute(instance)
        if value is None:
            raise serializers.SkipField()
        return value
