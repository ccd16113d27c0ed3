"""Model providers and their prices.

A provider is an OpenAI or OpenAI-compatible server (vLLM, TGI, Ollama, the local fake) reached by
``base_url``. Its credentials never live here: ``api_key_env`` names the environment variable that
holds the key, read at call time. Calls, shadow runs and outcomes arrive with the rest of issue 4.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

PROVIDER_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"  # the same rule as a binding's provider
ENV_VAR_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"


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
