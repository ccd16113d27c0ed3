"""The promotion gates on the release confirmation pages (releases/admin/views.py, the gates'
include) and the gate run started from there (evaluations/admin/evalruns.py ``gate_view``): each
gate's state for the version before the click, a button that starts the gate run and comes back
to the same page, the canary analysis a change would end, and no refusal that tells a person to
send an HTTP request.

Data: the ``released`` fixture (support.refund-reply, versions 1–3; v2 stable in staging). Gate
runs are rows written with the models (tests/evaluations/test_gates.py's helpers), except in the
start-a-gate-run flow, which runs a real, eager gate run against the local model server.

Personas (STYLE R14):
- ``rita``: in "Release managers" (deploys, reads eval runs; no ``add_evalrun``): may start a
  gate run from a confirmation page, as whoever may release.
- ``dave``: may deploy, but cannot see eval runs: sees the gates, no button, and is refused (403)
  if he posts the form anyway.
"""

from __future__ import annotations

import ast
import html
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from evaluations.admin.evalruns import run_url
from evaluations.canary import services as canary
from evaluations.models import EvalRun
from registry.actors import Actor
from releases import services
from releases.models import Release
from tests.evaluations.test_gates import MANAGER, gate, gate_run, golden, text
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

GATE_URL = "admin:evaluations_evalrun_gate"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rita() -> Client:
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def dave() -> Client:
    user = UserFactory(username="dave", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="releases", codename__in=["view_release", "deploy_release"]
        )
    )
    client = Client()
    client.force_login(user)
    return client


def page_of(release: Release, verb: str = "deploy", **params) -> str:
    url = reverse(f"admin:releases_release_{verb}", args=[release.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")


def as_text(fragment: str) -> str:
    return html.unescape(text(type("Page", (), {"content": fragment.encode()})))


def gates_text(response) -> str:
    """The gates' panel of a confirmation page, as text."""
    page = response.content.decode()
    match = re.search(r'<div class="module release-gates".*?</div>\s*<script>', page, re.S)
    assert match, "no promotion gates panel on the page"
    return as_text(match.group(0))


# --- the gates listed, each with its state --------------------------------------------------------


def test_a_gate_with_a_passing_run_is_listed_as_passed_with_its_figures(rita, released):
    dataset = golden(released.prompt)
    gate(released.environments["staging"], rate="75")
    run = gate_run(dataset, 3)

    response = rita.get(page_of(released.release("staging"), version=3))

    panel = gates_text(response)
    assert response.status_code == 200
    assert "Promotion gates in staging" in panel
    assert "golden at least 75 % of cases pass, and every must-pass case" in panel
    assert "Passed: 100 % (4 of 4)" in panel
    assert f"Run #{run.pk}" in panel
    assert "Run the gate evaluation" not in panel


def test_a_failing_gate_shows_its_pass_rate_and_offers_another_run(rita, released):
    dataset = golden(released.prompt, must_pass=())
    gate(released.environments["staging"], rate="90")
    gate_run(dataset, 3, failing=("c2",))

    panel = gates_text(rita.get(page_of(released.release("staging"), version=3)))

    assert "Failed: 75 % pass (3 of 4)" in panel
    assert "75 % of cases pass in the gate run" in panel
    assert "the minimum is 90 %" in panel
    assert "Run the gate evaluation again" in panel


def test_a_gate_without_a_run_says_so_and_offers_to_start_one(rita, released):
    golden(released.prompt)
    gate(released.environments["staging"])

    response = rita.get(page_of(released.release("staging"), version=3))

    panel = gates_text(response)
    assert "No gate run yet" in panel
    assert "No gate run of version 3 on 'golden' yet" in panel
    form = re.search(
        r'<form method="post" action="([^"]+)" class="release-gate-start">(.*?)</form>',
        response.content.decode(),
        re.S,
    )
    assert form.group(1) == reverse(GATE_URL)
    hidden = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(2)))
    assert hidden["version"] == "3"
    assert hidden["dataset"] == "golden"
    assert hidden["environment"] == "staging"
    assert hidden["prompt"] == str(released.prompt.pk)
    assert hidden["next"] == page_of(released.release("staging"), version=3)


def test_a_gate_run_under_way_is_linked_to_watch_and_not_started_twice(rita, released):
    run = gate_run(golden(released.prompt), 3, status=EvalRun.Status.RUNNING)
    gate(released.environments["staging"])

    response = rita.get(page_of(released.release("staging"), version=3))

    panel = gates_text(response)
    assert "Gate run under way" in panel
    assert f"Watch run #{run.pk}; it comes back here when it ends" in panel
    assert "Run the gate evaluation" not in panel
    assert f"/evaluations/evalrun/{run.pk}/change/?next=" in response.content.decode()


def test_with_no_gate_the_page_says_nothing_checks_the_version(rita, released):
    golden(released.prompt)  # a dataset, but no gate in staging

    panel = gates_text(rita.get(page_of(released.release("staging"), version=3)))

    assert "No promotion gates for staging: nothing checks this version before release." in panel


def test_the_environment_order_is_listed_with_the_gates(rita, released):
    production = released.environments["production"]
    production.requires_previous_stable = True
    production.save(update_fields=["requires_previous_stable"])

    panel = gates_text(rita.get(page_of(released.release("production"), version=3)))

    assert "Environment order Not yet" in panel
    assert "production takes only versions that have been stable in staging" in panel


def test_the_gates_of_a_canary_promotion_are_those_of_the_canary_version(rita, released):
    golden(released.prompt)
    gate(released.environments["staging"])
    services.release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=1,
        percent=Decimal(10),
        actor=MANAGER,
        reason="tests",
        override_gates=True,
    )

    panel = gates_text(rita.get(page_of(released.release("staging"), "canary_promote")))

    assert "Version 1" in panel
    assert "No gate run of version 1 on 'golden' yet" in panel


def test_a_change_that_meets_no_gate_has_no_gates_panel(rita, released):
    golden(released.prompt)
    gate(released.environments["staging"])

    response = rita.get(
        page_of(released.release("staging"), "shadow_start", versions=3, sample_percent=5)
    )

    assert response.status_code == 200
    assert 'id="release-gates"' not in response.content.decode()


def test_a_user_who_cannot_see_eval_runs_sees_the_gates_without_a_button(dave, released):
    golden(released.prompt)
    gate(released.environments["staging"])

    panel = gates_text(dave.get(page_of(released.release("staging"), version=3)))

    assert "No gate run yet" in panel
    assert "Run the gate evaluation" not in panel


# --- starting the gate run, and coming back ------------------------------------------------------


def gate_form(released, *, environment: str = "staging", version: int = 3, **data) -> dict:
    back = page_of(released.release(environment), version=version) + "&reason=ship%20it"
    return {
        "prompt": released.prompt.pk,
        "version": version,
        "dataset": "golden",
        "environment": environment,
        "next": back,
    } | data


@pytest.mark.usefixtures("eager")
def test_a_gate_run_started_from_the_page_ends_back_on_it_with_the_gate_passed(
    rita, released, golden, model_server, django_capture_on_commit_callbacks
):
    gate(released.environments["staging"], rate="0", must_pass_cases=False)
    release = released.release("staging")
    before = text(rita.get(page_of(release, version=3)))
    assert "No gate run yet" in before

    with django_capture_on_commit_callbacks(execute=True):
        response = rita.post(reverse(GATE_URL), gate_form(released))

    run = EvalRun.objects.get(version__number=3)  # and its baseline, stable v2's
    assert run.include_holdout
    assert run.status == EvalRun.Status.FINISHED
    # The batches ran once the request's transaction committed: the run's page, where the
    # request went, has nothing left to wait for and goes straight back (a run that ends within
    # the request, as eager runs do on a server, skips that page).
    assert response.url == run_url(
        run.pk, next_url=page_of(release, version=3) + "&reason=ship%20it"
    )
    returned = rita.get(response.url)
    assert returned.status_code == 302
    assert returned.url == page_of(release, version=3) + "&reason=ship%20it"
    back = rita.get(returned.url)
    page = text(back)
    assert f"Gate run #{run.pk} of version 3 on golden finished:" in page
    assert "Passed:" in gates_text(back)
    assert re.search(r'<textarea name="reason"[^>]*>\s*ship it</textarea>', back.content.decode())
    assert 'name="version" value="3"' in back.content.decode()  # the same inputs


def test_a_gate_run_under_way_shows_its_progress_and_returns_when_it_has_ended(
    rita, released, golden
):
    gate(released.environments["staging"])
    release = released.release("staging")

    response = rita.post(reverse(GATE_URL), gate_form(released))  # queued: never committed here

    run = EvalRun.objects.get(version__number=3)
    assert run.status == EvalRun.Status.QUEUED
    assert response.status_code == 302
    assert response.url.startswith(reverse("admin:evaluations_evalrun_change", args=[run.pk]))
    progress = rita.get(response.url)
    assert progress.status_code == 200
    assert "A gate run for a release: when it ends, this page takes you back" in text(progress)
    assert 'http-equiv="refresh"' in progress.content.decode()  # without the script, too

    EvalRun.objects.filter(pk=run.pk).update(status=EvalRun.Status.FAILED, error="provider down")
    ended = rita.get(response.url)

    assert ended.status_code == 302
    assert ended.url == page_of(release, version=3) + "&reason=ship%20it"
    assert f"Gate run #{run.pk} of version 3 on golden failed: provider down" in text(
        rita.get(ended.url)
    )


def test_a_gate_run_never_goes_back_to_another_site(rita, released, golden):
    gate(released.environments["staging"])

    response = rita.post(reverse(GATE_URL), gate_form(released, next="https://evil.example/"))

    run = EvalRun.objects.get(version__number=3)
    assert response.url == reverse("admin:evaluations_evalrun_change", args=[run.pk])
    page = rita.get(
        reverse("admin:evaluations_evalrun_change", args=[run.pk]) + "?next=https://evil.example/"
    )
    assert page.status_code == 200
    assert "evil.example" not in page.content.decode()


def test_a_refused_gate_run_comes_back_with_why_and_starts_nothing(rita, released, golden):
    response = rita.post(reverse(GATE_URL), gate_form(released, dataset="missing"))

    assert response.status_code == 302
    assert response.url.startswith(page_of(released.release("staging"), version=3))
    assert "No gate run started: " in text(rita.get(response.url))
    assert not EvalRun.objects.exists()


def test_an_incomplete_gate_run_form_is_a_400(rita, released, golden):
    response = rita.post(reverse(GATE_URL), gate_form(released, version="three"))

    assert response.status_code == 400
    assert not EvalRun.objects.exists()


def test_only_who_may_release_and_see_eval_runs_starts_a_gate_run(dave, author, released, golden):
    alice = Client()
    alice.force_login(author)  # a prompt author: eval runs, but no deploy

    assert dave.post(reverse(GATE_URL), gate_form(released)).status_code == 403
    assert alice.post(reverse(GATE_URL), gate_form(released)).status_code == 403
    assert not EvalRun.objects.exists()


def test_the_gate_run_url_takes_only_posts(rita):
    assert rita.get(reverse(GATE_URL)).status_code == 405


# --- a change that ends a canary analysis --------------------------------------------------------


@pytest.fixture
def analysed(released) -> Release:
    """v3 canaried in staging at 10 % under an analysis ramping 10 → 25 → 50 → 100."""
    canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={"steps": [10, 25, 50, 100]},
        actor=Actor(label="tests"),
    )
    return released.release("staging")


def notices_text(response) -> str:
    match = re.search(r'<div class="release-notices".*?</div>', response.content.decode(), re.S)
    return as_text(match.group(0)) if match else ""


def test_a_ramp_off_the_analysis_step_says_it_ends_the_analysis(rita, analysed):
    response = rita.get(page_of(analysed, "canary_percent", percent=30))

    notice = notices_text(response)
    assert (
        "Setting the canary to 30 % by hand ends the canary analysis (running, step 1 of 3 at 10 %)"
        in notice
    )
    assert "will not ramp, promote or roll it back any more" in notice
    # Before the click: the form is still there, nothing changed.
    assert 'id="release-confirm"' in response.content.decode()


def test_a_ramp_to_the_analysis_step_ends_nothing(rita, analysed):
    assert notices_text(rita.get(page_of(analysed, "canary_percent", percent=10))) == ""


def test_promoting_or_aborting_by_hand_says_it_ends_the_analysis(rita, analysed):
    promote = notices_text(rita.get(page_of(analysed, "canary_promote")))
    abort = notices_text(rita.get(page_of(analysed, "canary_abort")))

    assert "Promoting by hand ends the canary analysis" in promote
    assert "This ends the canary analysis (running, step 1 of 3 at 10 %): with the canary gone" in (
        abort
    )


def test_a_stopped_analysis_is_not_mentioned(rita, analysed):
    analysis = canary.canary_analysis_get(release=analysed)
    canary.canary_analysis_stop(analysis_id=analysis.pk, actor=Actor(label="tests"))

    assert notices_text(rita.get(page_of(analysed, "canary_percent", percent=30))) == ""


# --- no refusal tells a person to send an HTTP request --------------------------------------------

HTTP_INSTRUCTION = re.compile(
    r"\b(POST|PUT|PATCH|DELETE|GET)\s+/|/api/v1|\bcurl\b|HTTP request", re.I
)


def admin_sources() -> list[Path]:
    templates = list((ROOT / "templates" / "admin").rglob("*.html"))
    code = [
        *(ROOT / "registry" / "admin").glob("*.py"),
        *(ROOT / "releases" / "admin").glob("*.py"),
        *ROOT.glob("evaluations/admin*.py"),
        *ROOT.glob("runs/admin*.py"),
    ]
    return templates + code


def shown_strings(path: Path) -> str:
    """What a person can read from a file: a template without its comments, or a module's
    string literals without its docstrings and comments."""
    source = path.read_text()
    if path.suffix == ".html":
        return re.sub(r"{% comment %}.*?{% endcomment %}|{#.*?#}", "", source, flags=re.S)
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return " | ".join(  # a separator no instruction spans
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    )


def test_no_admin_page_or_message_tells_a_person_to_send_an_http_request():
    offending = {
        str(path.relative_to(ROOT)): HTTP_INSTRUCTION.findall(shown_strings(path))
        for path in admin_sources()
    }
    assert {path: found for path, found in offending.items() if found} == {}


def test_no_gate_refusal_tells_a_person_to_send_an_http_request(rita, released):
    """Every state a gate can be in, as its refusal reads in the admin and in the API."""
    dataset = golden(released.prompt, must_pass=("c1",))
    staging = released.environments["staging"]
    gate(staging, rate="90")
    gate(staging, dataset="absent", prompt=released.prompt)
    refusals = []
    for setup in (
        lambda: None,  # no run
        lambda: gate_run(dataset, 3, status=EvalRun.Status.FAILED),
        lambda: gate_run(dataset, 3, status=EvalRun.Status.RUNNING),
        lambda: gate_run(dataset, 3, failing=("c1", "c2")),
    ):
        setup()
        response = rita.post(
            page_of(released.release("staging")),
            {
                "version": 3,
                "reason": "tests",
                "revision": released.release("staging").revision,
            },
        )
        refusals.append(text(response))
    assert all("The version may not be released here yet." in page for page in refusals)
    assert [HTTP_INSTRUCTION.findall(page) for page in refusals] == [[], [], [], []]


def test_after_a_ramp_by_hand_the_next_page_says_the_analysis_no_longer_steers(rita, analysed):
    """Ramped to 25 % by hand (the analysis had it at 10 %): until its next look records the end,
    the analysis is still "running", but the next confirmation must not say that this change is
    the one to end an analysis "running, step 1 of 3 at 10 %"."""
    services.release_canary_set_percent(
        prompt=analysed.prompt,
        environment=analysed.environment,
        percent=Decimal(25),
        actor=Actor(label="tests"),
    )

    promote = notices_text(rita.get(page_of(analysed, "canary_promote")))
    ramp = notices_text(rita.get(page_of(analysed, "canary_percent", percent=50)))

    for notice in (promote, ramp):
        assert "ends the canary analysis" not in notice
        assert (
            "The canary analysis (step 1 of 3 at 10 %) no longer steers this canary: The canary "
            "was set to 25 % by hand; the analysis had it at 10 %. It records that it ended at "
            "its next look." in notice
        )
    # Back to the analysis's own step: it steers again from its next look, and nothing is said.
    assert notices_text(rita.get(page_of(analysed, "canary_percent", percent=10))) == ""

    # Its own page says why, rather than a bare "running" with nothing to explain it.
    analysis = canary.canary_analysis_get(release=analysed)
    page = text(rita.get(reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk])))
    assert (
        "The canary was set to 25 % by hand; the analysis had it at 10 %. It ends at its next"
        in (page)
    )
