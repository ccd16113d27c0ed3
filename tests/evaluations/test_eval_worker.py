"""Eval runs on a real Celery worker: batches through Redis, a worker killed mid-run.

The worker is a separate process (``celery -A config worker``) on the test database and Redis,
consuming a queue of its own (the approach and the ``Worker`` helper of tests/runs/test_worker.py).
Waiting polls the database with a generous deadline; nothing here measures time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.report import eval_run_report
from evaluations.evalruns.services import eval_run_get, eval_run_start
from evaluations.models import EvalResult, EvalRun
from registry.actors import Actor
from tests.celery_worker import VISIBILITY_TIMEOUT_SECONDS, Worker, wait_for, worker_on_own_queue
from tests.conftest import RELEASED_VARIABLES
from tests.factories import PromptFactory, make_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ACTOR = Actor(label="tests")


@pytest.fixture
def worker(settings, needs_redis, tmp_path) -> Iterator[Worker]:
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="evals") as worker:
        yield worker


def cases_file(names: list[str], value: str = "{name}") -> str:
    return "".join(
        json.dumps(
            {
                "key": name.lower(),
                "variables": {"customer_name": name},
                "expectation": {"scorer": "contains", "value": value.format(name=name)},
            }
        )
        + "\n"
        for name in names
    )


def finished(run_id: int) -> bool:
    return EvalRun.objects.get(pk=run_id).status == EvalRun.Status.FINISHED


def test_an_eval_run_and_its_baseline_finish_on_the_worker(released, model_server, worker):
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=cases_file(["Ada", "Bob", "Cy"]), format="jsonl")
    draft = make_version(
        released.prompt,
        commit=False,
        variables=RELEASED_VARIABLES,
        templates={"en": {"instruction": "Hello {{ customer_name }}."}},
    )
    worker.start()
    run = eval_run_start(
        prompt=released.prompt, version=draft.number, dataset_name="golden", actor=ACTOR
    )
    wait_for(lambda: finished(run.pk) and finished(run.baseline_id), "the run and its baseline")
    report = eval_run_report(eval_run_get(run_id=run.pk))
    assert (report.run.done, report.run.pass_rate) == (3, 100.0)
    assert (report.baseline.version, report.baseline.done, report.delta_points) == (1, 3, 0.0)
    assert {row.key for row in report.rows} == {"ada", "bob", "cy"}


def test_a_worker_killed_mid_run_is_restarted_and_every_case_is_scored_once(
    model_server, worker, settings
):
    settings.EVAL_BATCH_SIZE = 2
    prompt = PromptFactory()
    # A slow model, so the worker is surely in the middle of the run when it is killed.
    make_version(prompt, model={"provider": "local", "model": "slow-400"})
    names = ["Ada", "Bob", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
    dataset = dataset_create(prompt=prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=cases_file(names), format="jsonl")

    worker.start()
    run = eval_run_start(prompt=prompt, version=1, dataset_name="golden", actor=ACTOR)
    results = EvalResult.objects.filter(run=run)
    wait_for(lambda: results.count() >= 2, "the first cases to be scored")
    worker.kill()
    scored_before = results.count()
    assert scored_before < len(names)
    assert EvalRun.objects.get(pk=run.pk).status == EvalRun.Status.RUNNING

    # Redis gives the dead worker's unacknowledged batch back once its visibility timeout has
    # passed; the next worker restores it when it starts.
    time.sleep(VISIBILITY_TIMEOUT_SECONDS + 0.5)
    worker.start()
    wait_for(lambda: finished(run.pk), "the run to finish on the restarted worker")

    keys = list(results.values_list("case_key", flat=True))
    assert sorted(keys) == sorted(name.lower() for name in names)  # each case exactly once
    assert all(results.values_list("passed", flat=True))
    # The cases scored before the kill were not asked again: at most the one in hand was.
    calls = model_server.requests.for_path("/v1/chat/completions")
    assert len(names) <= len(calls) <= len(names) + 1


def test_an_eval_run_started_by_a_request_logs_its_batches_with_its_request_id(
    released, model_server, worker, author_client
):
    """The request id follows the API request into its batches on the worker (config.logs)."""
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=cases_file(["Ada", "Bob"]), format="jsonl")
    draft = make_version(
        released.prompt,
        commit=False,
        variables=RELEASED_VARIABLES,
        templates={"en": {"instruction": "Hello {{ customer_name }}."}},
    )
    worker.env["LOG_FORMAT"] = "json"
    worker.start()

    response = author_client.post(
        f"/api/v1/prompts/{released.prompt.key}/versions/{draft.number}/evaluations",
        data=json.dumps({"dataset": "golden"}),
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-eval-1",
    )

    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    wait_for(lambda: finished(run_id), "the run")

    def batch_lines() -> list[dict]:
        lines = worker.log.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.startswith("{")]
        return [
            f for f in found if "eval_run_batch" in f["message"] and "succeeded" in f["message"]
        ]

    wait_for(lambda: len(batch_lines()) >= 2, "the batches' lines (the run's and its baseline's)")
    assert {line["request_id"] for line in batch_lines()} == {"req-eval-1"}
