"""Golden datasets: the cases a prompt version is judged on before it is released.

A ``Case`` is a set of variables to render the prompt with and an expectation a scorer checks the
output against (``evaluations.scoring.scorers``). Its ``key`` is stable within its dataset, so an
eval run's report can say which cases regressed against the stable version from one run to the next.
A ``holdout`` case is frozen: authors' iteration runs never see it, only gates do, so a prompt
cannot be tuned to pass it.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from registry.models import Prompt

from .datasets.casefiles import CASE_KEY_MAX, CASE_KEY_PATTERN

# ``\Z``, not ``$``: ``$`` also matches before a final newline (RegexValidator searches).
DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*\Z"
DATASET_NAME_MAX = 100


class Dataset(models.Model):
    """A prompt's named set of cases (``golden``, ``edge-cases``)."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(
        max_length=DATASET_NAME_MAX,
        validators=[
            RegexValidator(DATASET_NAME_PATTERN, "Use lowercase letters, digits, '.', '-' and '_'.")
        ],
        help_text="Unique per prompt; gates name datasets by it, e.g. golden.",
    )
    description = models.TextField(blank=True)
    created_by_label = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["prompt", "name"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "name"], name="dataset_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.prompt.key} / {self.name}"


class Case(models.Model):
    """One golden case: variables in, an expectation on what comes out."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="cases")
    key = models.CharField(
        max_length=CASE_KEY_MAX,
        validators=[
            RegexValidator(
                CASE_KEY_PATTERN,
                "Start with a letter or digit; use letters, digits, '.', '_', ':' and '-'.",
            )
        ],
        help_text="Stable within the dataset, so reports can say which cases regressed.",
    )
    # The order of the file it came from, so the admin and reports list cases as authors wrote them.
    position = models.PositiveIntegerField(default=0)
    variables = models.JSONField(default=dict, blank=True)
    expectation = models.JSONField(
        default=dict,
        help_text='A scorer expectation, e.g. {"scorer": "contains", "value": "refund"}.',
    )
    holdout = models.BooleanField(
        default=False,
        help_text="Frozen: never shown to authors' iteration runs, used by promotion gates only.",
    )
    must_pass = models.BooleanField(
        default=False,
        help_text="A gate refuses a version that fails this case, whatever its pass rate.",
    )
    locale = models.CharField(
        max_length=35, blank=True, help_text="BCP 47 tag to render with; empty: the default locale."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["dataset", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["dataset", "key"], name="case_unique_key"),
        ]
        indexes = [models.Index(fields=["dataset", "position"], name="case_dataset_position")]

    def __str__(self) -> str:
        return self.key


class EvalRun(models.Model):
    """One version of a prompt run over one dataset's cases, scored case by case.

    Runs are done by Celery tasks in batches of cases; every scored case is an ``EvalResult``
    unique per run and case key, so a batch redelivered after a worker restart skips what is
    already scored and progress is simply results / ``total_cases``. ``baseline`` is the run of
    the stable version over the same cases that the report compares against.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="eval_runs")
    # A committed version is never deleted; a discarded draft takes its runs with it, since they
    # judged content that no longer exists.
    version = models.ForeignKey(
        "registry.PromptVersion", on_delete=models.CASCADE, related_name="eval_runs"
    )
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="runs")
    include_holdout = models.BooleanField(
        default=False, help_text="Gate runs score the frozen holdout too; authors' runs never do."
    )
    environment = models.ForeignKey(
        "releases.Environment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Whose stable version is the baseline.",
    )
    baseline = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    total_cases = models.PositiveIntegerField(default=0)
    # The dataset as the run saw it: a later import makes the run stale for gates.
    dataset_updated_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by_label = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["version", "dataset", "-created_at"], name="evalrun_version_recent"
            )
        ]

    def __str__(self) -> str:
        return f"Eval run {self.pk} ({self.status})"


class EvalResult(models.Model):
    """One case of one eval run: the output and its score."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    # The key, not only the row: a re-import may delete the case, the report still names it.
    case = models.ForeignKey(
        Case, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    case_key = models.CharField(max_length=CASE_KEY_MAX)
    must_pass = models.BooleanField(default=False)
    holdout = models.BooleanField(default=False)
    # The case as it was scored: cases are edited in place (the admin, an import with replace),
    # and a report must show the variables and expectation this output was judged on, not the
    # case's current ones (docs/decisions/0021). None: the case was gone before it was scored.
    variables = models.JSONField(null=True, blank=True)
    expectation = models.JSONField(null=True, blank=True)
    passed = models.BooleanField()
    score = models.FloatField(null=True, blank=True)
    detail = models.TextField(blank=True)
    output = models.TextField(blank=True)
    error_class = models.CharField(max_length=100, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    # The guardrail checks of the version's policy that fired on this case, as a run records
    # them on its call (runs.guardrails, decision 0052): each {stage, check, action, source,
    # detail}. What a ``guardrails`` scorer judges.
    guardrails = models.JSONField(
        default=list, blank=True, help_text="The guardrail checks that fired on this case."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "case_key"], name="evalresult_unique_case"),
        ]

    def __str__(self) -> str:
        return f"{self.case_key}: {'pass' if self.passed else 'fail'}"


class PromotionGate(models.Model):
    """A condition a version must meet before it is deployed or canaried in an environment.

    The version needs a finished gate run (holdout included) over the named dataset's current
    cases with at least ``min_pass_rate`` percent passing and, with ``must_pass_cases``, every
    must-pass case passing. A gate without a prompt applies to every prompt that has a dataset of
    that name; a gate naming a prompt also refuses when the prompt has no such dataset.
    """

    environment = models.ForeignKey(
        "releases.Environment", on_delete=models.CASCADE, related_name="promotion_gates"
    )
    prompt = models.ForeignKey(
        Prompt,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="promotion_gates",
        help_text="Empty: every prompt that has a dataset of this name.",
    )
    dataset_name = models.CharField(max_length=DATASET_NAME_MAX)
    min_pass_rate = models.DecimalField(
        max_digits=5, decimal_places=2, help_text="Percent of cases that must pass, 0–100."
    )
    must_pass_cases = models.BooleanField(
        default=True, help_text="Refuse a version that fails any must-pass case."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment", "dataset_name", "pk"]
        constraints = [
            # One gate per dataset name for a prompt, and one for every prompt (two partial
            # constraints: SQLite has no NULLS NOT DISTINCT).
            models.UniqueConstraint(
                fields=["environment", "prompt", "dataset_name"],
                condition=models.Q(prompt__isnull=False),
                name="gate_unique_prompt_dataset",
            ),
            models.UniqueConstraint(
                fields=["environment", "dataset_name"],
                condition=models.Q(prompt__isnull=True),
                name="gate_unique_dataset",
            ),
            models.CheckConstraint(
                condition=models.Q(min_pass_rate__gte=0, min_pass_rate__lte=100),
                name="gate_pass_rate_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.environment} / {self.dataset_name} ≥ {self.min_pass_rate} %"


class CanaryAnalysis(models.Model):
    """The policy a canary is judged by, and where it stands.

    Celery beat looks at every running analysis (``evaluations.tasks``); a worker holds the row
    lock while it judges one, so two workers never analyse the same canary at once. ``policy`` is
    the validated policy document (``evaluations.canary.services``). The canary is identified by its
    salt: a new canary of the same release is a new analysis.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        HELD = "held", "Held for a person"
        PROMOTED = "promoted", "Promoted"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ENDED = "ended", "Ended (the canary changed by hand)"

    release = models.ForeignKey(
        "releases.Release", on_delete=models.CASCADE, related_name="canary_analyses"
    )
    canary_version = models.PositiveIntegerField()
    canary_salt = models.CharField(max_length=200)
    policy = models.JSONField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    step = models.PositiveSmallIntegerField(default=0, help_text="Index into the policy's steps.")
    step_started_at = models.DateTimeField()
    unmeasured_looks = models.PositiveSmallIntegerField(
        default=0,
        help_text="Looks in a row that could not measure; past the policy's retries: hold.",
    )
    last_looked_at = models.DateTimeField(null=True, blank=True)
    hold_reason = models.TextField(blank=True)
    created_by_label = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["release", "canary_salt"], name="canary_analysis_unique_canary"
            ),
        ]
        verbose_name_plural = "canary analyses"

    def __str__(self) -> str:
        # No status: a message made of it ("...: stopped") would say the old one.
        return f"Canary analysis of v{self.canary_version}"


class CanaryVerdict(models.Model):
    """One look at a canary: the outcome and every figure it was decided on. Append-only."""

    class Outcome(models.TextChoices):
        WAIT = "wait", "Waiting for the minimum sample"
        PASS = "pass", "Passed: advanced"
        PROMOTE = "promote", "Passed the last step: promoted"
        FAILED = "failed", "Failed: rolled back"
        UNMEASURED = "unmeasured", "Could not measure"
        INCONCLUSIVE = "inconclusive", "Inconclusive: held for a person"

    analysis = models.ForeignKey(CanaryAnalysis, on_delete=models.CASCADE, related_name="verdicts")
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    step = models.PositiveSmallIntegerField()
    percent = models.DecimalField(max_digits=5, decimal_places=2)
    summary = models.TextField()
    figures = models.JSONField(default=dict)
    release_event = models.ForeignKey(
        "releases.ReleaseEvent", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_outcome_display()} (step {self.step + 1})"
