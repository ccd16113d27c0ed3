"""A canary analysis compares the latency and cost of model calls: runs an input guardrail
refused called none, and would read as instant and free (decision 0052)."""

from __future__ import annotations

from decimal import Decimal

from runs.models import Call
from tests.evaluations.test_canary_analysis import Outcome, look, record, start


def test_input_refusals_are_left_out_of_latency_and_cost(released, manager):
    # Stable refuses half its traffic at the input (no model call: ~0 ms, cost 0); the canary's
    # model calls are as fast and as cheap as stable's: no regression.
    analysis = start(released, manager)
    release = released.release("staging")
    model = {"latency": lambda i: 300.0 + i % 50, "cost": lambda i: Decimal("0.001")}
    record(release, "stable", 200, **model)
    record(release, "stable", 200, latency=lambda i: 0.1, cost=lambda i: Decimal(0))
    Call.objects.filter(variant="stable", latency_ms=0.1).update(
        status=Call.Status.REFUSED, model_called=False
    )
    record(release, "canary", 400, **model)

    result = look(analysis)

    assert result.outcome == Outcome.PASS, [
        (c["name"], c["status"]) for c in result.verdict.figures["checks"]
    ]
