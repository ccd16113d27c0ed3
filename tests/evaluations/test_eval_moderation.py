"""An eval run moderates as a run does: through the provider its policy names, whether or not the
binding names it."""

from __future__ import annotations

import json

import pytest

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.models import EvalResult
from runs.models import Provider
from tests.evaluations.evalrun_scene import ACTOR
from tests.factories import PromptFactory, make_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


def test_an_eval_run_moderates_through_a_provider_the_binding_does_not_name(run_now, model_server):
    Provider.objects.create(
        name="moderator", base_url=model_server.base_url, timeout_seconds=1, max_retries=0
    )
    prompt = PromptFactory(key="support.moderated")
    policy = {
        "output": {
            "moderation": {
                "provider": "moderator",
                "model": "omni-moderation-latest",
                "action": "refuse",
                "on_error": "closed",
            }
        }
    }
    make_version(
        prompt,
        variables=[{"name": "question", "type": "string", "required": True}],
        templates={"en": {"system": "Answer.", "instruction": "{{ question }}"}},
        model={"provider": "local", "model": "echo-1", "guardrails": policy},
    )
    dataset = dataset_create(prompt=prompt, name="d", actor=ACTOR)
    case = {
        "key": "benign",
        "variables": {"question": "What are your opening hours?"},
        "expectation": {"scorer": "guardrails", "expect": "passed"},
    }
    dataset_import(dataset=dataset, content=json.dumps(case) + "\n", format="jsonl")
    run = run_now(prompt=prompt, version=1, dataset_name="d")
    result = EvalResult.objects.get(run=run)
    assert result.guardrails == [], result.guardrails
