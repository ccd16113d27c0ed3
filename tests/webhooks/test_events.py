"""Every event type, delivered signed and in order to a real receiver, for a sequence of actions a
team makes (commit, deploy, canary under analysis with its verdict, promote, rollback, a gate
refusal and its override, an eval run finishing); each subscription gets what its event types
and filters choose, and each payload has the fields docs/webhooks.md documents for its type.

Sends run eagerly after each action's commit (``eager``): the worker's way is tested in
test_worker.py."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from evaluations.canary.services import canary_analysis_look, canary_analysis_start
from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.services import eval_run_start
from registry.actors import Actor
from registry.events import EventType
from releases.errors import PromotionBlocked
from releases.services import (
    CanaryStart,
    Deploy,
    PlannedStep,
    release_canary_promote,
    release_deploy,
    release_rollback,
    schedule_create,
    schedules_apply,
)
from releases.services.change_requests import (
    change_request_apply,
    change_request_propose,
    change_request_review,
)
from runs.anomalies import spend_anomalies_check
from runs.models import Call
from tests.conftest import RELEASED_VARIABLES
from tests.evaluations.evalrun_scene import CASES, jsonl
from tests.factories import PromptFactory, UserFactory, make_version
from webhooks.models import Delivery

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
POLICY = {"steps": [50, 100], "min_minutes": 30, "min_calls": 200, "max_minutes": 120}
V4_INSTRUCTION = "Say hello to {{ customer_name }}."

ALL_IN_ORDER = [
    "version.committed",
    "release.changed",  # v4 deployed to development
    "release.changed",  # v3 canaried in staging, under analysis
    "canary.verdict",  # the analysis' first look: waiting for the minimum sample
    "release.changed",  # the canary promoted
    "release.changed",  # ... and rolled back
    "release.rolled_back",
    "gate.refused",  # v4 to production: never stable in staging
    "release.changed",  # ... again, overriding the gate
    "gate.overridden",
    "release.changed",  # v3 deployed to development by hand, overtaking a scheduled deploy
    "schedule.step_skipped",  # ... which is skipped when due
    "eval_run.finished",
    "change_request.opened",  # production now requires review: alice proposes a canary of v2
    "change_request.decided",  # ... bob approves it
    "release.changed",  # ... alice applies it
    "change_request.decided",  # ... and it is applied
    "spend.anomaly",  # the prompt's spend today is far above its usual ...
    "spend.anomaly",  # ... and so is its model's
]


def documented_examples() -> dict[str, dict]:
    """Each event type's example envelope in docs/webhooks.md: the ```json block under its
    ``### `type` `` heading."""
    text = DOCS.read_text(encoding="utf-8")
    sections = re.findall(r"^### `([a-z_.]+)`\n(.*?)(?=^### |^## |\Z)", text, re.M | re.S)
    examples = {}
    for name, body in sections:
        block = re.search(r"```json\n(.*?)```", body, re.S)
        if block:
            examples[name] = json.loads(block.group(1))
    return examples


@pytest.fixture
def scene(
    released, manager, subscribe, receiver, eager, model_server, django_capture_on_commit_callbacks
):
    """The subscriptions, then the actions, each committed (and its sends run) in turn."""
    prompt, environments = released.prompt, released.environments
    secrets = {
        "/all": subscribe("/all")[1],
        "/staging": subscribe(
            "/staging",
            environment=environments["staging"],
            event_types=["version.committed", "release.changed", "canary.verdict"],
        )[1],
        "/gates": subscribe("/gates", event_types=["gate.refused", "gate.overridden"])[1],
        "/evals": subscribe("/evals", event_types=["eval_run.finished"], prompt=prompt)[1],
        "/other-prompt": subscribe("/other-prompt", prompt=PromptFactory(key="billing.dunning"))[1],
        "/off": subscribe("/off", enabled=False)[1],
    }
    done = django_capture_on_commit_callbacks
    with done(execute=True):
        make_version(
            prompt,
            message="v4: shorter greeting",
            variables=RELEASED_VARIABLES,
            templates={"en": {"system": "Be kind.", "instruction": V4_INSTRUCTION}},
        )
    with done(execute=True):
        release_deploy(
            prompt=prompt, environment=environments["development"], version=4, actor=manager
        )
    with done(execute=True):
        analysis = canary_analysis_start(
            prompt=prompt,
            environment=environments["staging"],
            version=3,
            policy=POLICY,
            actor=manager,
            reason="try v3",
        )
    with done(execute=True):
        canary_analysis_look(analysis_id=analysis.pk, now=timezone.now() + timedelta(minutes=1))
    with done(execute=True):
        release_canary_promote(prompt=prompt, environment=environments["staging"], actor=manager)
    with done(execute=True):
        release_rollback(
            prompt=prompt, environment=environments["staging"], actor=manager, reason="too early"
        )
    with done(execute=True), pytest.raises(PromotionBlocked):
        release_deploy(
            prompt=prompt, environment=environments["production"], version=4, actor=manager
        )
    with done(execute=True):
        release_deploy(
            prompt=prompt,
            environment=environments["production"],
            version=4,
            actor=manager,
            reason="hotfix, staging is down",
            override_gates=True,
        )
    # A deploy scheduled in development, overtaken by a person's deploy: skipped when due.
    soon = timezone.now() + timedelta(hours=1)
    with done(execute=True):
        schedule_create(
            prompt=prompt,
            environment=environments["development"],
            steps=[PlannedStep(at=soon, change=Deploy(version=3))],
            actor=manager,
            reason="v3 at night",
        )
    with done(execute=True):
        release_deploy(
            prompt=prompt, environment=environments["development"], version=3, actor=manager
        )
    with done(execute=True):
        schedules_apply(now=soon)
    dataset = dataset_create(prompt=prompt, name="golden", actor=manager)
    dataset_import(dataset=dataset, content=jsonl(CASES), format="jsonl")
    with done(execute=True):
        eval_run_start(prompt=prompt, version=4, dataset_name="golden", actor=manager)
    production = environments["production"]
    production.requires_review = True
    production.review_group = Group.objects.create(name="Release reviewers")
    production.save()
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    production.review_group.user_set.add(bob)
    Group.objects.get(name="Release managers").user_set.add(alice)  # who may propose, apply
    with done(execute=True):
        request = change_request_propose(
            prompt=prompt,
            environment=production,
            change=CanaryStart(version=2, percent=Decimal(10)),
            actor=Actor.for_user(alice),
            reason="v2 on 10 %",
        )
    with done(execute=True):
        change_request_review(
            change_request_id=request.pk, actor=Actor.for_user(bob), verdict="approve"
        )
    with done(execute=True):
        change_request_apply(change_request_id=request.pk, actor=Actor.for_user(alice))
    for cost in ("25", "0"):  # today's spend, then yesterday's: far above its baseline of nothing
        Call.objects.create(
            request_id=f"spend-{cost}",
            created_at=timezone.now() - timedelta(days=0 if cost != "0" else 1),
            prompt=prompt,
            version=prompt.versions.get(number=4),
            environment=environments["development"],
            status=Call.Status.OK,
            provider="local",
            model="echo-1",
            cost=Decimal(cost),
        )
    with done(execute=True):
        spend_anomalies_check()
    return secrets


def test_every_event_type_is_delivered_signed_and_in_order(scene, receiver):
    everything = receiver.paths("/all")
    assert [r.type for r in everything] == ALL_IN_ORDER
    assert set(ALL_IN_ORDER) == set(EventType.values)
    for request in everything:
        assert request.verified_by(scene["/all"])
        assert not request.verified_by(scene["/staging"])  # each subscription its own secret
        assert request.headers["content-type"] == "application/json"
        assert re.fullmatch(r"msg_[0-9a-f]{32}", request.headers["webhook-id"])
    assert len({r.headers["webhook-id"] for r in everything}) == len(everything)
    assert not Delivery.objects.exclude(status=Delivery.Status.DELIVERED).exists()
    assert set(Delivery.objects.values_list("attempt_count", flat=True)) == {1}


def test_each_subscription_gets_what_its_types_and_filters_choose(scene, receiver):
    assert [r.type for r in receiver.paths("/staging")] == [
        "version.committed",  # belongs to no environment: the filter lets it through
        "release.changed",
        "canary.verdict",
        "release.changed",
        "release.changed",
    ]
    assert {r.json["data"]["environment"] for r in receiver.paths("/staging")[1:]} == {"staging"}
    assert [r.type for r in receiver.paths("/gates")] == ["gate.refused", "gate.overridden"]
    assert [r.type for r in receiver.paths("/evals")] == ["eval_run.finished"]
    assert receiver.paths("/other-prompt") == []
    assert receiver.paths("/off") == []
    for path in ("/staging", "/gates", "/evals"):
        assert all(r.verified_by(scene[path]) for r in receiver.paths(path))
    # One event, one webhook-id, whichever subscription gets it: a receiver can tell.
    first_commit = receiver.paths("/all")[0].headers["webhook-id"]
    assert receiver.paths("/staging")[0].headers["webhook-id"] == first_commit


def test_each_payload_has_its_documented_fields_and_nothing_secret(scene, receiver, settings):
    examples = documented_examples()
    assert set(examples) == set(EventType.values)
    for request in receiver.paths("/all"):
        envelope = request.json
        example = examples[envelope["type"]]
        assert set(envelope) == {"type", "timestamp", "data"} == set(example)
        assert set(envelope["data"]) == set(example["data"]), envelope["type"]
    bodies = b"".join(r.body for r in receiver.received).decode()
    assert "whsec_" not in bodies
    assert settings.SECRET_KEY not in bodies
    for case in CASES:  # the eval run's variable values
        assert case["variables"]["customer_name"] not in bodies
    assert V4_INSTRUCTION not in bodies
    assert "customer_name" not in bodies


def test_the_payloads_say_what_happened(scene, receiver):
    by_type: dict[str, list[dict]] = {}
    for request in receiver.paths("/all"):
        by_type.setdefault(request.type, []).append(request.json["data"])
    committed = by_type["version.committed"][0]
    assert (committed["prompt"], committed["version"], committed["parent_version"]) == (
        "support.refund-reply",
        4,
        3,  # a new draft starts from the latest version
    )
    assert committed["message"] == "v4: shorter greeting"
    assert [c["action"] for c in by_type["release.changed"]] == [
        "deploy",
        "canary_start",
        "canary_promote",
        "rollback",
        "deploy",
        "deploy",
        "canary_start",
    ]
    promote, rollback = by_type["release.changed"][2:4]
    assert rollback["before"] == promote["after"]
    assert rollback["after"] == promote["before"]
    assert by_type["release.rolled_back"] == [rollback]
    assert rollback["restores_event_id"] == promote["event_id"]
    refused = by_type["gate.refused"][0]
    assert (refused["environment"], refused["action"], refused["version"]) == (
        "production",
        "deploy",
        4,
    )
    assert [g["gate"] for g in refused["failed_gates"]] == ["environment-order"]
    overridden = by_type["gate.overridden"][0]
    assert overridden == by_type["release.changed"][4]
    assert overridden["reason"] == "hotfix, staging is down"
    assert [(g["gate"], g["version"]) for g in overridden["overridden_gates"]] == [
        ("environment-order", 4)
    ]
    skipped = by_type["schedule.step_skipped"][0]
    assert (skipped["environment"], skipped["step"], skipped["action"]) == (
        "development",
        1,
        "deploy",
    )
    assert skipped["detail"].startswith("The release moved: revision 1 → 2 by release-manager's")
    verdict = by_type["canary.verdict"][0]
    assert (verdict["outcome"], verdict["step"], verdict["canary_version"]) == ("wait", 1, 3)
    opened, (approved, applied) = (
        by_type["change_request.opened"][0],
        by_type["change_request.decided"],
    )
    assert (opened["state"], opened["proposed_by"], opened["action"]) == (
        "open",
        "alice",
        "canary_start",
    )
    assert opened["arguments"] == {"version": 2, "percent": "10", "override_gates": False}
    assert (approved["state"], approved["decided_by"], approved["approvals"]) == (
        "approved",
        "bob",
        ["bob"],
    )
    assert (applied["state"], applied["decided_by"]) == ("applied", "alice")
    assert applied["release_event_id"] == by_type["release.changed"][6]["event_id"]
    assert by_type["release.changed"][6]["reason"].startswith(
        f"change request #{opened['change_request_id']}"
    )
    finished = by_type["eval_run.finished"][0]
    assert (finished["version"], finished["dataset"], finished["total_cases"]) == (4, "golden", 5)
    assert 0 <= finished["passed_cases"] <= 5
    prompt_spend, model_spend = by_type["spend.anomaly"]
    assert (prompt_spend["subject"], prompt_spend["name"]) == ("prompt", "support.refund-reply")
    assert (model_spend["subject"], model_spend["name"]) == ("model", "local/echo-1")
    assert Decimal(prompt_spend["spend"]) == 25
    assert Decimal(prompt_spend["baseline"]) == 0
