"""An eval run of a version that calls tools scores what it called: an answer of tool calls is the
JSON document ``{"tool_calls": [{"name", "arguments"}]}`` (``runs.tool_calls``), so a case can
expect a tool by name and its arguments by pointer."""

from __future__ import annotations

import json

import pytest

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.models import EvalResult
from registry.services import prompt_create
from releases.services import release_deploy
from tests.evaluations.evalrun_scene import ACTOR
from tests.factories import ORDER_LOOKUP, make_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


def test_an_answer_that_calls_a_tool_is_scored_by_its_calls(environments, run_now, model_server):
    agent = prompt_create(key="support.agent", actor=ACTOR)
    make_version(
        agent,
        model={"provider": "local", "model": "echo-1", "tools": [ORDER_LOOKUP]},
        templates={"en": {"instruction": "Where is order {{ customer_name }}?"}},
    )
    release_deploy(prompt=agent, environment=environments["staging"], version=1, actor=ACTOR)
    dataset = dataset_create(prompt=agent, name="golden", actor=ACTOR)
    cases = [
        {"key": "looks-up", "pointer": "/tool_calls/0/name", "value": "order_lookup"},
        {"key": "no-refund", "pointer": "/tool_calls/0/name", "value": "refund"},
    ]
    lines = [
        json.dumps(
            {
                "key": case["key"],
                "variables": {"customer_name": "A-17"},
                "expectation": {
                    "scorer": "json_field",
                    "pointer": case["pointer"],
                    "value": case["value"],
                },
            }
        )
        for case in cases
    ]
    dataset_import(dataset=dataset, content="\n".join(lines) + "\n", format="jsonl")

    run_now(prompt=agent, version=1, environment="staging")

    results = {r.case_key: r for r in EvalResult.objects.filter(run__version__number=1)}
    assert (results["looks-up"].passed, results["no-refund"].passed) == (True, False)
    [call] = json.loads(results["looks-up"].output)["tool_calls"]  # no text, no call id
    assert call["name"] == "order_lookup"
    # The arguments are the fake's sample for the schema, from the words of the user message.
    assert "A-17" in call["arguments"]["order_id"]
