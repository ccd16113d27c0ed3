"""Eval runs: starting, scoring in batches, resuming, cancelling, the report against stable, the API
and the admin. Celery runs eagerly here (after commit, in this process); the model is the local
fake (``echo-1`` repeats the user message). tests/evaluations/test_eval_worker.py runs the same
through a real worker.

The scene: ``support.refund-reply`` (tests/conftest.py ``released``): v1 stable in production,
v2 stable in staging, v3 committed; ``draft`` is v4, which says hello instead of greeting. The
``golden`` dataset's cases make every kind of change against v1:

| case        | expects   | v1 "Greet Ada."  | v4 "Say hello to Ada." |
|-------------|-----------|------------------|------------------------|
| greet-ada   | "Greet"   | pass             | fail (must pass)       |
| refund-di   | "refund"  | pass             | fail                   |
| never       | "zebra"   | fail             | fail                   |
| hello-bob   | "hello"   | fail             | pass                   |
| name-cy     | "Cy"      | pass             | pass                   |
| held        | "Ed"      | holdout: gate runs only                   |

API personas (tests/conftest.py): ``author_client`` (prompts:read/write) starts and cancels author
runs; ``reader_client`` reads; ``releaser_client`` (prompts:read, releases:write) may not start
one; a gate run needs prompts:write and releases:write.
"""

from __future__ import annotations

import pytest

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.report import CaseChange, eval_run_report, percentile
from evaluations.evalruns.services import (
    DatasetEmpty,
    EvalRunDatasetChanged,
    EvalRunEnded,
    eval_run_batch_execute,
    eval_run_cancel,
    eval_run_resume,
    eval_run_start,
)
from evaluations.models import Case, Dataset, EvalResult, EvalRun
from registry.services import version_commit
from releases.services import release_deploy
from tests.conftest import RELEASED_VARIABLES
from tests.evaluations.evalrun_scene import ACTOR, CASES, jsonl
from tests.factories import make_version
from tests.metrics import counting

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


def keys_by_change(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in report.rows:
        found.setdefault(str(row.change), []).append(row.key)
    return found


# --- services and the report --------------------------------------------------------------------


def test_a_draft_is_run_against_the_stable_version_and_regressions_come_first(
    released, golden, draft, run_now, settings, model_server
):
    settings.EVAL_BATCH_SIZE = 2
    run = run_now(prompt=released.prompt, version=draft.number)

    assert run.status == EvalRun.Status.FINISHED
    assert (run.total_cases, run.include_holdout) == (5, False)  # the holdout case left out
    assert run.dataset_updated_at == Dataset.objects.get().updated_at
    assert run.environment.name == "production"
    baseline = run.baseline
    assert (baseline.version.number, baseline.status) == (1, EvalRun.Status.FINISHED)
    assert baseline.total_cases == 5

    report = eval_run_report(run)
    assert [row.key for row in report.rows] == [
        "greet-ada",  # a must-pass failure, first
        "refund-di",  # regressed
        "never",  # still failing
        "hello-bob",  # fixed
        "name-cy",  # passing
    ]
    assert keys_by_change(report) == {
        "regressed": ["greet-ada", "refund-di"],
        "still_failing": ["never"],
        "fixed": ["hello-bob"],
        "passing": ["name-cy"],
    }
    assert [r.key for r in report.regressions] == ["greet-ada", "refund-di"]
    assert (report.run.done, report.run.total, report.run.percent_done) == (5, 5, 100.0)
    assert (report.run.pass_rate, report.baseline.pass_rate, report.delta_points) == (
        40.0,
        60.0,
        -20.0,
    )
    assert report.must_pass_failed == 1
    ada = report.rows[0]
    assert ada.output == "echo-1: Say hello to Ada."  # the fake echoes, naming its model
    assert ada.variables == {"customer_name": "Ada"}
    assert "Greet" in ada.detail
    assert report.totals.input_tokens > 0
    assert report.totals.output_tokens > 0
    assert report.totals.latency_p50_ms is not None
    assert report.totals.latency_p95_ms >= report.totals.latency_p50_ms
    # Every case was asked once per version: five for the draft, five for the baseline.
    assert len(model_server.requests.for_path("/v1/chat/completions")) == 10


def test_a_later_run_reuses_the_finished_baseline_until_the_dataset_changes(
    released, golden, draft, run_now
):
    first = run_now(prompt=released.prompt, version=draft.number)
    second = run_now(prompt=released.prompt, version=draft.number)
    assert second.baseline_id == first.baseline_id
    assert EvalRun.objects.filter(version__number=1).count() == 1

    dataset_import(dataset=golden, content=jsonl(CASES[:3]), format="jsonl", replace=True)
    third = run_now(prompt=released.prompt, version=draft.number)
    assert third.baseline_id != first.baseline_id
    assert third.baseline.total_cases == third.total_cases == 3


def test_a_gate_run_scores_the_holdout_but_never_shows_it(released, golden, draft, run_now):
    run = run_now(prompt=released.prompt, version=draft.number, include_holdout=True)
    assert run.total_cases == 6
    assert run.baseline.include_holdout  # the author run's baseline would not do
    report = eval_run_report(run)
    held = next(row for row in report.rows if row.key == "held")
    assert (held.holdout, held.passed, held.change) == (True, True, CaseChange.PASSING)
    assert (held.output, held.detail, held.variables) == (None, None, None)
    assert report.run.passed == 3  # it counts


def test_running_the_stable_version_itself_has_no_baseline(released, golden, run_now):
    run = run_now(prompt=released.prompt, version=1)
    assert run.baseline is None
    report = eval_run_report(run)
    assert report.delta_points is None
    assert set(keys_by_change(report)) == {"new_passing", "new_failing"}


def test_the_baseline_is_the_named_environment_else_the_setting_else_the_highest(
    released, golden, draft, run_now, settings
):
    assert (
        run_now(prompt=released.prompt, version=3, environment="staging").baseline.version.number
        == 2
    )
    settings.EVAL_BASELINE_ENVIRONMENT = "development"  # never released: the highest with a stable
    run = run_now(prompt=released.prompt, version=3)
    assert (run.environment.name, run.baseline.version.number) == ("production", 1)
    # Named, with no stable version there: nothing to compare with.
    assert run_now(prompt=released.prompt, version=3, environment="development").baseline is None


def test_an_empty_dataset_is_refused_and_nothing_is_queued(released, draft, run_now):
    empty = dataset_create(prompt=released.prompt, name="empty", actor=ACTOR)
    with pytest.raises(DatasetEmpty):
        run_now(prompt=released.prompt, version=draft.number, dataset_name="empty")
    holdout_only = dataset_create(prompt=released.prompt, name="frozen", actor=ACTOR)
    dataset_import(dataset=holdout_only, content=jsonl(CASES[-1:]), format="jsonl")
    with pytest.raises(DatasetEmpty, match="outside the holdout"):
        run_now(prompt=released.prompt, version=draft.number, dataset_name="frozen")
    assert empty.runs.count() == 0
    assert not EvalRun.objects.exists()


def test_cases_the_version_cannot_render_are_failed_results(released, golden, run_now):
    strict = make_version(
        released.prompt,
        commit=False,
        variables=[{"name": "ticket", "type": "string", "required": True}],
        templates={"en": {"instruction": "Ticket {{ ticket }}"}},
    )
    run = run_now(prompt=released.prompt, version=strict.number, environment="development")
    assert run.status == EvalRun.Status.FINISHED
    results = EvalResult.objects.filter(run=run)
    assert {r.error_class for r in results} == {"render_invalid"}
    assert not any(r.passed for r in results)
    assert "ticket" in results[0].detail


def test_a_model_that_fails_gives_failed_results_after_its_retries(
    released, golden, run_now, model_server
):
    broken = make_version(
        released.prompt,
        commit=False,
        variables=RELEASED_VARIABLES,
        model={"provider": "local", "model": "fault-500"},
    )
    run = run_now(prompt=released.prompt, version=broken.number, environment="development")
    assert run.status == EvalRun.Status.FINISHED
    results = EvalResult.objects.filter(run=run)
    assert {r.error_class for r in results} == {"server_error"}
    assert "No model answered after 3 attempts" in results[0].detail
    assert len(model_server.requests.for_path("/v1/chat/completions")) == 5 * 3  # 2 retries each


def test_a_batch_delivered_again_skips_scored_cases_and_the_run_finishes_once(
    released, golden, draft, model_server
):
    # Started outside a commit hook: nothing queued; the test plays the worker.
    run = eval_run_start(
        prompt=released.prompt,
        version=draft.number,
        dataset_name="golden",
        actor=ACTOR,
        environment="development",
    )
    cases = dict(Case.objects.filter(holdout=False).values_list("key", "pk"))
    first, rest = dict(list(cases.items())[:2]), dict(list(cases.items())[2:])

    assert eval_run_batch_execute(run_id=run.pk, cases=first) == 2
    run.refresh_from_db()
    assert run.status == EvalRun.Status.RUNNING
    assert run.started_at is not None
    assert eval_run_batch_execute(run_id=run.pk, cases=first) == 0  # redelivered: nothing to do
    assert eval_run_batch_execute(run_id=run.pk, cases=rest) == 3
    run.refresh_from_db()
    finished_at = run.finished_at
    assert run.status == EvalRun.Status.FINISHED
    assert eval_run_batch_execute(run_id=run.pk, cases=rest) == 0
    run.refresh_from_db()
    assert run.finished_at == finished_at
    assert EvalResult.objects.filter(run=run).count() == 5
    assert len(model_server.requests.for_path("/v1/chat/completions")) == 5


def test_a_case_removed_while_the_run_goes_is_a_failed_result(
    released, golden, draft, model_server
):
    run = eval_run_start(
        prompt=released.prompt,
        version=draft.number,
        dataset_name="golden",
        actor=ACTOR,
        environment="development",
    )
    cases = dict(Case.objects.filter(holdout=False).values_list("key", "pk"))
    Case.objects.filter(key="never").delete()
    eval_run_batch_execute(run_id=run.pk, cases=cases)
    removed = EvalResult.objects.get(run=run, case_key="never")
    assert (removed.passed, removed.error_class, removed.case) == (False, "case_removed", None)
    run.refresh_from_db()
    assert run.status == EvalRun.Status.FINISHED


def test_resume_queues_only_the_cases_without_a_result(
    released, golden, draft, model_server, django_capture_on_commit_callbacks
):
    run = eval_run_start(
        prompt=released.prompt,
        version=draft.number,
        dataset_name="golden",
        actor=ACTOR,
        environment="development",
    )
    eval_run_batch_execute(
        run_id=run.pk, cases=dict(Case.objects.filter(key="never").values_list("key", "pk"))
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert eval_run_resume(run=run, actor=ACTOR) == 4
    run.refresh_from_db()
    assert run.status == EvalRun.Status.FINISHED
    assert len(model_server.requests.for_path("/v1/chat/completions")) == 5
    with pytest.raises(EvalRunEnded):
        eval_run_resume(run=run, actor=ACTOR)


def test_resume_is_refused_once_the_dataset_changed_and_queues_nothing(
    released, golden, draft, model_server, django_capture_on_commit_callbacks
):
    """After an import the run's missing cases are not known: a removed case would never be
    scored (the run would never finish) and a new one was never the run's."""
    run = eval_run_start(
        prompt=released.prompt,
        version=draft.number,
        dataset_name="golden",
        actor=ACTOR,
        environment="development",
    )
    dataset_import(dataset=golden, content=jsonl(CASES[:2]), format="jsonl", replace=True)

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(EvalRunDatasetChanged) as info,
    ):
        eval_run_resume(run=run, actor=ACTOR)

    assert "cancel it and start a new run" in info.value.message
    assert callbacks == []
    assert not EvalResult.objects.filter(run=run).exists()
    assert model_server.requests.for_path("/v1/chat/completions") == []


def test_a_baseline_run_started_on_the_draft_is_not_reused_once_it_is_committed(
    released, golden, run_now, django_capture_on_commit_callbacks
):
    """The stable version's run must be of the committed content: a run of the draft it was
    may have scored other content."""
    draft = make_version(released.prompt, commit=False, variables=RELEASED_VARIABLES)
    of_the_draft = run_now(prompt=released.prompt, version=draft.number, environment="staging")
    version_commit(version=draft, actor=ACTOR, message="v4")
    with django_capture_on_commit_callbacks(execute=True):
        release_deploy(
            prompt=released.prompt,
            environment=released.environments["staging"],
            version=draft.number,
            actor=ACTOR,
        )

    run = run_now(prompt=released.prompt, version=3, environment="staging")

    assert run.baseline.version == draft
    assert run.baseline_id != of_the_draft.pk
    assert run.baseline.created_at >= run.baseline.version.committed_at


def test_a_cancelled_run_scores_nothing_more(released, golden, draft, model_server):
    run = eval_run_start(
        prompt=released.prompt,
        version=draft.number,
        dataset_name="golden",
        actor=ACTOR,
        environment="development",
    )
    assert eval_run_cancel(run=run, actor=ACTOR).status == EvalRun.Status.CANCELLED
    assert eval_run_cancel(run=run, actor=ACTOR).status == EvalRun.Status.CANCELLED  # again: fine
    cases = dict(Case.objects.values_list("key", "pk"))
    assert eval_run_batch_execute(run_id=run.pk, cases=cases) == 0
    assert not EvalResult.objects.exists()
    assert model_server.requests.for_path("/v1/chat/completions") == []


def test_ended_runs_and_their_model_calls_are_counted_in_the_metrics(
    released, golden, draft, run_now, django_capture_on_commit_callbacks
):
    finished = counting("promptregistry_eval_runs_finished_total", status="finished")
    cancelled = counting("promptregistry_eval_runs_finished_total", status="cancelled")
    cases = counting(
        "promptregistry_model_calls_total",
        source="eval",
        prompt="support.refund-reply",
        version=str(draft.number),
        variant="",
        provider="local",
        model="echo-1",
        outcome="ok",
    )

    run_now(prompt=released.prompt, version=draft.number)  # and its baseline, v1
    queued = eval_run_start(
        prompt=released.prompt, version=draft.number, dataset_name="golden", actor=ACTOR
    )
    with django_capture_on_commit_callbacks(execute=True):
        eval_run_cancel(run=queued, actor=ACTOR)
        eval_run_cancel(run=queued, actor=ACTOR)  # cancelled already: not counted again

    assert (finished(), cancelled(), cases()) == (2, 1, 5)


def test_a_finished_run_cannot_be_cancelled(released, golden, draft, run_now):
    run = run_now(prompt=released.prompt, version=draft.number)
    with pytest.raises(EvalRunEnded):
        eval_run_cancel(run=run, actor=ACTOR)
    run.refresh_from_db()
    assert run.status == EvalRun.Status.FINISHED


def test_percentiles_are_nearest_rank():
    assert percentile([], 50) is None
    assert percentile([3.0], 95) == 3.0
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)


def test_discarding_a_draft_takes_its_runs_and_keeps_the_baseline(released, golden, draft, run_now):
    from registry.services import version_draft_discard

    run = run_now(prompt=released.prompt, version=draft.number)
    baseline = run.baseline

    version_draft_discard(version=draft, actor=ACTOR)

    assert not EvalRun.objects.filter(pk=run.pk).exists()
    assert not EvalResult.objects.filter(run_id=run.pk).exists()
    assert EvalRun.objects.filter(pk=baseline.pk, status=EvalRun.Status.FINISHED).exists()
