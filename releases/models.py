"""Environments, releases and their audit log.

A ``Release`` is one prompt in one environment: its stable version, an optional canary (version +
weight), an optional experiment (named variants with weights) and optional shadows (versions + a
sample rate), each decision with its own salt. ``revision`` grows by one with every change; writers
send the revision they read (``If-Match``) and a stale one is refused.

A ``ReleaseEvent`` is written by the service for every change, with the full state before and
after, and never changes afterwards: the database refuses its UPDATE and DELETE (migration 0002).
A rollback reads one event's ``before`` and applies it as a new change; history is never rewritten.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from registry.guardrails import guardrails_problems
from registry.models import Prompt, PromptVersion

BASIS_POINTS = 10_000
STATE_SCHEMA_VERSION = 1
# A shadow's own budget of shadow runs per hour; none means the SHADOW_BUDGET_PER_HOUR setting.
# 0 is refused: sampling calls only to run none of them is a stopped shadow with extra steps.
SHADOW_BUDGET_MIN, SHADOW_BUDGET_MAX = 1, 100_000
# ``\Z``, not ``$``: RegexValidator searches, and ``$`` also matches before a final newline, so
# "production\n" would pass. Code that checks a name itself uses ``re.fullmatch``.
ENVIRONMENT_NAME_PATTERN = r"^[a-z][a-z0-9-]*\Z"
RELEASERS_HELP = (
    "Who may change releases in this environment. Leave both lists empty and everyone with the "
    "release permissions (the Release managers group) may; fill either and only these groups' "
    "members and these users may, and they still need the release permissions. Superusers "
    "always may. API keys are limited by their own environments instead."
)


class Environment(models.Model):
    name = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(ENVIRONMENT_NAME_PATTERN, "Lowercase letters, digits and '-'.")],
    )
    position = models.PositiveSmallIntegerField(
        unique=True, help_text="Order of promotion: development before staging before production."
    )
    requires_previous_stable = models.BooleanField(
        default=False,
        help_text="A version must have been stable in the previous environment before it can "
        "be deployed or canaried here.",
    )
    description = models.CharField(max_length=200, blank=True)
    # Who may change releases here (releases.rights): both empty, everyone with the release
    # permissions; otherwise only these groups' members and these users, of those. Superusers
    # always may.
    release_groups = models.ManyToManyField(
        Group,
        blank=True,
        related_name="release_environments",
        verbose_name="groups who may change releases",
        help_text=RELEASERS_HELP,
    )
    release_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="release_environments",
        verbose_name="users who may change releases",
        help_text="Named people, in addition to the groups' members.",
    )
    # Change requests (decision 0048): in an environment that requires review, a change that puts
    # something new in front of traffic is proposed, approved by ``approvals_required`` members
    # of ``review_group`` other than its proposer, then applied. The way back never waits.
    requires_review = models.BooleanField(
        default=False,
        help_text="Release changes here are proposed as change requests and applied once "
        "reviewed; rollback, canary abort and stopping shadows never wait.",
    )
    review_group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who reviews change requests here.",
    )
    approvals_required = models.PositiveSmallIntegerField(
        default=1, help_text="Approvals a change request needs, each by another reviewer."
    )
    change_request_hours = models.PositiveIntegerField(
        default=72, help_text="Hours a change request stays open before it expires."
    )
    # A guardrail floor (registry.guardrails, decision 0052): checks every version served here
    # runs as well as its own, whatever its binding says. Changes apply at once (runs.guardrails).
    guardrails = models.JSONField(
        null=True,
        blank=True,
        help_text='Checks every run here makes besides its version\'s own, e.g. {"input": '
        '{"injection": {"action": "refuse"}}} (docs/guardrails.md).',
    )

    class Meta:
        ordering = ["position"]
        constraints = [
            models.CheckConstraint(
                condition=Q(requires_review=False) | Q(review_group__isnull=False),
                name="environment_review_needs_group",
                violation_error_message="An environment that requires review needs a review group.",
            ),
            models.CheckConstraint(
                condition=Q(approvals_required__gte=1), name="environment_approvals_at_least_one"
            ),
            models.CheckConstraint(
                condition=Q(change_request_hours__gte=1),
                name="environment_change_request_hours_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.guardrails in ("", {}):
            self.guardrails = None
        if self.guardrails is not None:
            problems = guardrails_problems(self.guardrails, pointer="")
            if problems:
                raise ValidationError(
                    {"guardrails": [f"{p.pointer or '/'}: {p.detail}" for p in problems]}
                )


class Release(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="releases")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="releases")
    revision = models.PositiveIntegerField(default=0)

    stable_version = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    canary_version = models.ForeignKey(
        PromptVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    canary_weight = models.PositiveIntegerField(default=0, help_text="Basis points, 0–10000.")
    canary_salt = models.CharField(max_length=200, blank=True)

    # The experiment's variants: [{"name": "A", "version": 7, "weight": 5000}, ...]; version numbers
    # of this prompt (versions are immutable, so a number always means the same content).
    experiment_name = models.CharField(max_length=100, blank=True)
    experiment_variants = models.JSONField(default=list, blank=True)
    experiment_salt = models.CharField(max_length=200, blank=True)
    experiment_planned_calls = models.PositiveIntegerField(
        null=True, blank=True, help_text="Sticky calls the experiment plans to collect."
    )

    shadow_versions = models.JSONField(default=list, blank=True)  # version numbers
    shadow_sample = models.PositiveIntegerField(default=0, help_text="Basis points, 0–10000.")
    shadow_salt = models.CharField(max_length=200, blank=True)
    shadow_budget_per_hour = models.PositiveIntegerField(
        null=True, blank=True, help_text="Shadow runs per hour; empty: the server default."
    )

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment__position", "prompt__key"]
        constraints = [
            models.UniqueConstraint(
                fields=["prompt", "environment"], name="release_unique_prompt_environment"
            ),
            models.CheckConstraint(
                condition=Q(canary_weight__gte=0, canary_weight__lte=BASIS_POINTS),
                name="release_canary_weight_range",
            ),
            models.CheckConstraint(
                condition=Q(shadow_sample__gte=0, shadow_sample__lte=BASIS_POINTS),
                name="release_shadow_sample_range",
            ),
            models.CheckConstraint(
                condition=Q(shadow_budget_per_hour__isnull=True)
                | Q(
                    shadow_budget_per_hour__gte=SHADOW_BUDGET_MIN,
                    shadow_budget_per_hour__lte=SHADOW_BUDGET_MAX,
                ),
                name="release_shadow_budget_range",
            ),
            # A canary is a version and a salt together, or neither.
            models.CheckConstraint(
                condition=Q(canary_version__isnull=True, canary_weight=0, canary_salt="")
                | Q(canary_version__isnull=False) & ~Q(canary_salt=""),
                name="release_canary_complete",
            ),
        ]
        permissions = [
            ("deploy_release", "Can deploy a version and run canaries, experiments, shadows"),
            ("rollback_release", "Can roll a release back"),
            (
                "override_gates",
                "Can release a version that a promotion gate refuses, with a reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prompt.key} @ {self.environment.name}"


class ReleaseEvent(models.Model):
    class Action(models.TextChoices):
        DEPLOY = "deploy", "Deploy"
        CANARY_START = "canary_start", "Canary started"
        CANARY_PERCENT = "canary_percent", "Canary ramped"
        CANARY_PROMOTE = "canary_promote", "Canary promoted"
        CANARY_ABORT = "canary_abort", "Canary aborted"
        EXPERIMENT_START = "experiment_start", "Experiment started"
        EXPERIMENT_STOP = "experiment_stop", "Experiment stopped"
        SHADOW_START = "shadow_start", "Shadow started"
        SHADOW_STOP = "shadow_stop", "Shadow stopped"
        ROLLBACK = "rollback", "Rollback"

    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=20, choices=Action.choices)
    revision = models.PositiveIntegerField(help_text="The release's revision after this change.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150)
    reason = models.TextField(blank=True)
    # Full snapshots (releases.state.ReleaseState.as_dict), so a rollback reads one row and never
    # replays diffs; schema_version says how to read them if the shape ever changes.
    before = models.JSONField()
    after = models.JSONField()
    schema_version = models.PositiveSmallIntegerField(default=STATE_SCHEMA_VERSION)
    # For a rollback: the event whose ``before`` it restored. Every change from that event up to
    # the rollback counts as undone, so the next default rollback walks further back.
    restores = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The gates this change was released past, [{"gate", "detail", "version"}], each failed when
    # it was applied; the event's reason says why a release manager overrode them. Null, not an
    # empty list, when none were: a nullable column is added without rebuilding the table, which
    # on SQLite would drop the append-only triggers.
    overridden_gates = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["release", "revision"], name="release_event_unique_revision"
            ),
            models.CheckConstraint(
                condition=Q(action="rollback", restores__isnull=False)
                | ~Q(action="rollback") & Q(restores__isnull=True),
                name="release_event_rollback_restores",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.release} r{self.revision} {self.action}"


class Schedule(models.Model):
    """Release changes to apply later, in order, by beat (``releases.services.schedule``): one
    deploy at 02:00, or a canary's ramp (10 % now, 25 % in an hour, then promote). A release has
    at most one active schedule. Each step applies only if the release is where the step before
    left it (``revision``); a release moved by anyone else, or a gate that refuses, skips the
    step and stops the rest."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        DONE = "done", "Done"  # every step applied
        CANCELLED = "cancelled", "Cancelled"  # by a release manager
        STOPPED = "stopped", "Stopped"  # a step was skipped: the rest is not applied

    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="schedules")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="schedules")
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    # The release's revision the next step expects: at scheduling time, then after each step.
    revision = models.PositiveIntegerField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_label = models.CharField(max_length=150)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # How it ended: who cancelled it, or which step stopped it and why.
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by_label = models.CharField(max_length=150, blank=True)
    end_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One active schedule per release: two would race each other's revisions.
            models.UniqueConstraint(
                fields=["prompt", "environment"],
                condition=Q(state="active"),
                name="schedule_one_active_per_release",
            ),
        ]

    def __str__(self) -> str:
        return f"schedule #{self.pk} of {self.prompt.key} @ {self.environment.name}"


class ScheduledStep(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        APPLIED = "applied", "Applied"
        SKIPPED = "skipped", "Skipped"  # tried, and refused: the release moved, a gate refused
        CANCELLED = "cancelled", "Cancelled"  # never tried: the schedule was cancelled or stopped

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="From 1, in time order.")
    # The change as ``releases.services.stored.change_stored`` keeps it.
    change = models.JSONField()
    at = models.DateTimeField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    outcome = models.TextField(blank=True, help_text="Why it was skipped or cancelled.")
    release_event = models.ForeignKey(
        ReleaseEvent, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    settled_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was applied, skipped or cancelled."
    )

    class Meta:
        ordering = ["schedule", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "position"], name="scheduled_step_unique_position"
            ),
            models.CheckConstraint(
                condition=Q(state="applied", release_event__isnull=False)
                | ~Q(state="applied") & Q(release_event__isnull=True),
                name="scheduled_step_applied_has_event",
            ),
        ]
        indexes = [models.Index(fields=["state", "at"], name="scheduled_step_due")]

    def __str__(self) -> str:
        return f"step {self.position} of schedule #{self.schedule_id}"


class ChangeRequest(models.Model):
    """A release change proposed for an environment that requires review (decision 0048): the
    change as ``releases.services.stored`` keeps it, the release's revision and state it was
    proposed against, the state it would leave, and what became of it. Approved by reviewers
    (``ChangeRequestReview``), then applied: the release event it produced names it."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        APPLIED = "applied", "Applied"
        WITHDRAWN = "withdrawn", "Withdrawn"
        EXPIRED = "expired", "Expired"

    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="change_requests")
    environment = models.ForeignKey(
        Environment, on_delete=models.PROTECT, related_name="change_requests"
    )
    action = models.CharField(max_length=20, choices=ReleaseEvent.Action.choices)
    change = models.JSONField(help_text="The proposed change (releases.services.stored).")
    reason = models.TextField()
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    proposed_by_label = models.CharField(max_length=200)
    # The release as the proposal saw it: applying requires the release still at this revision,
    # so what reviewers approved is what is applied (0 = never released).
    base_revision = models.PositiveIntegerField()
    before = models.JSONField()
    after = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    closed_by_label = models.CharField(
        max_length=200, blank=True, help_text="Who applied, rejected or withdrew it."
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    release_event = models.OneToOneField(
        ReleaseEvent,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="change_request",
    )
    # A proposed schedule (decision 0049): its steps, each {"at": RFC 3339, "change": stored};
    # empty for a single change. ``action`` and ``change`` are then the first step's (lists and
    # the before/after keep working), ``after`` the state the last step leaves.
    steps = models.JSONField(default=list, blank=True)
    schedule = models.OneToOneField(
        Schedule,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="change_request",
        help_text="The schedule applying it made (a proposed schedule).",
    )

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state", "expires_at"], name="change_request_state_expiry")]
        constraints = [
            # Applied: by a release event (a change) or a schedule (a proposed schedule).
            models.CheckConstraint(
                condition=Q(state="applied")
                & (Q(release_event__isnull=False) | Q(schedule__isnull=False))
                | ~Q(state="applied") & Q(release_event__isnull=True, schedule__isnull=True),
                name="change_request_applied_has_event_or_schedule",
            ),
        ]

    def __str__(self) -> str:
        return f"change request #{self.pk}"

    @property
    def live(self) -> bool:
        """Open or approved, as stored: awaiting a decision or its application."""
        return self.state in (self.State.OPEN, self.State.APPROVED)

    def state_at(self, now: datetime) -> str:
        """The state as of ``now``: an open or approved request past ``expires_at`` is expired,
        whether or not the periodic sweep has marked it yet (releases.tasks)."""
        if self.live and self.expires_at <= now:
            return self.State.EXPIRED
        return self.state


class ChangeRequestReview(models.Model):
    """One reviewer's verdict on a change request, with their comment. Each reviewer gives one."""

    class Verdict(models.TextChoices):
        APPROVE = "approve", "Approved"
        REJECT = "reject", "Rejected"

    change_request = models.ForeignKey(
        ChangeRequest, on_delete=models.PROTECT, related_name="reviews"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewer_label = models.CharField(max_length=200)
    verdict = models.CharField(max_length=10, choices=Verdict.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["change_request", "reviewer"], name="change_request_one_review_each"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reviewer_label} {self.verdict} #{self.change_request_id}"
