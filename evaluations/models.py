"""Golden datasets: the cases a prompt version is judged on before it is released.

A ``Case`` is a set of variables to render the prompt with and an expectation a scorer checks the
output against (``evaluations.scorers``). Its ``key`` is stable within its dataset, so an eval run's
report can say which cases regressed against the stable version from one run to the next. A
``holdout`` case is frozen: authors' iteration runs never see it, only gates do, so a prompt cannot
be tuned to pass it.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

from registry.models import Prompt

from .casefiles import CASE_KEY_MAX, CASE_KEY_PATTERN

DATASET_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
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
