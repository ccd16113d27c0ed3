"""Promotion gates (evaluations/gates/services.py): what each outcome of a gate does to a deploy, a
canary, an experiment and a rollback; the override and its audit; the gate services' validation; and
the admin's side (the gates' list, "release anyway" on the release board's confirmation pages).

Eval runs are rows here, written directly with the models: the gate judges the rows, whoever
wrote them. Data comes from the ``released`` fixture (tests/conftest.py): support.refund-reply
with committed versions 1, 2, 3; v2 stable in staging, v1 in production.

Admin personas: ``rita`` is in "Release managers" (may override gates); ``dave`` may deploy
and roll back but not override.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from evaluations.gates.services import (
    GateExists,
    GateInvalid,
    promotion_gate_create,
    promotion_gate_delete,
    promotion_gate_list,
    promotion_gate_update,
    promotion_gates_check,
    version_gate_status,
)
from evaluations.models import Case, Dataset, EvalResult, EvalRun, PromotionGate
from registry.actors import Actor
from registry.errors import VersionNotFound
from registry.models import PromptVersion
from registry.services import version_commit
from releases import services
from releases.errors import PromotionBlocked, ReleaseInvalid
from releases.gates import promotion_checks
from releases.models import Release
from releases.state import release_state
from tests.factories import PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")
KEYS = ("c1", "c2", "c3", "c4")


# --- data ---------------------------------------------------------------------------------------


def golden(prompt, name: str = "golden", keys=KEYS, must_pass=("c1",)) -> Dataset:
    dataset = Dataset.objects.create(prompt=prompt, name=name)
    for position, key in enumerate(keys):
        Case.objects.create(
            dataset=dataset,
            key=key,
            position=position,
            expectation={"scorer": "contains", "value": "refund"},
            must_pass=key in must_pass,
            holdout=position == len(keys) - 1,
        )
    dataset.refresh_from_db()
    return dataset


def gate_run(
    dataset: Dataset,
    version: int,
    *,
    failing=(),
    status=EvalRun.Status.FINISHED,
    include_holdout: bool = True,
    baseline: EvalRun | None = None,
) -> EvalRun:
    """A run of ``version`` over the dataset's current cases, every case passing but ``failing``."""
    cases = list(dataset.cases.all())
    run = EvalRun.objects.create(
        prompt=dataset.prompt,
        version=PromptVersion.objects.get(prompt=dataset.prompt, number=version),
        dataset=dataset,
        include_holdout=include_holdout,
        status=status,
        total_cases=len(cases),
        dataset_updated_at=dataset.updated_at,
        baseline=baseline,
        finished_at=timezone.now() if status == EvalRun.Status.FINISHED else None,
    )
    if status == EvalRun.Status.FINISHED:
        for case in cases:
            EvalResult.objects.create(
                run=run,
                case=case,
                case_key=case.key,
                must_pass=case.must_pass,
                holdout=case.holdout,
                passed=case.key not in failing,
            )
    return run


def gate(environment, *, dataset="golden", rate="75", prompt=None, **fields) -> PromotionGate:
    return promotion_gate_create(
        environment=environment,
        dataset_name=dataset,
        min_pass_rate=rate,
        prompt_key=prompt.key if prompt is not None else None,
        actor=MANAGER,
        **fields,
    )


def change(released, service, environment: str = "staging", **kwargs) -> Release:
    kwargs.setdefault("reason", "tests")
    return service(
        prompt=released.prompt,
        environment=released.environments[environment],
        actor=MANAGER,
        **kwargs,
    )


def deploy_v3(released, **kwargs) -> Release:
    return change(released, services.release_deploy, version=3, **kwargs)


def snapshot(release: Release) -> tuple[int, dict, int]:
    release.refresh_from_db()
    return release.revision, release_state(release).as_dict(), release.events.count()


def refused(released, **kwargs) -> PromotionBlocked:
    before = snapshot(released.release("staging"))
    with pytest.raises(PromotionBlocked) as info:
        deploy_v3(released, **kwargs)
    assert snapshot(released.release("staging")) == before
    return info.value


@pytest.fixture
def staging_gate(released) -> PromotionGate:
    """staging: golden ≥ 75 %, must-pass cases must pass; the prompt has a golden set."""
    golden(released.prompt)
    return gate(released.environments["staging"])


def dataset_of(released) -> Dataset:
    return Dataset.objects.get(prompt=released.prompt, name="golden")


# --- the check ----------------------------------------------------------------------------------


def test_the_gate_check_is_registered_with_releases():
    assert promotion_gates_check in promotion_checks()


def test_without_gates_a_version_is_released(released):
    golden(released.prompt)

    assert release_state(deploy_v3(released)).stable == 3


def test_a_version_without_a_gate_run_is_refused_with_how_to_start_one(released, staging_gate):
    blocked = refused(released)

    assert blocked.gate == "golden-run"
    assert blocked.message == (
        "No gate run of version 3 on 'golden' yet; start one: an eval run of the version over "
        "every case, holdout included."
    )


def test_a_run_of_older_cases_does_not_count(released, staging_gate):
    dataset = dataset_of(released)
    gate_run(dataset, 3)
    dataset.save(update_fields=["updated_at"])  # an import changed the cases since

    blocked = refused(released)

    assert blocked.gate == "golden-run"
    assert "No gate run of version 3 on 'golden' since its cases changed; start one" in (
        blocked.message
    )


def test_a_run_without_the_holdout_does_not_count(released, staging_gate):
    gate_run(dataset_of(released), 3, include_holdout=False)

    assert refused(released).gate == "golden-run"


def test_a_gate_run_of_the_draft_does_not_count_for_the_committed_version(released):
    """A batch renders the version as it is then: a run started on the draft may have scored
    content the author changed before committing, so only runs started after the commit count."""
    golden(released.prompt)
    gate(released.environments["staging"])
    draft = make_version(released.prompt, commit=False)
    before_commit = gate_run(dataset_of(released), draft.number)
    version_commit(version=draft, actor=MANAGER, message="v4")
    deploy = dict(service=services.release_deploy, version=draft.number)
    before = snapshot(released.release("staging"))

    with pytest.raises(PromotionBlocked) as info:
        change(released, **deploy)

    assert snapshot(released.release("staging")) == before
    assert info.value.gate == "golden-run"
    assert info.value.message.startswith(
        "The gate runs of version 4 on 'golden' started before it was committed: they scored "
        "the draft as it was then, not the version; start one: an eval run of the version"
    )
    EvalRun.objects.filter(pk=before_commit.pk).update(created_at=timezone.now())  # as if after
    assert release_state(change(released, **deploy)).stable == 4


def test_a_running_gate_run_is_waited_for(released, staging_gate):
    run = gate_run(dataset_of(released), 3, status=EvalRun.Status.RUNNING)

    blocked = refused(released)

    assert blocked.gate == "golden-run"
    assert f"(run {run.pk}) is still running" in blocked.message


def test_a_failed_gate_run_is_named_with_how_to_start_another(released, staging_gate):
    run = gate_run(dataset_of(released), 3, status=EvalRun.Status.FAILED)

    blocked = refused(released)

    assert blocked.gate == "golden-run"
    assert f"(run {run.pk}) did not finish (failed); start another: an eval run" in (
        blocked.message
    )


def test_a_run_of_another_version_does_not_count(released, staging_gate):
    gate_run(dataset_of(released), 2)

    assert refused(released).gate == "golden-run"


def test_a_pass_rate_below_the_minimum_is_refused_with_the_figures(released, staging_gate):
    promotion_gate_update(gate=staging_gate, min_pass_rate="90", actor=MANAGER)
    run = gate_run(dataset_of(released), 3, failing={"c2"})

    blocked = refused(released)

    assert blocked.gate == "golden-pass-rate"
    assert blocked.message == (
        f"75 % of cases pass in the gate run {run.pk} of version 3 on 'golden' (3 of 4); "
        "the minimum is 90 %."
    )
    assert [f["gate"] for f in blocked.failed] == ["golden-pass-rate"]


def test_a_pass_rate_at_the_minimum_passes(released, staging_gate):
    gate_run(dataset_of(released), 3, failing={"c2"})  # 75 %, the minimum

    assert release_state(deploy_v3(released)).stable == 3


def test_an_unscored_case_counts_as_a_failure(released, staging_gate):
    run = gate_run(dataset_of(released), 3)
    EvalResult.objects.filter(run=run, case_key__in=["c2", "c3"]).delete()

    blocked = refused(released)

    assert blocked.gate == "golden-pass-rate"
    assert "(2 of 4)" in blocked.message


def test_a_failing_must_pass_case_is_refused_whatever_the_pass_rate(released, staging_gate):
    promotion_gate_update(gate=staging_gate, min_pass_rate="0", actor=MANAGER)
    gate_run(dataset_of(released), 3, failing={"c1"})

    blocked = refused(released)

    assert blocked.gate == "golden-must-pass"
    assert "1 must-pass case fails in the gate run" in blocked.message
    assert "c1" in blocked.message


def test_a_must_pass_failure_says_which_cases_regressed_against_stable(released):
    dataset = golden(released.prompt, must_pass=("c1", "c2", "c3"))
    gate(released.environments["staging"], rate="0")
    baseline = gate_run(dataset, 2, failing={"c2"})
    gate_run(dataset, 3, failing={"c1", "c2"}, baseline=baseline)

    blocked = refused(released)

    assert blocked.message.endswith(
        "2 must-pass cases fail in the gate run "
        f"{EvalRun.objects.latest('id').pk} of version 3 on 'golden': c1, c2. "
        "Regressed against the stable version 2: c1."
    )


def test_a_gate_may_leave_must_pass_cases_out(released):
    golden(released.prompt)
    gate(released.environments["staging"], rate="50", must_pass_cases=False)
    gate_run(dataset_of(released), 3, failing={"c1"})

    assert release_state(deploy_v3(released)).stable == 3


def test_every_failed_gate_is_listed_the_first_refuses(released, staging_gate):
    edge = golden(released.prompt, name="edge-cases", must_pass=())
    gate(released.environments["staging"], dataset="edge-cases", rate="100")
    gate_run(dataset_of(released), 3, failing={"c1", "c2", "c3"})
    gate_run(edge, 3)

    blocked = refused(released)

    assert blocked.gate == "golden-pass-rate"
    assert [f["gate"] for f in blocked.failed] == ["golden-pass-rate", "golden-must-pass"]


def test_the_latest_finished_gate_run_counts(released, staging_gate):
    gate_run(dataset_of(released), 3)
    gate_run(dataset_of(released), 3, failing={"c1"})

    assert refused(released).gate == "golden-must-pass"


def test_a_gate_on_every_prompt_skips_prompts_without_that_dataset(released, environments):
    gate(environments["staging"])  # the released prompt has no golden set
    other = PromptFactory()
    make_version(other)
    golden(other)

    assert release_state(deploy_v3(released)).stable == 3
    with pytest.raises(PromotionBlocked):
        services.release_deploy(
            prompt=other, environment=environments["staging"], version=1, actor=MANAGER
        )


def test_a_gate_naming_a_prompt_refuses_it_without_that_dataset(released):
    gate(released.environments["staging"], prompt=released.prompt)

    blocked = refused(released)

    assert blocked.gate == "golden-dataset"
    assert "support.refund-reply has no dataset 'golden'" in blocked.message


def test_a_prompts_own_gate_takes_the_place_of_the_every_prompt_gate(released, staging_gate):
    promotion_gate_update(gate=staging_gate, min_pass_rate="100", actor=MANAGER)
    own = gate(released.environments["staging"], prompt=released.prompt, rate="50")
    gate_run(dataset_of(released), 3, failing={"c2"})
    assert [
        s.gate
        for s in version_gate_status(
            prompt=released.prompt, version=3, environment=released.environments["staging"]
        )
    ] == [own]

    promotion_gate_update(gate=own, enabled=False, actor=MANAGER)  # exempts the prompt

    assert release_state(deploy_v3(released)).stable == 3


def test_disabled_gates_and_other_environments_gates_do_not_apply(released, staging_gate):
    promotion_gate_update(gate=staging_gate, enabled=False, actor=MANAGER)
    gate(released.environments["development"])

    assert release_state(deploy_v3(released)).stable == 3


# --- every change that puts a version in front of traffic -----------------------------------


def test_a_canary_start_is_refused(released, staging_gate):
    with pytest.raises(PromotionBlocked) as info:
        change(released, services.release_canary_start, version=3, percent=Decimal(5))

    assert info.value.gate == "golden-run"
    assert release_state(released.release("staging")).canary is None


def test_an_experiment_start_is_refused_for_its_new_versions(released, staging_gate):
    gate_run(dataset_of(released), 2, failing={"c1"})  # the stable one is not asked

    with pytest.raises(PromotionBlocked) as info:
        change(
            released,
            services.release_experiment_start,
            name="tone",
            variants=[("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))],
        )

    assert info.value.gate == "golden-run"
    assert "version 3" in info.value.message


def test_promoting_a_canary_and_an_experiment_winner_are_gated(released, staging_gate):
    change(
        released,
        services.release_canary_start,
        version=3,
        percent=Decimal(5),
        override_gates=True,
        reason="look at v3 before its run",
    )
    with pytest.raises(PromotionBlocked):
        change(released, services.release_canary_promote)
    change(released, services.release_canary_abort)
    change(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", 2, Decimal(50)), ("brief", 3, Decimal(50))],
        override_gates=True,
        reason="an experiment before the run",
    )

    with pytest.raises(PromotionBlocked):
        change(released, services.release_experiment_stop, winner="brief")

    assert (
        release_state(change(released, services.release_experiment_stop, winner="warm")).stable == 2
    )


def test_a_rollback_is_never_gated(released, staging_gate):
    deploy_v3(released, override_gates=True, reason="hotfix before its gate run")
    gate(released.environments["staging"], dataset="golden", prompt=released.prompt, rate="100")

    release = change(released, services.release_rollback, reason="")  # back to v2, no run of it

    assert release_state(release).stable == 2


# --- overriding ---------------------------------------------------------------------------------


def test_an_override_with_a_reason_releases_and_records_every_failed_gate(released, staging_gate):
    gate_run(dataset_of(released), 3, failing={"c1", "c2", "c3"})

    release = deploy_v3(released, override_gates=True, reason="Legal asked for it today.")

    assert release_state(release).stable == 3
    event = release.events.latest("id")
    assert event.reason == "Legal asked for it today."
    assert [(g["gate"], g["version"]) for g in event.overridden_gates] == [
        ("golden-pass-rate", 3),
        ("golden-must-pass", 3),
    ]
    assert "25 % of cases pass" in event.overridden_gates[0]["detail"]


def test_an_override_without_a_reason_is_refused(released, staging_gate):
    before = snapshot(released.release("staging"))

    with pytest.raises(ReleaseInvalid):
        deploy_v3(released, override_gates=True, reason="  ")

    assert snapshot(released.release("staging")) == before


def test_a_passing_release_records_no_override(released, staging_gate):
    gate_run(dataset_of(released), 3)

    release = deploy_v3(released, override_gates=True, reason="just in case")

    assert release.events.latest("id").overridden_gates is None


# --- a version's status -------------------------------------------------------------------------


def test_the_status_lists_every_applicable_gate_with_its_figures(released, staging_gate):
    golden(released.prompt, name="edge-cases", must_pass=())
    gate(released.environments["staging"], dataset="edge-cases", rate="100")
    run = gate_run(dataset_of(released), 3, failing={"c2"})

    statuses = version_gate_status(
        prompt=released.prompt, version=3, environment=released.environments["staging"]
    )

    by_dataset = {s.gate.dataset_name: s for s in statuses}
    assert by_dataset["golden"].passed
    assert by_dataset["golden"].run == run
    assert by_dataset["golden"].pass_rate == Decimal(75)
    assert [v.gate for v in by_dataset["golden"].verdicts] == [
        "golden-pass-rate",
        "golden-must-pass",
    ]
    assert not by_dataset["edge-cases"].passed
    assert by_dataset["edge-cases"].verdicts[0].gate == "edge-cases-run"


def test_the_status_of_a_missing_version_is_not_found(released, staging_gate):
    with pytest.raises(VersionNotFound):
        version_gate_status(
            prompt=released.prompt, version=9, environment=released.environments["staging"]
        )


# --- the gate services --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"min_pass_rate": "100.5"}, "/min_pass_rate"),
        ({"min_pass_rate": "-1"}, "/min_pass_rate"),
        ({"min_pass_rate": "90.125"}, "/min_pass_rate"),
        ({"min_pass_rate": "NaN"}, "/min_pass_rate"),
        ({"min_pass_rate": "ninety"}, "/min_pass_rate"),
        ({"min_pass_rate": True}, "/min_pass_rate"),
        ({"dataset_name": "Golden Set"}, "/dataset"),
        ({"dataset_name": ""}, "/dataset"),
        ({"prompt_key": "no.such-prompt"}, "/prompt"),
    ],
)
def test_a_gate_with_a_wrong_field_is_refused_and_nothing_stored(environments, fields, pointer):
    values = {"dataset_name": "golden", "min_pass_rate": "90"} | fields

    with pytest.raises(GateInvalid) as info:
        promotion_gate_create(environment=environments["staging"], actor=MANAGER, **values)

    assert [p.pointer for p in info.value.problems] == [pointer]
    assert not PromotionGate.objects.exists()


def test_every_wrong_field_is_reported_at_once(environments):
    with pytest.raises(GateInvalid) as info:
        promotion_gate_create(
            environment=environments["staging"],
            dataset_name="Golden!",
            min_pass_rate="101",
            prompt_key="nope",
            actor=MANAGER,
        )

    assert {p.code for p in info.value.problems} == {
        "invalid_dataset",
        "invalid_pass_rate",
        "unknown_prompt",
    }


def test_a_second_gate_on_the_same_dataset_is_refused(released):
    staging = released.environments["staging"]
    gate(staging)
    gate(staging, prompt=released.prompt)  # a prompt's own gate may sit beside it
    gate(released.environments["production"])

    with pytest.raises(GateExists, match="already"):
        gate(staging, rate="99")
    with pytest.raises(GateExists):
        gate(staging, prompt=released.prompt)
    assert PromotionGate.objects.count() == 3


def test_an_update_changes_only_what_it_is_given_and_refuses_a_duplicate(released):
    staging = released.environments["staging"]
    golden_gate = gate(staging, rate="80")
    edge = gate(staging, dataset="edge-cases")

    changed = promotion_gate_update(gate=golden_gate, min_pass_rate="92.5", actor=MANAGER)
    assert (changed.min_pass_rate, changed.dataset_name, changed.must_pass_cases) == (
        Decimal("92.5"),
        "golden",
        True,
    )
    with pytest.raises(GateExists):
        promotion_gate_update(gate=edge, dataset_name="golden", actor=MANAGER)
    with pytest.raises(GateInvalid):
        promotion_gate_update(gate=edge, min_pass_rate="200", enabled=False, actor=MANAGER)
    edge.refresh_from_db()
    assert (edge.dataset_name, edge.min_pass_rate, edge.enabled) == ("edge-cases", 75, True)


def test_a_deleted_gate_no_longer_applies(released, staging_gate):
    promotion_gate_delete(gate=staging_gate, actor=MANAGER)

    assert not promotion_gate_list(environment=released.environments["staging"]).exists()
    assert release_state(deploy_v3(released)).stable == 3


# --- the admin ----------------------------------------------------------------------------------


def text(response) -> str:
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    return re.sub(r"\s+", " ", body.replace("&nbsp;", " ").replace("&amp;", "&"))


@pytest.fixture
def rita(client: Client) -> Client:
    """In "Release managers": deploys, rolls back, overrides gates, sets gates."""
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(user)
    return client


@pytest.fixture
def dave(db) -> Client:
    """May deploy and roll back releases, but not override a gate."""
    user = UserFactory(username="dave", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="releases",
            codename__in=["view_release", "deploy_release", "rollback_release"],
        )
    )
    client = Client()
    client.force_login(user)
    return client


def deploy_page(release: Release) -> str:
    return reverse("admin:releases_release_deploy", args=[release.pk])


def post_deploy(client: Client, release: Release, **data):
    return client.post(
        deploy_page(release), {"version": 3, "reason": "tests", "revision": release.revision} | data
    )


def test_the_board_shows_every_failed_gate_and_offers_an_override(rita, released, staging_gate):
    edge = golden(released.prompt, name="edge-cases", must_pass=())
    gate(released.environments["staging"], dataset="edge-cases")
    gate_run(edge, 3)
    release = released.release("staging")

    response = post_deploy(rita, release)

    page = text(response)
    assert response.status_code == 200
    assert "(gate: golden-run)" in page
    refusal = re.search(
        r'class="errornote release-errors">(.*?)</div>', response.content.decode(), re.S
    )
    assert "edge-cases" not in refusal.group(1)  # it passes: the gates' table says so
    assert "Release anyway (override the failed gates)" in page
    assert "Release anyway" not in text(rita.get(deploy_page(release)))  # only once refused
    assert release_state(released.release("staging")).stable == 2


def test_a_release_manager_overrides_with_a_reason(rita, released, staging_gate):
    release = released.release("staging")

    response = post_deploy(rita, release, override_gates="on", reason="Ship the legal fix now.")

    assert response.status_code == 302
    event = released.release("staging").events.latest("id")
    assert event.overridden_gates[0]["gate"] == "golden-run"
    timeline = text(rita.get(reverse("admin:releases_release_change", args=[release.pk])))
    assert "Gates overridden: golden-run (version 3)" in timeline


def test_an_override_needs_a_reason_in_the_admin_too(rita, released, staging_gate):
    release = released.release("staging")

    response = post_deploy(rita, release, override_gates="on", reason="")

    assert response.status_code == 200
    assert release_state(released.release("staging")).stable == 2


def test_a_user_without_the_permission_is_never_offered_an_override(dave, released, staging_gate):
    release = released.release("staging")

    page = text(post_deploy(dave, release))
    assert "(gate: golden-run)" in page
    assert "Release anyway" not in page

    forged = post_deploy(dave, release, override_gates="on", reason="let me")
    assert forged.status_code == 403
    assert release_state(released.release("staging")).stable == 2


def test_the_gate_admin_lists_and_adds_gates(rita, released, staging_gate):
    changelist = reverse("admin:evaluations_promotiongate_changelist")
    assert "every prompt with this dataset" in text(
        rita.get(changelist, {"environment__id__exact": staging_gate.environment_id})
    )

    response = rita.post(
        reverse("admin:evaluations_promotiongate_add"),
        {
            "environment": released.environments["production"].pk,
            "prompt": released.prompt.pk,
            "dataset_name": "golden",
            "min_pass_rate": "95",
            "must_pass_cases": "on",
            "enabled": "on",
        },
    )

    assert response.status_code == 302
    added = PromotionGate.objects.get(environment__name="production")
    assert (added.prompt, added.min_pass_rate) == (released.prompt, Decimal(95))
