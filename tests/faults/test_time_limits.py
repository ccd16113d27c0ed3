"""Celery time limits on a real worker: a job that runs past them leaves its row failed.

The worker (tests/celery_worker.py) gets tiny limits through its environment, as a deployment sets
them (CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT); eval batches carry their own limits
(EVAL_BATCH_*_TIME_LIMIT), sent with each batch from this process's settings. The model hangs
(``fault-hang``) well past the hard limit, so whichever limit stops the job, its row must end
failed with ``time_limit``: never ``pending`` or ``running`` for ever.
"""

from __future__ import annotations

import json

import pytest

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.services import eval_run_start
from evaluations.models import EvalResult, EvalRun
from registry.actors import Actor
from runs.models import ShadowRun
from runs.outbox import outbox
from tests.celery_worker import wait_for
from tests.factories import PromptFactory, make_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SOFT, HARD = 1, 2  # seconds; the fake model hangs for 5 (tests/conftest.py)


@pytest.fixture
def limited(worker, settings):
    """The fault suite's worker with tiny limits. A job carries the limits of the process that
    sent it (the outbox, the eval batch queue: this process), and the worker's own apply to what
    comes without (beat's ticks): both are set."""
    settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT = SOFT, HARD
    worker.env |= {"CELERY_TASK_SOFT_TIME_LIMIT": str(SOFT), "CELERY_TASK_TIME_LIMIT": str(HARD)}
    return worker


def test_a_shadow_run_or_eval_batch_past_its_time_limit_fails_never_pending_or_running(
    released, shadow_all, model_server, make_client, limited, settings
):
    make_version(released.prompt, model={"provider": "local", "model": "fault-hang"})
    shadow_all(4)
    limited.start()
    response = make_client("runs:execute").post(
        "/api/v1/prompts/support.refund-reply/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Al"}}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content  # the live call never waits for it
    assert outbox.flush(10)

    shadow_runs = ShadowRun.objects.all()
    wait_for(lambda: shadow_runs.exclude(status=ShadowRun.Status.PENDING).exists(), "the limit")
    run = shadow_runs.get()
    assert (run.status, run.error_class) == (ShadowRun.Status.ERROR, "time_limit")
    assert run.finished_at is not None
    assert "exceeded" in limited.log.read_text()  # Celery's own word for a time limit

    # An eval batch, with its own limits (EVAL_BATCH_*_TIME_LIMIT): its cases fail saying why,
    # and the run ends rather than stay running.
    settings.EVAL_BATCH_SOFT_TIME_LIMIT, settings.EVAL_BATCH_TIME_LIMIT = SOFT, HARD
    prompt = PromptFactory()
    make_version(prompt, model={"provider": "local", "model": "fault-hang"})
    dataset = dataset_create(prompt=prompt, name="golden", actor=Actor(label="tests"))
    lines = [
        {
            "key": name,
            "variables": {"customer_name": name},
            "expectation": {"scorer": "contains", "value": name},
        }
        for name in ("ada", "bob", "cy")
    ]
    dataset_import(
        dataset=dataset, content="".join(json.dumps(x) + "\n" for x in lines), format="jsonl"
    )
    evaluation = eval_run_start(
        prompt=prompt, version=1, dataset_name="golden", actor=Actor(label="tests")
    )

    def ended() -> bool:
        return EvalRun.objects.get(pk=evaluation.pk).status not in (
            EvalRun.Status.QUEUED,
            EvalRun.Status.RUNNING,
        )

    wait_for(ended, "the timed-out run to end")
    assert EvalRun.objects.get(pk=evaluation.pk).status == EvalRun.Status.FINISHED
    results = EvalResult.objects.filter(run=evaluation)
    assert sorted(results.values_list("case_key", flat=True)) == ["ada", "bob", "cy"]
    assert set(results.values_list("passed", "error_class")) == {(False, "time_limit")}
