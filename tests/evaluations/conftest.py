"""Fixtures of the eval runs' scene (tests/evaluations/evalrun_scene.py): the golden dataset, the
draft judged against stable, and starting a run whose batches run at once."""

from __future__ import annotations

import pytest

from config.celery import app as celery_app
from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.services import eval_run_get, eval_run_start
from evaluations.models import Dataset, EvalRun
from tests.conftest import RELEASED_VARIABLES
from tests.evaluations.evalrun_scene import ACTOR, CASES, jsonl
from tests.factories import make_version


@pytest.fixture
def eager(monkeypatch) -> None:
    """Tasks run in this process when queued (the embedded default's way), whatever REDIS_URL."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


@pytest.fixture
def golden(released) -> Dataset:
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=jsonl(CASES), format="jsonl")
    return dataset


@pytest.fixture
def draft(released):
    return make_version(
        released.prompt,
        commit=False,
        variables=RELEASED_VARIABLES,
        templates={
            "en": {"system": "Be kind.", "instruction": "Say hello to {{ customer_name }}."}
        },
    )


@pytest.fixture
def run_now(django_capture_on_commit_callbacks, model_server):
    """Start a run and let its batches run (eagerly, after commit)."""

    def start(**arguments) -> EvalRun:
        arguments.setdefault("dataset_name", "golden")
        with django_capture_on_commit_callbacks(execute=True):
            run = eval_run_start(prompt=arguments.pop("prompt"), actor=ACTOR, **arguments)
        return eval_run_get(run_id=run.pk)

    return start
