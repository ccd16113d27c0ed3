"""Eval runs over the API, in the admin and from the command line (the scene and its personas:
tests/evaluations/test_eval_runs.py)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from evaluations.datasets.services import dataset_create
from evaluations.evalruns.services import (
    eval_run_resume,
    eval_run_start,
)
from evaluations.models import EvalResult, EvalRun
from tests.api.helpers import assert_problem
from tests.evaluations.evalrun_scene import ACTOR, CASES, KEY
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]


# --- the API ------------------------------------------------------------------------------------


def start_url(version: int, key: str = KEY) -> str:
    return f"/api/v1/prompts/{key}/versions/{version}/evaluations"


def post(client, url: str, body: dict | None = None):
    return client.post(url, data=json.dumps(body or {}), content_type="application/json")


@pytest.fixture
def api_start(django_capture_on_commit_callbacks, model_server):
    def start(client, version: int, body: dict, key: str = KEY):
        with django_capture_on_commit_callbacks(execute=True):
            return post(client, start_url(version, key), body)

    return start


def test_an_author_starts_a_run_and_reads_its_report(api_start, author_client, golden, draft):
    response = api_start(author_client, draft.number, {"dataset": "golden"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == f"/api/v1/evaluations/{body['id']}" == body["url"]
    detail = author_client.get(response["Location"]).json()
    assert detail["status"] == "finished"
    assert detail["progress"] == {"done": 5, "total": 5, "percent": 100.0}
    assert (detail["pass_rate"], detail["baseline"]["pass_rate"], detail["delta_points"]) == (
        40.0,
        60.0,
        -20.0,
    )
    assert (detail["baseline"]["version"], detail["environment"]) == (1, "production")
    assert detail["dataset_changed"] is False
    report = detail["report"]
    assert [c["key"] for c in report["cases"]][:2] == ["greet-ada", "refund-di"]
    assert report["cases"][0]["change"] == "regressed"
    assert report["counts"]["fixed"] == 1
    assert report["must_pass_failed"] == 1


def test_a_gate_run_needs_releases_write_and_hides_the_holdout(
    api_start, author_client, make_client, golden, draft
):
    refused = api_start(author_client, draft.number, {"dataset": "golden", "include_holdout": True})
    body = assert_problem(refused, 403, "/problems/insufficient-scope")
    assert body["required_scope"] == "releases:write"
    assert not EvalRun.objects.exists()

    gatekeeper = make_client("prompts:read", "prompts:write", "releases:write", name="gate-ci")
    response = api_start(gatekeeper, draft.number, {"dataset": "golden", "include_holdout": True})
    assert response.status_code == 202
    report = gatekeeper.get(response["Location"]).json()["report"]
    held = next(c for c in report["cases"] if c["key"] == "held")
    assert (held["output"], held["detail"], held["variables"]) == (None, None, None)


@pytest.mark.parametrize(
    ("version", "body", "status", "problem"),
    [
        (99, {"dataset": "golden"}, 404, "version-not-found"),
        (4, {"dataset": "nope"}, 404, "dataset-not-found"),
        (4, {"dataset": "empty"}, 400, "dataset-empty"),
        (4, {"dataset": "golden", "environment": "mars"}, 404, "environment-not-found"),
        (4, {}, 400, "validation-error"),
        (4, {"dataset": "golden", "include_holdout": "maybe"}, 400, "validation-error"),
    ],
)
def test_bad_starts_are_problems_and_change_nothing(
    api_start, author_client, golden, draft, version, body, status, problem
):
    dataset_create(prompt=golden.prompt, name="empty", actor=ACTOR)
    assert_problem(api_start(author_client, version, body), status, f"/problems/{problem}")
    assert not EvalRun.objects.exists()


def test_an_unknown_prompt_is_404(api_start, author_client, db):
    response = api_start(author_client, 1, {"dataset": "golden"}, key="no.such-prompt")
    assert_problem(response, 404, "/problems/prompt-not-found")


def test_who_may_start_read_and_cancel(
    api_start, reader_client, releaser_client, anonymous_client, make_client, golden, draft
):
    for client in (reader_client, releaser_client):
        refused = api_start(client, draft.number, {"dataset": "golden"})
        assert_problem(refused, 403, "/problems/insufficient-scope")
    assert_problem(
        api_start(anonymous_client, draft.number, {"dataset": "golden"}),
        401,
        "/problems/unauthenticated",
    )
    limited = make_client("prompts:write", environments=("staging",))
    assert_problem(
        api_start(limited, draft.number, {"dataset": "golden", "environment": "production"}),
        403,
        "/problems/environment-forbidden",
    )
    assert not EvalRun.objects.exists()

    run = eval_run_start(
        prompt=golden.prompt, version=draft.number, dataset_name="golden", actor=ACTOR
    )  # queued: its batches wait for a commit that never comes
    assert reader_client.get(f"/api/v1/evaluations/{run.pk}").status_code == 200
    assert_problem(
        post(reader_client, f"/api/v1/evaluations/{run.pk}/cancel"),
        403,
        "/problems/insufficient-scope",
    )
    assert_problem(
        anonymous_client.get(f"/api/v1/evaluations/{run.pk}"), 401, "/problems/unauthenticated"
    )


def test_cancel_over_the_api(author_client, golden, draft):
    run = eval_run_start(
        prompt=golden.prompt, version=draft.number, dataset_name="golden", actor=ACTOR
    )
    response = post(author_client, f"/api/v1/evaluations/{run.pk}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert author_client.get(f"/api/v1/evaluations/{run.pk}/cancel").status_code == 405
    baseline = run.baseline
    EvalRun.objects.filter(pk=baseline.pk).update(status=EvalRun.Status.FINISHED)
    assert_problem(
        post(author_client, f"/api/v1/evaluations/{baseline.pk}/cancel"),
        409,
        "/problems/eval-run-ended",
    )
    assert_problem(
        post(author_client, "/api/v1/evaluations/999999/cancel"),
        404,
        "/problems/eval-run-not-found",
    )
    assert_problem(
        author_client.get("/api/v1/evaluations/999999"), 404, "/problems/eval-run-not-found"
    )


def test_the_list_is_paginated_newest_first_in_a_fixed_number_of_queries(
    reader_client, golden, draft, django_assert_max_num_queries
):
    url = f"/api/v1/prompts/{KEY}/evaluations"
    eval_run_start(prompt=golden.prompt, version=draft.number, dataset_name="golden", actor=ACTOR)
    reader_client.get(url)  # warm the key cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        first = reader_client.get(url).json()
    for _ in range(3):
        eval_run_start(prompt=golden.prompt, version=3, dataset_name="golden", actor=ACTOR)
    with CaptureQueriesContext(connection) as many:
        page = reader_client.get(url + "?page_size=2").json()
    assert len(many) == len(one)
    assert first["count"] == 2  # the draft's run and its baseline
    assert page["count"] == 5
    assert [r["version"] for r in page["results"]] == [3, 3]
    assert page["next"]
    assert_problem(
        reader_client.get("/api/v1/prompts/nope/evaluations"), 404, "/problems/prompt-not-found"
    )


# --- the admin ----------------------------------------------------------------------------------


@pytest.fixture
def author_admin(client, author):
    client.force_login(author)
    return client


def test_a_versions_page_offers_to_evaluate_it(author_admin, golden, draft):
    page = author_admin.get(reverse("admin:registry_promptversion_change", args=[draft.pk]))
    start = author_admin.get(reverse("admin:evaluations_evalrun_add"), {"version": draft.number})

    link = f"{reverse('admin:evaluations_evalrun_add')}?version={draft.number}"
    assert link in page.content.decode()
    assert f'value="{draft.number}"' in start.content.decode()  # the version comes filled in


def test_an_author_runs_an_evaluation_from_the_admin_and_reads_the_report(
    author_admin, golden, draft, model_server, django_capture_on_commit_callbacks
):
    add = reverse("admin:evaluations_evalrun_add")
    page = author_admin.get(add)
    assert page.status_code == 200
    assert "include_holdout" not in page.content.decode()  # no gate runs for authors
    with django_capture_on_commit_callbacks(execute=True):
        response = author_admin.post(add, {"dataset": golden.pk, "version": draft.number})
    run = EvalRun.objects.get(version=draft)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:evaluations_evalrun_change", args=[run.pk])

    page = author_admin.get(response["Location"])
    assert page.status_code == 200
    text = page.content.decode()
    assert "Regressed" in text
    assert "40 %" in text
    assert "-20 points" in text
    assert text.index("greet-ada") < text.index("hello-bob")
    assert "v1, stable in production when the run started: 60 %" in text
    # The variables as JSON, the way the case file has them (not Python's repr).
    assert "<pre>{\n  &quot;customer_name&quot;: &quot;Ada&quot;\n}</pre>" in text

    listing = author_admin.get(reverse("admin:evaluations_evalrun_changelist"))
    assert listing.status_code == 200
    assert '<progress value="5" max="5">' in listing.content.decode()
    assert "Run an evaluation" in listing.content.decode()

    progress = author_admin.get(reverse("admin:evaluations_evalrun_progress", args=[run.pk]))
    assert progress.json() == {
        "status": "finished",
        "done": 5,
        "total": 5,
        "percent": 100.0,
        "pass_rate": 40.0,
        "in_progress": False,
    }


def test_the_admin_form_names_the_default_baseline_environment(author_admin, golden, settings):
    settings.EVAL_BASELINE_ENVIRONMENT = "staging"
    page = author_admin.get(reverse("admin:evaluations_evalrun_add")).content.decode()
    assert "Default (staging, else the highest with a stable version)" in page
    assert "Default (production" not in page


def test_the_admin_form_shows_a_start_that_fails(author_admin, golden, draft):
    response = author_admin.post(
        reverse("admin:evaluations_evalrun_add"), {"dataset": golden.pk, "version": 99}
    )
    assert response.status_code == 400
    assert "has no version 99" in response.content.decode()
    assert not EvalRun.objects.exists()


def test_a_running_run_polls_its_progress_and_can_be_cancelled(author_admin, golden, draft):
    run = eval_run_start(
        prompt=golden.prompt, version=draft.number, dataset_name="golden", actor=ACTOR
    )
    page = author_admin.get(reverse("admin:evaluations_evalrun_change", args=[run.pk]))
    text = page.content.decode()
    assert reverse("admin:evaluations_evalrun_progress", args=[run.pk]) in text
    assert "Cancel the run" in text
    cancel = reverse("admin:evaluations_evalrun_cancel", args=[run.pk])
    assert author_admin.get(cancel).status_code == 405
    assert author_admin.post(cancel).status_code == 302
    run.refresh_from_db()
    assert run.status == EvalRun.Status.CANCELLED


def test_holdout_results_are_frozen_in_the_admin(author_admin, golden, draft, run_now):
    run = run_now(prompt=golden.prompt, version=draft.number, include_holdout=True)
    held = EvalResult.objects.get(run=run, case_key="held")
    page = author_admin.get(reverse("admin:evaluations_evalresult_change", args=[held.pk]))
    assert page.status_code == 200
    assert "Frozen (holdout case)" in page.content.decode()
    assert "Say hello to Ed" not in page.content.decode()
    report = author_admin.get(reverse("admin:evaluations_evalrun_change", args=[run.pk]))
    assert "Say hello to Ed" not in report.content.decode()
    assert "Say hello to Ada" in report.content.decode()


def test_gate_runs_need_an_author_who_may_release_and_outsiders_see_nothing(client, golden, draft):
    # Release managers alone read runs but start none (migration 0004): a gate run is started by
    # someone who may both start runs (Prompt authors) and release (releases.deploy_release).
    manager = UserFactory(username="rm", is_staff=True)
    manager.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(manager)
    assert client.get(reverse("admin:evaluations_evalrun_add")).status_code == 403
    manager.user_permissions.add(*Group.objects.get(name="Prompt authors").permissions.all())
    manager = type(manager).objects.get(pk=manager.pk)  # a fresh permission cache
    client.force_login(manager)
    assert (
        "include_holdout" in client.get(reverse("admin:evaluations_evalrun_add")).content.decode()
    )

    outsider = UserFactory(username="carol", is_staff=True)
    client.force_login(outsider)
    run = eval_run_start(
        prompt=golden.prompt, version=draft.number, dataset_name="golden", actor=ACTOR
    )
    assert client.get(reverse("admin:evaluations_evalrun_changelist")).status_code == 403
    assert client.get(reverse("admin:evaluations_evalrun_change", args=[run.pk])).status_code == 403
    assert client.get(reverse("admin:evaluations_evalrun_add")).status_code == 403
    assert (
        client.post(reverse("admin:evaluations_evalrun_cancel", args=[run.pk])).status_code == 403
    )


def test_the_run_list_costs_the_same_queries_for_one_run_or_many(author_admin, golden, draft):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url = reverse("admin:evaluations_evalrun_changelist")
    eval_run_start(prompt=golden.prompt, version=draft.number, dataset_name="golden", actor=ACTOR)
    author_admin.get(url)  # warm up session and permission caches
    with CaptureQueriesContext(connection) as one:
        assert author_admin.get(url).status_code == 200
    for _ in range(3):
        eval_run_start(prompt=golden.prompt, version=3, dataset_name="golden", actor=ACTOR)
    with CaptureQueriesContext(connection) as many:
        assert author_admin.get(url).status_code == 200
    assert len(many) == len(one)


# --- the command line ---------------------------------------------------------------------------


def test_the_evaluate_command_starts_shows_resumes_and_cancels(
    golden, draft, model_server, django_capture_on_commit_callbacks
):
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    # (--wait would poll here for ever: this test's commit hooks run only when the block ends.)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("evaluate", "start", KEY, str(draft.number), "golden", stdout=out)
    run = EvalRun.objects.get(version=draft)
    assert out.getvalue() == f"Eval run {run.pk} started: 5 case(s).\n"
    out = StringIO()
    call_command("evaluate", "show", str(run.pk), stdout=out)
    text = out.getvalue()
    assert "pass rate 40.0 %" in text
    assert "Stable v1: 60.0 % (difference -20.0 pp)" in text
    assert "2 regressed, 1 fixed, 1 still failing, 1 passing" in text
    assert "Regressed: greet-ada (must pass)" in text
    assert "hello-bob" not in text  # fixed: nothing to look at

    with pytest.raises(CommandError, match="finished already"):
        call_command("evaluate", "cancel", str(run.pk), stdout=StringIO())
    with pytest.raises(CommandError, match="no dataset named 'nope'"):
        call_command("evaluate", "start", KEY, "4", "nope", stdout=StringIO())

    queued = eval_run_start(prompt=golden.prompt, version=3, dataset_name="golden", actor=ACTOR)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("evaluate", "resume", str(queued.pk), stdout=out)
    assert f"Eval run {queued.pk}: 5 case(s) queued again." in out.getvalue()
    queued.refresh_from_db()
    assert queued.status == EvalRun.Status.FINISHED


def test_evaluate_wait_gives_up_after_its_timeout_and_says_how_to_look_later(golden, draft):
    from io import StringIO

    from django.core.management import CommandError, call_command

    # No batch runs here (nothing commits), as when no worker is up: the wait must end.
    with pytest.raises(CommandError, match=r"has not finished after 0 s .*evaluate show"):
        call_command(
            "evaluate",
            "start",
            KEY,
            str(draft.number),
            "golden",
            "--wait",
            "--timeout",
            "0",
            stdout=StringIO(),
        )


def test_a_runs_results_are_listed_read_only(author_admin, golden, draft, run_now):
    run = run_now(prompt=golden.prompt, version=draft.number)
    listing = author_admin.get(
        reverse("admin:evaluations_evalresult_changelist"), {"run__id__exact": run.pk}
    )
    assert listing.status_code == 200
    assert {r.case_key for r in listing.context["cl"].result_list} == {c["key"] for c in CASES[:5]}
    assert author_admin.get(reverse("admin:evaluations_evalresult_add")).status_code == 403


def test_a_run_the_broker_refused_stays_queued_and_says_how_to_resume(
    released, golden, draft, model_server, monkeypatch, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    from evaluations.tasks import eval_run_batch

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patched:
        patched.setattr(eval_run_batch, "apply_async", refuse)
        with django_capture_on_commit_callbacks(execute=True):
            run = eval_run_start(
                prompt=released.prompt,
                version=draft.number,
                dataset_name="golden",
                actor=ACTOR,
                environment="development",
            )
    run.refresh_from_db()
    assert run.status == EvalRun.Status.QUEUED
    assert f"evaluate resume {run.pk}" in run.error
    with django_capture_on_commit_callbacks(execute=True):
        eval_run_resume(run=run, actor=ACTOR)
    run.refresh_from_db()
    assert (run.status, run.error) == (EvalRun.Status.FINISHED, "")
