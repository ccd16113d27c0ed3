"""``manage.py demo``: the demo registry ``make run`` loads, and the admin login it prints."""

from __future__ import annotations

import re
import stat
from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings

from registry.errors import Severity
from registry.models import Prompt, PromptVersion
from registry.selectors import TranslationState, version_check, version_translation_status

pytestmark = pytest.mark.django_db

PASSWORD = re.compile(r"user (?P<user>\S+)\s+password (?P<password>\S+)")


@pytest.fixture
def var_dir(tmp_path):
    with override_settings(VAR_DIR=tmp_path):
        yield tmp_path


def demo() -> str:
    out = StringIO()
    call_command("demo", stdout=out)
    return out.getvalue()


def login(output: str) -> tuple[str, str]:
    match = PASSWORD.search(output)
    assert match, output
    return match["user"], match["password"]


def test_demo_loads_realistic_prompts(var_dir):
    demo()

    prompts = Prompt.objects.prefetch_related("versions__templates")
    assert prompts.count() >= 5
    localized = [
        p
        for p in prompts
        if len({t.locale for v in p.versions.all() for t in v.templates.all()}) >= 2
        and p.versions.filter(status=PromptVersion.Status.COMMITTED).count() >= 2
    ]
    assert len(localized) >= 2


def test_every_demo_version_is_valid(var_dir):
    demo()

    versions = PromptVersion.objects.select_related("prompt").prefetch_related(
        "variables", "templates"
    )
    assert versions.count() >= 8
    for version in versions:
        errors = [p for p in version_check(version) if p.severity is Severity.ERROR]
        assert errors == [], f"{version}: {errors}"


def test_the_demo_shows_a_stale_translation(var_dir):
    demo()

    latest = (
        PromptVersion.objects.filter(prompt__key="support.refund-reply", status="committed")
        .order_by("-number")
        .first()
    )
    states = {s.locale: s.state for s in version_translation_status(latest)}
    assert states == {"en": TranslationState.SOURCE, "fr": TranslationState.STALE}


def test_running_the_demo_twice_duplicates_nothing(var_dir):
    first = demo()
    counts = (Prompt.objects.count(), PromptVersion.objects.count())

    second = demo()

    assert (Prompt.objects.count(), PromptVersion.objects.count()) == counts
    assert "0 loaded" in second
    assert login(first) == login(second)
    assert get_user_model().objects.filter(username="admin").count() == 1


def test_the_printed_admin_login_works(var_dir):
    username, password = login(demo())

    user = authenticate(username=username, password=password)

    assert user is not None
    assert user.is_superuser
    assert user.is_staff


def test_the_password_is_kept_in_var_readable_by_its_owner_only(var_dir):
    _username, password = login(demo())

    path = var_dir / "admin-password.txt"
    assert path.read_text().strip() == password
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_fresh_database_reuses_the_kept_password(var_dir):
    _username, password = login(demo())
    get_user_model().objects.filter(username="admin").delete()

    assert login(demo())[1] == password
    assert authenticate(username="admin", password=password) is not None


def test_an_admin_with_a_password_of_its_own_keeps_it(var_dir):
    from tests.factories import UserFactory

    UserFactory(username="admin", is_staff=True, is_superuser=True)

    output = demo()

    assert "admin" not in dict(PASSWORD.findall(output))  # the reviewer's login is printed
    assert "admin" in output
    assert authenticate(username="admin", password="correct horse battery staple") is not None


def test_the_demo_has_a_golden_set_a_gate_an_analysed_canary_and_an_experiment_with_traffic(
    var_dir, django_capture_on_commit_callbacks
):
    from evaluations.experiments.selectors import experiment_results
    from evaluations.gates.services import version_gate_status
    from evaluations.models import CanaryAnalysis, Dataset, PromotionGate
    from releases.models import Release
    from runs.models import Call

    with django_capture_on_commit_callbacks(execute=True):
        demo()

    golden = Dataset.objects.get(prompt__key="support.refund-reply", name="golden")
    assert golden.cases.count() == 14
    assert golden.cases.filter(holdout=True).count() == 2
    assert golden.cases.filter(must_pass=True).count() == 2
    gate = PromotionGate.objects.get(environment__name="production")
    assert (gate.dataset_name, gate.min_pass_rate) == ("golden", 90)
    # No gate run yet: promoting the production canary waits for one (the README's tour).
    [status] = version_gate_status(prompt=golden.prompt, version=3, environment=gate.environment)
    assert not status.passed
    analysis = CanaryAnalysis.objects.get(release__prompt__key="support.refund-reply")
    assert (analysis.status, analysis.canary_version) == ("running", 3)

    triage = Release.objects.get(
        prompt__key="support.ticket-triage", environment__name="production"
    )
    results = experiment_results(release=triage)
    assert {v.name for v in results.variants} == {"control", "chargeback"}
    assert sum(v.calls for v in results.variants) == 1200
    assert not results.decisions_held  # the split is the release's own: no sample-ratio alarm
    assert Call.objects.filter(request_id__startswith="demo-").count() == 1200

    with django_capture_on_commit_callbacks(execute=True):
        demo()
    assert Call.objects.count() == 1200
    assert golden.cases.count() == 14


def test_without_loopback_the_demo_says_how_to_load_it(var_dir, settings):
    # Production settings refuse a loopback provider (runs.egress): a clear error, nothing loaded.
    settings.PROVIDER_ALLOW_LOOPBACK = False
    with pytest.raises(CommandError, match="PROVIDER_ALLOW_LOOPBACK=true"):
        demo()
    assert not Prompt.objects.exists()


def test_in_the_demo_production_a_canary_is_proposed_approved_by_the_reviewer_and_applied(
    var_dir, client
):
    """Decision 0048's "done when": production requires review by "Release reviewers"; the
    admin proposes a canary from the board, the printed reviewer approves it, the admin applies
    it."""
    from django.test import Client
    from django.urls import reverse

    from releases.models import ChangeRequest, Environment, Release

    output = demo()
    logins = dict(PASSWORD.findall(output))
    assert set(logins) == {"admin", "reviewer"}
    production = Environment.objects.get(name="production")
    assert production.requires_review
    assert production.review_group.name == "Release reviewers"

    admin, reviewer = Client(), Client()
    assert admin.login(username="admin", password=logins["admin"])
    assert reviewer.login(username="reviewer", password=logins["reviewer"])
    release = Release.objects.get(
        prompt__key="marketing.product-description", environment=production
    )
    admin.post(
        reverse("admin:releases_release_canary_start", args=[release.pk]),
        {"version": 2, "percent": 5, "reason": "Try v2 on 5 %.", "revision": release.revision},
    )
    proposed = ChangeRequest.objects.get()
    page = reverse("admin:releases_changerequest_change", args=[proposed.pk])
    reviewer.post(page, {"step": "approve", "comment": "Go."})
    admin.post(page, {"step": "apply"})

    proposed.refresh_from_db()
    assert proposed.state == ChangeRequest.State.APPLIED
    release.refresh_from_db()
    assert (release.canary_version.number, release.canary_weight) == (2, 500)
    assert (
        proposed.release_event.reason
        == f"change request #{proposed.pk} (approved by reviewer): Try v2 on 5 %."
    )
