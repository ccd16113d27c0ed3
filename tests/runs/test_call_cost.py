"""What a call record's cost adds up (runs.calls.attempts_cost), with prices read beforehand
(the run path reads the answering model's price with the record's ids) or looked up."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runs.calls import attempts_cost
from runs.models import ModelPrice, Provider
from runs.providers import Attempt, Outcome


@pytest.mark.django_db
def test_prices_read_beforehand_are_used_and_the_others_looked_up():
    local = Provider.objects.create(name="local", base_url="http://127.0.0.1:9/v1")
    ModelPrice.objects.create(
        provider=local, model="echo-small", input_per_million=1, output_per_million=1
    )
    answered = [
        Attempt("local", "echo-1", Outcome.SCHEMA_INVALID, "", 1.0, 1_000_000, 0),
        Attempt("local", "echo-small", Outcome.OK, "", 1.0, 0, 2_000_000),
    ]
    read = ModelPrice(input_per_million=Decimal(3), output_per_million=Decimal(5))

    assert attempts_cost(answered, {("local", "echo-1"): read}) == Decimal(3 + 2)
    assert attempts_cost(answered, {("local", "echo-1"): None}) is None  # known to have no price
    assert attempts_cost(answered) is None  # echo-1 has no price in the table
