"""Reads of golden datasets (STYLE R1, R16): datasets and their cases.

Imports the registry; never ``api``.
"""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from registry.errors import RegistryError
from registry.models import Prompt, PromptVersion, Variable
from registry.variables import VariableSpec, VariableType

from ..models import Case, Dataset


class DatasetNotFound(RegistryError):
    message = "The prompt has no dataset with that name."


def dataset_list(*, prompt: Prompt | None = None) -> QuerySet[Dataset]:
    """Datasets with their case counts, in one query whatever their number."""
    qs = Dataset.objects.select_related("prompt").annotate(
        case_count=Count("cases"),
        holdout_count=Count("cases", filter=Q(cases__holdout=True)),
        must_pass_count=Count("cases", filter=Q(cases__must_pass=True)),
    )
    if prompt is not None:
        qs = qs.filter(prompt=prompt)
    return qs.order_by("prompt__key", "name")


def dataset_get(*, prompt: Prompt, name: str) -> Dataset:
    try:
        return Dataset.objects.select_related("prompt").get(prompt=prompt, name=name)
    except Dataset.DoesNotExist as exc:
        raise DatasetNotFound(f"{prompt.key} has no dataset named {name!r}.") from exc


def dataset_cases(dataset: Dataset, *, include_holdout: bool) -> QuerySet[Case]:
    """The dataset's cases in file order. Authors' iteration runs pass ``include_holdout=False``:
    a holdout case they could see is one they could tune the prompt to pass. Gates pass True."""
    qs = Case.objects.filter(dataset=dataset)
    if not include_holdout:
        qs = qs.filter(holdout=False)
    return qs.order_by("position", "pk")


def prompt_cases(*, prompt: Prompt, include_holdout: bool) -> QuerySet[Case]:
    """The cases of every dataset of the prompt, by dataset name, then in file order (what the
    playground offers to start from); holdout cases only with ``include_holdout``."""
    qs = Case.objects.filter(dataset__prompt=prompt).select_related("dataset")
    if not include_holdout:
        qs = qs.filter(holdout=False)
    return qs.order_by("dataset__name", "position", "pk")


def dataset_declared_variables(*, prompt: Prompt) -> tuple[VariableSpec, ...] | None:
    """The variables the prompt's latest committed version declares (None: nothing committed).

    Cases are checked against these: a draft is work in progress, and the gates judge committed
    versions. Two queries.
    """
    latest = (
        PromptVersion.objects.filter(prompt=prompt, status=PromptVersion.Status.COMMITTED)
        .order_by("-number")
        .values_list("pk", flat=True)
        .first()
    )
    if latest is None:
        return None
    return tuple(
        VariableSpec(
            name=v.name,
            type=VariableType(v.type),
            required=v.required,
            default=v.default,
            description=v.description,
            after=v.after or None,
        )
        for v in Variable.objects.filter(version_id=latest).order_by("position")
    )
