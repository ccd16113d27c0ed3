"""The admin for canary analyses: the list with derived times, an analysis's page with its
policy, ramp and verdict figures, and the resume and stop verbs.

Personas (STYLE R14):
- ``rita`` (release manager): in "Release managers"; reads analyses, resumes and stops them.
- ``alice`` (author, tests/conftest.py): in "Prompt authors"; no analysis permission: 403.
- ``viewer`` (dave): staff with view permissions on analyses only: reads, never steers.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evaluations.canary import services as canary
from evaluations.models import CanaryAnalysis
from registry.actors import Actor
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")
LIST = "admin:evaluations_canaryanalysis_changelist"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def rita():
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    return user


@pytest.fixture
def viewer():
    user = UserFactory(username="dave", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_canaryanalysis"))
    return user


def analysed_canary(released, *, calls: int, errors: int, spread: int) -> CanaryAnalysis:
    """v3 canaried at 50 % an hour ago (steps 50 → 100) under analysis, with ``calls`` sticky
    calls per arm ten minutes in: the canary's first ``errors`` failed, latencies vary over
    ``spread`` ms."""
    from runs.models import Call

    started = timezone.now() - timedelta(hours=1)
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={"steps": [50, 100], "min_minutes": 5, "min_calls": 30},
        actor=MANAGER,
        now=started,
    )
    release = released.release("staging")
    Call.objects.bulk_create(
        Call(
            request_id=f"{variant}-{i}",
            source=Call.Source.REPORTED,
            created_at=started + timedelta(minutes=10),
            prompt_id=release.prompt_id,
            version=release.canary_version if variant == "canary" else release.stable_version,
            environment_id=release.environment_id,
            variant=variant,
            sticky=True,
            latency_ms=100.0 + i % spread,
            status=Call.Status.ERROR if variant == "canary" and i < errors else Call.Status.OK,
        )
        for variant in ("canary", "stable")
        for i in range(calls)
    )
    return analysis


@pytest.fixture
def analysis(released) -> CanaryAnalysis:
    """Failed on its error rate (20 of 60 canary calls): rolled back with a verdict."""
    analysis = analysed_canary(released, calls=60, errors=20, spread=60)
    canary.canary_analysis_look(analysis_id=analysis.pk)
    analysis.refresh_from_db()
    return analysis


def test_the_list_shows_each_analysis_in_a_fixed_number_of_queries(rita, analysis):
    client = client_for(rita)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(LIST))
    assert response.status_code == 200
    assert b"support.refund-reply @ staging" in response.content
    assert b"Rolled back" in response.content
    assert b"1 of 1 \xc2\xb7 50 %" in response.content

    canary.canary_analysis_start(
        prompt=analysis.release.prompt,
        environment=analysis.release.environment,
        version=3,
        policy={"steps": [50]},
        actor=MANAGER,
    )
    with CaptureQueriesContext(connection) as more:
        client.get(reverse(LIST))
    assert len(more) == len(queries)


def test_the_page_shows_the_policy_the_ramp_and_the_figures(rita, analysis):
    response = client_for(rita).get(
        reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk])
    )

    assert response.status_code == 200
    content = response.content.decode()
    assert "<svg" in content
    assert "<polyline" in content
    assert "Error rate" in content
    assert "at most 1 percentage point above stable" in content
    assert "Failed: rolled back" in content
    assert "error rate" in content
    assert "33.33" in content
    assert "release event" in content


def test_a_release_manager_resumes_and_stops_from_the_page(rita, released):
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={"steps": [50]},
        actor=MANAGER,
    )
    CanaryAnalysis.objects.filter(pk=analysis.pk).update(status=CanaryAnalysis.Status.HELD)
    client = client_for(rita)

    page = client.get(reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk]))
    assert b"Resume on a fresh window" in page.content
    client.post(reverse("admin:evaluations_canaryanalysis_resume", args=[analysis.pk]))
    analysis.refresh_from_db()
    assert analysis.status == CanaryAnalysis.Status.RUNNING

    client.post(
        reverse(LIST),
        {"action": "stop_selected", "_selected_action": [analysis.pk]},
    )
    analysis.refresh_from_db()
    assert analysis.status == CanaryAnalysis.Status.ENDED
    assert analysis.hold_reason == "Stopped by rita."


def test_a_viewer_reads_but_cannot_steer(viewer, analysis):
    client = client_for(viewer)
    page = client.get(reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk]))
    assert page.status_code == 200
    assert b"Stop (the canary stays)" not in page.content

    response = client.post(reverse("admin:evaluations_canaryanalysis_stop", args=[analysis.pk]))

    assert response.status_code == 403
    analysis.refresh_from_db()
    assert analysis.status == CanaryAnalysis.Status.ROLLED_BACK


def test_an_author_may_not_see_analyses(author, analysis):
    assert client_for(author).get(reverse(LIST)).status_code == 403


def test_resume_refused_is_reported_not_raised(rita, analysis):
    client = client_for(rita)
    response = client.post(
        reverse("admin:evaluations_canaryanalysis_resume", args=[analysis.pk]), follow=True
    )
    assert response.status_code == 200
    assert b"Only a held analysis resumes" in response.content


# --- look now -------------------------------------------------------------------------------------


@pytest.fixture
def sampled(released) -> CanaryAnalysis:
    """Both arms alike and error-free, enough calls that the error rate's interval fits the
    default 1 pp margin: a look promotes it."""
    return analysed_canary(released, calls=500, errors=0, spread=10)


def look_url(analysis: CanaryAnalysis) -> str:
    return reverse("admin:evaluations_canaryanalysis_look", args=[analysis.pk])


def test_a_release_manager_looks_now_and_reads_the_verdict(rita, released, sampled):
    client = client_for(rita)
    page = client.get(reverse("admin:evaluations_canaryanalysis_change", args=[sampled.pk]))
    assert b"Look now" in page.content

    response = client.post(look_url(sampled), follow=True)

    assert response.status_code == 200
    sampled.refresh_from_db()
    assert sampled.status == CanaryAnalysis.Status.PROMOTED
    assert sampled.verdicts.get().outcome == "promote"
    assert released.release("staging").stable_version.number == 3
    assert "passed the last step: promoted" in response.content.decode()
    assert b"Look now" not in response.content  # only a running analysis is looked at


def test_look_now_reports_a_wait_and_a_stopped_analysis(rita, released):
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={"steps": [50]},
        actor=MANAGER,
    )
    client = client_for(rita)

    waiting = client.post(look_url(analysis), follow=True).content.decode()
    assert "waiting for the minimum sample" in waiting
    assert "still waiting" in client.post(look_url(analysis), follow=True).content.decode()
    assert analysis.verdicts.count() == 1  # a wait is stored once per step

    canary.canary_analysis_stop(analysis_id=analysis.pk, actor=MANAGER)
    stopped = client.post(look_url(analysis), follow=True).content.decode()
    assert "Canary analysis of v3: no look. It is not running" in stopped
    assert analysis.verdicts.count() == 1


def test_look_now_is_post_only_and_needs_the_change_permission(rita, viewer, author, sampled):
    assert client_for(rita).get(look_url(sampled)).status_code == 405
    viewer_page = client_for(viewer).get(
        reverse("admin:evaluations_canaryanalysis_change", args=[sampled.pk])
    )
    assert b"Look now" not in viewer_page.content

    assert client_for(viewer).post(look_url(sampled)).status_code == 403
    assert client_for(author).post(look_url(sampled)).status_code == 403

    sampled.refresh_from_db()
    assert sampled.status == CanaryAnalysis.Status.RUNNING
    assert not sampled.verdicts.exists()
    assert sampled.last_looked_at is None


def test_look_now_at_an_unknown_analysis_is_a_404(rita):
    response = client_for(rita).post(
        reverse("admin:evaluations_canaryanalysis_look", args=[999999])
    )
    assert response.status_code == 404


def test_the_ramp_of_an_attached_analysis_starts_at_its_step(released):
    from decimal import Decimal

    from evaluations.admin.canary import RAMP_HEIGHT, RAMP_PAD, ramp_svg_points
    from releases.services import release_canary_start

    release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(25),
        actor=MANAGER,
    )
    analysis = canary.canary_analysis_attach(
        prompt=released.prompt,
        environment=released.environments["staging"],
        policy={"steps": [5, 25, 50, 100]},
        actor=MANAGER,
    )

    ramp = ramp_svg_points(analysis, [])

    y_25 = RAMP_PAD + 0.75 * (RAMP_HEIGHT - 2 * RAMP_PAD)
    assert {float(p.split(",")[1]) for p in ramp["points"].split()} == {y_25}


def test_the_release_page_links_to_its_canary_analysis(rita, analysis):
    release = analysis.release
    client = client_for(rita)
    page = client.get(reverse("admin:releases_release_change", args=[release.pk]))
    listed = client.get(
        reverse("admin:evaluations_canaryanalysis_changelist"),
        {"q": release.prompt.key, "release__environment__id__exact": release.environment_id},
    )

    assert page.status_code == 200
    assert reverse("admin:evaluations_canaryanalysis_changelist") in page.content.decode()
    assert listed.status_code == 200
    assert reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk]) in (
        listed.content.decode()
    )


# --- in users' words --------------------------------------------------------------------------------


def test_the_page_says_the_step_and_the_policy_in_words_and_hides_the_internals(rita, released):
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={
            "steps": [5, 25, 50, 100],
            "min_minutes": [30, 60, 90, 0],
            "min_calls": 1000,
            "max_minutes": 1440,
            "max_p95_latency_increase": 15,
            "max_feedback_decrease": 0.2,
            "alpha": 0.01,
        },
        actor=MANAGER,
    )

    response = client_for(rita).get(
        reverse("admin:evaluations_canaryanalysis_change", args=[analysis.pk])
    )

    page = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))
    assert "Step: 1 of 3 · 5 %" in page
    assert "Ramps through 5 %, 25 %, 50 % of subjects, then promoted to 100 %." in page
    assert "2 of 3 25 % of subjects 1 h and 1,000 sticky calls in each arm 1 day" in page
    assert "3 of 3 50 % of subjects 1 h 30 min and 1,000 sticky calls in each arm" in page
    assert "p95 latency at most 15 % above stable" in page
    assert "Feedback at most 0.2 points below stable, on the −1 to 1 feedback scale" in page
    assert "judged with 99 % confidence" in page
    assert "Looks that could not measure: None in a row (it holds for a person after 3)" in page
    # Internals: the salt, the step as an index, the snake_case keys, the model's help text.
    for internal in (
        analysis.canary_salt,
        "Index into the policy",
        "min_calls",
        "alpha",
        "max_p95_latency_increase",
        "Canary salt",
        "Unmeasured looks",
    ):
        assert internal not in page, internal


def test_a_look_reports_a_verdict_without_saying_its_subject_twice(rita, released, sampled):
    response = client_for(rita).post(look_url(sampled), follow=True)

    message = next(iter(response.context["messages"])).message
    assert message.startswith("Canary analysis of v3, step 1 of 1 (50 %)")
    assert message.count("Canary analysis of v3") == 1


def test_stopping_says_it_once_with_the_analysis_as_it_is_now(rita, released):
    analysis = canary.canary_analysis_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        policy={"steps": [50]},
        actor=MANAGER,
    )

    response = client_for(rita).post(
        reverse("admin:evaluations_canaryanalysis_stop", args=[analysis.pk]), follow=True
    )

    messages = [m.message for m in response.context["messages"]]
    assert messages == ["Canary analysis of v3 stopped; the canary stays."]
