"""The eval runs' scene, shared by tests/evaluations/test_eval_runs*.py (see test_eval_runs.py's
docstring for the cases and what each version makes of them)."""

from __future__ import annotations

import json

from registry.actors import Actor

ACTOR = Actor(label="tests")
KEY = "support.refund-reply"
CASES = [
    {"key": "greet-ada", "variables": {"customer_name": "Ada"}, "value": "Greet", "must": True},
    {
        "key": "refund-di",
        "variables": {"customer_name": "Di", "order_total": 12},
        "value": "refund",
    },
    {"key": "never", "variables": {"customer_name": "Eve"}, "value": "zebra"},
    {"key": "hello-bob", "variables": {"customer_name": "Bob"}, "value": "hello"},
    {"key": "name-cy", "variables": {"customer_name": "Cy"}, "value": "Cy"},
    {"key": "held", "variables": {"customer_name": "Ed"}, "value": "Ed", "holdout": True},
]


def jsonl(cases: list[dict]) -> str:
    return "".join(
        json.dumps(
            {
                "key": c["key"],
                "variables": c["variables"],
                "expectation": {"scorer": "contains", "value": c["value"]},
                "must_pass": c.get("must", False),
                "holdout": c.get("holdout", False),
            }
        )
        + "\n"
        for c in cases
    )
