"""Model providers and their prices.

A provider is an OpenAI or OpenAI-compatible server (vLLM, TGI, Ollama, the local fake) reached by
``base_url``. Its credentials never live here: ``api_key_env`` names the environment variable that
holds the key, read at call time.

A ``Call`` is one served or executed call, whether the registry ran it (``run``), a service that
called the model itself reported it (``reported``, through the events endpoint), or an author ran
it in the admin's playground (``playground``: never release traffic, so left out of every release
metric, decision 0036). Its inputs and
outputs are stored redacted and its subject only as a keyed hash. A ``ShadowRun`` is a shadowed
version's answer to the same inputs, and how it compares with the live answer.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from registry.models import Prompt, PromptVersion
from releases.models import Environment, Release
from runs.egress import provider_refusals

# ``\Z``, not ``$``: ``$`` also matches before a final newline (RegexValidator searches).
PROVIDER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}\Z"  # the same rule as a binding's provider
ENV_VAR_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}\Z"


class Provider(models.Model):
    name = models.CharField(
        max_length=63,
        unique=True,
        validators=[
            RegexValidator(PROVIDER_NAME_PATTERN, "Lowercase letters, digits, '.', '_', '-'.")
        ],
        help_text="What model bindings name, e.g. openai or local.",
    )
    base_url = models.URLField(max_length=300, help_text="e.g. https://api.openai.com/v1")
    api_key_env = models.CharField(
        max_length=128,
        blank=True,
        validators=[
            RegexValidator(ENV_VAR_PATTERN, "An environment variable name, e.g. OPENAI_API_KEY.")
        ],
        help_text="The environment variable holding the API key; empty for servers without keys.",
    )
    timeout_seconds = models.FloatField(
        default=30.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(600)],
        help_text="Per attempt.",
    )
    max_retries = models.PositiveSmallIntegerField(
        default=2,
        validators=[MaxValueValidator(10)],
        help_text="Retries on 429, 5xx and timeouts, with backoff and jitter, before a fallback.",
    )
    enabled = models.BooleanField(default=True)
    # OpenAI's structured outputs: ``response_format`` ``json_schema`` with ``strict: true``
    # (OpenAI, and vLLM, Ollama and the fake among compatible servers, accept it). Off, a response
    # schema is sent non-strict, as before; the answer is validated, and repaired, either way.
    strict_output = models.BooleanField(
        default=True,
        verbose_name="strict structured output",
        help_text="Send a response schema as response_format json_schema with strict: true "
        "(OpenAI structured outputs). Turn off for a server that refuses strict schemas.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(timeout_seconds__gte=0.1, timeout_seconds__lte=600),
                name="provider_timeout_range",
            ),
            models.CheckConstraint(condition=Q(max_retries__lte=10), name="provider_retries_range"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        # The outbound policy (runs.egress), at save time: every writer (the command, the admin,
        # provider_save) runs full_clean. Calls check again, resolving the host.
        refusals = provider_refusals(
            base_url=self.base_url or "", api_key_env=self.api_key_env or "", resolve=False
        )
        if refusals:
            raise ValidationError(refusals)


class ModelPrice(models.Model):
    """What a model costs, per million tokens, for the cost of each call."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="prices")
    model = models.CharField(max_length=200)
    input_per_million = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_million = models.DecimalField(max_digits=12, decimal_places=6)

    class Meta:
        ordering = ["provider", "model"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "model"], name="price_unique_model"),
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0, output_per_million__gte=0),
                name="price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider.name}/{self.model}"


class Call(models.Model):
    class Source(models.TextChoices):
        RUN = "run", "Run by the registry"
        REPORTED = "reported", "Reported by a service"
        PLAYGROUND = "playground", "Run in the playground"

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        # A guardrail refused it (decision 0052): before the model call (input) or its answer.
        REFUSED = "refused"

    class CacheKind(models.TextChoices):
        NONE = "", "Answered by the model"
        EXACT = "exact", "Exact cache hit"
        SEMANTIC = "semantic", "Semantic cache hit"

    # The caller's request id (X-Request-Id) or one drawn for it: what support asks for.
    request_id = models.CharField(max_length=100, db_index=True)
    # Reported outcomes: the service's own id for the event, the key of idempotent ingestion.
    event_id = models.CharField(max_length=100, null=True, blank=True, unique=True)
    source = models.CharField(
        max_length=10, choices=Source.choices
    )  # "playground", 10, the longest
    created_at = models.DateTimeField(db_index=True)
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="calls")
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="calls")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="calls")
    variant = models.CharField(max_length=64, blank=True, help_text="stable, canary or a variant.")
    sticky = models.BooleanField(
        default=False, help_text="The caller sent a subject; only sticky calls count in A/B tests."
    )
    release_revision = models.PositiveIntegerField(null=True, blank=True)
    locale = models.CharField(max_length=35, blank=True)
    subject_hash = models.CharField(
        max_length=64, blank=True, help_text="A keyed hash of the subject, never the subject."
    )
    provider = models.CharField(max_length=63, blank=True)
    model = models.CharField(max_length=200, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    time_to_first_token_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(
        max_digits=14,
        decimal_places=8,
        null=True,
        blank=True,
        help_text="In the price table's currency.",
    )
    status = models.CharField(max_length=10, choices=Status.choices)
    error_class = models.CharField(max_length=100, blank=True)
    feedback = models.FloatField(
        null=True, blank=True, help_text="From -1 (bad) to 1 (good), as the service reports it."
    )
    schema_valid = models.BooleanField(
        null=True, blank=True, help_text="Whether the output matched the response schema, if any."
    )
    inputs = models.JSONField(default=dict, blank=True, help_text="The variables, redacted.")
    # What a caller of the OpenAI-compatible endpoints sent beside the variables (decision 0042).
    conversation = models.JSONField(
        default=list,
        blank=True,
        help_text="The messages the caller appended after the prompt's own, redacted.",
    )
    output = models.TextField(blank=True, help_text="The answer, redacted.")
    tool_calls = models.JSONField(
        default=list,
        blank=True,
        help_text="The tools the model called: id, name and arguments, redacted like the output.",
    )
    attempts = models.JSONField(default=list, blank=True, help_text="Every model call tried.")
    # Answered from the response cache (decision 0050): no model call, no tokens, no cost; left
    # out of latency comparisons (canary analysis, A/B results).
    cache = models.CharField(max_length=8, choices=CacheKind.choices, blank=True, default="")
    cache_similarity = models.FloatField(
        null=True, blank=True, help_text="A semantic hit's similarity; 1 for an exact hit."
    )
    cache_skipped = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Why the semantic cache was skipped and the model asked (its provider failed, "
        "Redis was out of reach); empty otherwise.",
    )
    # False when no model answered: a response cache hit, or a run an input guardrail refused or
    # answered with its fallback. Latency, cost and tokens compare model calls only (canary
    # analysis, A/B results): those would read as instant and free.
    model_called = models.BooleanField(
        default=True, help_text="Whether a model was called for this call."
    )
    # The guardrail checks that fired (runs.guardrails, decision 0052): each {stage, check,
    # action, source, detail}; the detail never holds the text that matched.
    guardrails = models.JSONField(
        default=list, blank=True, help_text="The guardrail checks that fired on this call."
    )
    # Who vouches for a reported call and for feedback: the API key's id and name when it was sent.
    # Plain values, not a foreign key: runs sits below api (which owns ApiKey), and a revoked or
    # deleted key must not take its reports' provenance with it. A canary analysis counts a report
    # or a feedback only when its policy trusts the key (evaluations.canary.policy, decision 0017).
    reported_by_key_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="The API key that reported this call (reported calls)."
    )
    reported_by_key_label = models.CharField(max_length=150, blank=True)
    feedback_key_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="The API key that sent the feedback."
    )
    feedback_key_label = models.CharField(max_length=150, blank=True)
    # Who ran a call through the run API (``run``): what a key's budget counts (runs.budgets).
    # Plain values for the reason the reporting key's are.
    run_by_key_id = models.PositiveIntegerField(
        null=True, blank=True, help_text="The API key that ran this call (run calls)."
    )
    run_by_key_label = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # A playground run is a paid model call an author starts by hand: its own permission
        # (decision 0036), granted to prompt authors by migration 0007.
        permissions = [("run_playground", "Can run prompts in the playground")]
        indexes = [
            models.Index(
                fields=["prompt", "environment", "-created_at"], name="call_prompt_recent"
            ),
            models.Index(fields=["version", "-created_at"], name="call_version_recent"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(feedback__isnull=True) | Q(feedback__gte=-1, feedback__lte=1),
                name="call_feedback_range",
            ),
            models.CheckConstraint(
                condition=Q(latency_ms__isnull=True) | Q(latency_ms__gte=0),
                name="call_latency_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(cost__isnull=True) | Q(cost__gte=0), name="call_cost_not_negative"
            ),
        ]

    def __str__(self) -> str:
        # Ids only, no names: a list of calls must not load a prompt per row to print itself.
        return f"Call {self.request_id} ({self.status})"


class ShadowRun(models.Model):
    """A shadowed version's answer to a live call's inputs, compared with the live answer.

    ``kind`` says why it ran: a candidate (a version the release shadows), or the noise floor (the
    version that answered live, run again on the same inputs), so a report can say whether the
    candidate differs from live more than live differs from itself.
    """

    class Kind(models.TextChoices):
        CANDIDATE = "candidate"
        NOISE = "noise", "Noise floor"

    class Status(models.TextChoices):
        PENDING = "pending"
        OK = "ok"
        ERROR = "error"
        OVER_BUDGET = "over_budget", "Skipped: over the hourly budget"

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="shadow_runs")
    release = models.ForeignKey(Release, on_delete=models.PROTECT, related_name="shadow_runs")
    version = models.ForeignKey(PromptVersion, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    provider = models.CharField(max_length=63, blank=True)
    model = models.CharField(max_length=200, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    error_class = models.CharField(max_length=100, blank=True)
    output = models.TextField(blank=True, help_text="The answer, redacted.")
    exact_match = models.BooleanField(null=True, blank=True)
    similarity = models.FloatField(null=True, blank=True, help_text="0 (unlike) to 1 (identical).")
    structure_diff = models.JSONField(
        null=True, blank=True, help_text="For schema outputs: the paths that differ."
    )
    attempts = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["release", "-created_at"], name="shadow_release_recent"),
        ]
        constraints = [
            # One run per live call, version and kind: a task delivered twice (late
            # acknowledgement after a worker restart) finds its row and does not run again.
            models.UniqueConstraint(
                fields=["call", "version", "kind"], name="shadow_once_per_call_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} v{self.version_id} for call {self.call_id}: {self.status}"


BUDGET_LIMITS = (
    "requests_per_minute",
    "tokens_per_day",
    "cost_per_day",
    "tokens_per_month",
    "cost_per_month",
)


def _positive(name: str) -> Q:
    return Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__gt": 0})


class Budget(models.Model):
    """Limits on what the run API may spend for one API key, one prompt or one environment
    (exactly one of the three): requests per minute, and tokens and cost per UTC day and month.
    Enforced before the model call (runs.budgets); resolve and render are never limited by it.

    A limit is positive or absent: a zero is refused, since "nothing allowed" is what disabling
    the key or releasing nothing already says, and says it where people look (decision 0051)."""

    LIMITS = BUDGET_LIMITS

    # Plain values, not a foreign key: runs sits below api, which owns ApiKey (as reported_by_key).
    api_key_id = models.PositiveIntegerField(
        null=True, blank=True, unique=True, help_text="The API key this budget limits (its id)."
    )
    prompt = models.OneToOneField(
        Prompt, null=True, blank=True, on_delete=models.CASCADE, related_name="budget"
    )
    environment = models.OneToOneField(
        Environment, null=True, blank=True, on_delete=models.CASCADE, related_name="budget"
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    cost_per_day = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    cost_per_month = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    enabled = models.BooleanField(default=True)
    note = models.CharField(max_length=200, blank=True, help_text="Why this budget, for whom.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(api_key_id__isnull=False, prompt__isnull=True, environment__isnull=True)
                    | Q(api_key_id__isnull=True, prompt__isnull=False, environment__isnull=True)
                    | Q(api_key_id__isnull=True, prompt__isnull=True, environment__isnull=False)
                ),
                name="budget_one_scope",
            ),
            *(
                models.CheckConstraint(condition=_positive(name), name=f"budget_{name}_positive")
                for name in BUDGET_LIMITS
            ),
        ]

    def __str__(self) -> str:
        return f"Budget of {self.scope_label}"

    @property
    def scope(self) -> str:
        """``key``, ``prompt`` or ``environment``."""
        if self.api_key_id is not None:
            return "key"
        return "prompt" if self.prompt_id is not None else "environment"

    @property
    def scope_id(self) -> int:
        return self.api_key_id or self.prompt_id or self.environment_id  # type: ignore[return-value]

    @property
    def scope_label(self) -> str:
        if self.scope == "key":
            return f"API key #{self.api_key_id}"
        if self.scope == "prompt":
            return f"prompt {self.prompt.key}" if self.prompt_id else "a prompt"
        return f"environment {self.environment.name}" if self.environment_id else "an environment"

    def clean(self) -> None:
        super().clean()
        scopes = [self.api_key_id is not None, self.prompt_id is not None]
        scopes.append(self.environment_id is not None)
        if sum(scopes) != 1:
            raise ValidationError("A budget limits exactly one API key, prompt or environment.")
        zeros = [name for name in self.LIMITS if getattr(self, name) is not None]
        zeros = [name for name in zeros if getattr(self, name) <= 0]
        if zeros:
            raise ValidationError(
                {
                    name: "A limit is positive, or empty for none. To allow nothing, revoke or "
                    "disable the API key, or release nothing to the environment, instead."
                    for name in zeros
                }
            )
        if all(getattr(self, name) is None for name in self.LIMITS):
            raise ValidationError("Set at least one limit.")


class SpendAnomaly(models.Model):
    """A prompt's or a model's spend today far outside its trailing baseline, found by the
    ``runs.check_spend`` beat task (runs.anomalies): the admin's notice, kept for the record."""

    class Subject(models.TextChoices):
        PROMPT = "prompt", "prompt"
        MODEL = "model", "model"

    subject = models.CharField(max_length=10, choices=Subject.choices)
    name = models.CharField(max_length=270, help_text="The prompt's key, or provider/model.")
    day = models.DateField(help_text="The UTC day whose spend was outside its baseline.")
    spend = models.DecimalField(max_digits=14, decimal_places=6)
    baseline = models.DecimalField(max_digits=14, decimal_places=6)
    found_at = models.DateTimeField()

    class Meta:
        ordering = ["-found_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "name", "day"], name="spend_anomaly_daily")
        ]

    def __str__(self) -> str:
        return f"{self.subject} {self.name}: {self.spend} on {self.day}"
