"""An eval run renders a version's includes with the snippet versions the run's environment
serves (a snippet's stable release there), not the snippet's latest version: what is evaluated
is what a release there would send."""

from __future__ import annotations

import json

import pytest

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.models import EvalResult
from registry.services import prompt_create
from releases.services import release_deploy
from tests.evaluations.evalrun_scene import ACTOR
from tests.factories import make_version

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


def test_an_eval_run_uses_the_snippet_versions_its_environment_serves(
    environments, run_now, model_server
):
    voice = prompt_create(key="brand.voice", actor=ACTOR, is_snippet=True)
    for text in ("Be warm.", "Be brief."):  # v2 is the latest, but staging serves v1
        make_version(voice, variables=[], templates={"en": {"system": text}})
    reply = prompt_create(key="support.reply", actor=ACTOR)
    make_version(
        reply,
        variables=[{"name": "customer_name", "type": "string", "required": True}],
        templates={"en": {"instruction": "{{ snippet('brand.voice') }} Hi {{ customer_name }}."}},
    )
    for prompt in (voice, reply):
        release_deploy(prompt=prompt, environment=environments["staging"], version=1, actor=ACTOR)
    dataset = dataset_create(prompt=reply, name="golden", actor=ACTOR)
    case = {
        "key": "ada",
        "variables": {"customer_name": "Ada"},
        "expectation": {"scorer": "contains", "value": "warm"},
    }
    dataset_import(dataset=dataset, content=json.dumps(case) + "\n", format="jsonl")

    run_now(prompt=reply, version=1, environment="staging")

    result = EvalResult.objects.get(case_key="ada", run__version__number=1)
    assert result.output == "echo-1: Be warm. Hi Ada."
    assert result.passed
