"""Writes of golden datasets (STYLE R1): datasets and their cases.

Imports the registry (prompts, the ``Problem`` vocabulary); nothing below the evaluations app
imports this module. Reading case files is ``evaluations.datasets.casefiles``' job (pure); storing
them, all or nothing, is ``dataset_import``'s.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.db.models import Max

from registry.actors import Actor
from registry.errors import Problem, ProblemsError, RegistryError
from registry.models import Prompt

from ..models import DATASET_NAME_MAX, DATASET_NAME_PATTERN, Case, Dataset
from .casefiles import CaseData, ImportFormat, case_check, cases_parse
from .selectors import dataset_declared_variables

logger = logging.getLogger(__name__)

_DATASET_NAME = re.compile(DATASET_NAME_PATTERN)

__all__ = [
    "CaseData",
    "CaseInvalid",
    "CasesInvalid",
    "DatasetExists",
    "DatasetInvalid",
    "ImportFormat",
    "ImportResult",
    "case_add",
    "case_remove",
    "case_update",
    "case_validate",
    "dataset_create",
    "dataset_import",
    "dataset_update",
]


# --- errors -----------------------------------------------------------------------------------


class DatasetExists(RegistryError):
    message = "The prompt has a dataset with that name already."


class DatasetInvalid(ProblemsError):
    message = "The dataset's fields are not valid."


class CasesInvalid(ProblemsError):
    message = "The cases could not be imported; nothing was stored."


class CaseInvalid(ProblemsError):
    message = "The case was not stored; nothing changed."


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did, or (``dry_run``) would do: keys by outcome, and the parsed cases."""

    dataset: Dataset
    cases: list[CaseData]
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def describe(self) -> str:
        verb = "Would import" if self.dry_run else "Imported"
        return (
            f"{verb} {len(self.cases)} case(s) into {self.dataset}: {len(self.created)} new, "
            f"{len(self.updated)} changed, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed."
        )


# --- datasets ---------------------------------------------------------------------------------


def _dataset_fields_check(*, name: object, description: object) -> list[Problem]:
    problems = []
    if not isinstance(name, str) or not name:
        problems.append(Problem("invalid_name", "A dataset needs a name.", "/name"))
    elif len(name) > DATASET_NAME_MAX or not _DATASET_NAME.fullmatch(name):
        problems.append(
            Problem(
                "invalid_name",
                f"The dataset name {name[:DATASET_NAME_MAX]!r} must be at most "
                f"{DATASET_NAME_MAX} characters of lowercase letters, digits, '.', '-' and '_', "
                "starting with a letter or digit.",
                "/name",
            )
        )
    if not isinstance(description, str):
        problems.append(
            Problem("invalid_description", "The description must be text.", "/description")
        )
    elif "\x00" in description:
        problems.append(
            Problem(
                "nul_character", "Text cannot contain the NUL character (U+0000).", "/description"
            )
        )
    return problems


def _dataset_insert(*, dataset: Dataset, actor: Actor) -> Dataset:
    problems = _dataset_fields_check(name=dataset.name, description=dataset.description)
    if problems:
        raise DatasetInvalid(problems)
    exists = DatasetExists(f"{dataset.prompt.key} has a dataset named {dataset.name!r} already.")
    if Dataset.objects.filter(prompt=dataset.prompt, name=dataset.name).exists():
        raise exists
    dataset.created_by_label = actor.label
    try:
        # The named constraint settles a race between two creators; the loser gets the same error.
        with transaction.atomic():
            dataset.save(force_insert=True)
    except IntegrityError as exc:
        raise exists from exc
    logger.info(
        "Dataset created: prompt=%s dataset=%s actor=%s",
        dataset.prompt.key,
        dataset.name,
        actor.label,
    )
    return dataset


def dataset_create(*, prompt: Prompt, name: str, actor: Actor, description: str = "") -> Dataset:
    return _dataset_insert(
        dataset=Dataset(prompt=prompt, name=name, description=description), actor=actor
    )


def dataset_update(*, dataset: Dataset, actor: Actor, description: str) -> Dataset:
    """Change what a dataset is for. Its prompt and name are fixed: gates name datasets, and eval
    reports compare runs of one dataset."""
    problems = _dataset_fields_check(name=dataset.name, description=description)
    if problems:
        raise DatasetInvalid(problems)
    dataset.description = description
    # Not updated_at: it says when the cases last changed, and an eval run over the cases as they
    # were then stays valid for gates after a description edit.
    dataset.save(update_fields=["description"])
    logger.info("Dataset changed: dataset=%s actor=%s", dataset.pk, actor.label)
    return dataset


# --- one case -----------------------------------------------------------------------------------
#
# A case added, edited or removed in the admin is checked as an imported row is
# (``casefiles.case_check``: one validation path), and changes the dataset as an import does:
# under the dataset's row lock, with ``updated_at`` moved on, so eval runs over the cases as they
# were stop counting for gates. A case's key is fixed once it exists (reports compare results by
# key); its results keep the variables and expectation they were scored on (decision 0021).


def _no_committed_version(prompt: Prompt) -> Problem:
    return Problem(
        "no_committed_version",
        f"{prompt.key} has no committed version yet: cases are checked against the variables "
        "its latest committed version declares.",
    )


def _key_exists(key: str) -> Problem:
    return Problem("key_exists", f"The dataset has a case {key!r} already.", "/key")


def case_validate(
    *, dataset: Dataset, data: dict[str, object], case: Case | None = None
) -> CaseData:
    """``data`` (a case as a JSONL line has it) checked for ``dataset``, as an import checks a
    row, and its key against the dataset's other cases; raises ``CaseInvalid`` with every
    problem. ``case``: the case being edited (its key is kept, whatever ``data`` says)."""
    if case is not None:
        data = {**data, "key": case.key}
    specs = dataset_declared_variables(prompt=dataset.prompt)
    checked, problems = case_check(data=data, specs=specs)
    if specs is None:
        problems.insert(0, _no_committed_version(dataset.prompt))
    if (
        checked is not None
        and case is None
        and Case.objects.filter(dataset=dataset, key=checked.key).exists()
    ):
        problems.append(_key_exists(checked.key))
    if problems or checked is None:
        raise CaseInvalid(problems)
    return checked


def _lock(dataset: Dataset) -> None:
    # Imports and single-case writes into one dataset run one after the other: a key check made
    # before another writer's insert would pass and then collide.
    Dataset.objects.select_for_update().only("pk").get(pk=dataset.pk)


def _locked_case(case: Case) -> Case:
    try:
        return Case.objects.select_for_update().get(pk=case.pk, dataset_id=case.dataset_id)
    except Case.DoesNotExist as exc:
        raise CaseInvalid(
            [Problem("case_removed", f"The case {case.key!r} was removed meanwhile.")]
        ) from exc


@transaction.atomic
def case_add(*, dataset: Dataset, data: dict[str, object], actor: Actor) -> Case:
    """Add one case after the dataset's others; raises ``CaseInvalid`` (nothing stored)."""
    _lock(dataset)
    checked = case_validate(dataset=dataset, data=data)
    top = Case.objects.filter(dataset=dataset).aggregate(top=Max("position"))["top"]
    case = Case(
        dataset=dataset,
        key=checked.key,
        position=0 if top is None else top + 1,
        **checked.fields(),
    )
    try:
        # The lock orders writers of this dataset; the constraint still backs the key check.
        with transaction.atomic():
            case.save(force_insert=True)
    except IntegrityError as exc:
        raise CaseInvalid([_key_exists(checked.key)]) from exc
    dataset.save(update_fields=["updated_at"])
    logger.info("Case added: dataset=%s case=%s actor=%s", dataset.pk, case.pk, actor.label)
    return case


@transaction.atomic
def case_update(*, case: Case, data: dict[str, object], actor: Actor) -> bool:
    """Change one case's variables, expectation, flags and locale (its key is fixed); returns
    whether anything changed. An unchanged save leaves the dataset's ``updated_at`` alone, so
    the gate runs over it still count."""
    dataset = case.dataset
    _lock(dataset)
    # The row as it is now, under the lock: the instance read for the form may be stale.
    case = _locked_case(case)
    checked = case_validate(dataset=dataset, data=data, case=case)
    fields = checked.fields()
    if all(getattr(case, name) == value for name, value in fields.items()):
        return False
    for name, value in fields.items():
        setattr(case, name, value)
    case.save(update_fields=[*fields, "updated_at"])
    dataset.save(update_fields=["updated_at"])
    logger.info("Case changed: dataset=%s case=%s actor=%s", dataset.pk, case.pk, actor.label)
    return True


@transaction.atomic
def case_remove(*, case: Case, actor: Actor) -> None:
    """Remove one case. Its eval results stay, with its key and what they were scored on."""
    dataset = case.dataset
    _lock(dataset)
    case = _locked_case(case)
    pk = case.pk
    case.delete()
    dataset.save(update_fields=["updated_at"])
    logger.info("Case removed: dataset=%s case=%s actor=%s", dataset.pk, pk, actor.label)


# --- import: applying -------------------------------------------------------------------------


def dataset_import(
    *,
    dataset: Dataset,
    content: str | bytes,
    format: ImportFormat | str,
    replace: bool = False,
    dry_run: bool = False,
    actor: Actor | None = None,
) -> ImportResult:
    """Import a JSONL or CSV case file into ``dataset``: all of it, or nothing.

    1. Parse and check every row (size caps first, then each row against the variables the
       prompt's latest committed version declares, the expectation, flags and locale), listing
       every problem with its line and a pointer; any problem raises ``CasesInvalid``.
    2. Lock the dataset, so two imports into it run one after the other and the key check below
       sees the other's cases.
    3. Without ``replace``, the cases are added after the existing ones, and a key the dataset
       has already is a problem. With ``replace``, the dataset ends up holding exactly the file's
       cases: a key it had keeps its row (and its id, which results may point at) and takes the
       file's fields, keys absent from the file are removed.
    4. ``dry_run`` stops before writing and returns what would happen. An unsaved ``dataset`` is
       created in the same transaction (a dry run leaves it unsaved).
    """
    actor = actor or Actor.system("import")
    specs = dataset_declared_variables(prompt=dataset.prompt)
    cases, problems = cases_parse(content=content, format=format, specs=specs)
    if specs is None:
        problems.insert(0, _no_committed_version(dataset.prompt))
    if problems:
        raise CasesInvalid(problems)

    with transaction.atomic():
        if dataset.pk is None:
            if dry_run:
                problems = _dataset_fields_check(name=dataset.name, description=dataset.description)
                if problems:
                    raise DatasetInvalid(problems)
                return ImportResult(
                    dataset=dataset, cases=cases, created=[c.key for c in cases], dry_run=True
                )
            _dataset_insert(dataset=dataset, actor=actor)
        else:
            # Two imports into one dataset would each see the other's keys as absent and then
            # collide on the constraint (or, with replace, remove each other's new cases).
            Dataset.objects.select_for_update().only("pk").get(pk=dataset.pk)
        existing = {case.key: case for case in Case.objects.filter(dataset=dataset)}
        if not replace:
            clashes = [
                Problem(
                    "key_exists",
                    f"The dataset has a case {case.key!r} already; import with replace to "
                    "update it.",
                    "/key",
                    line=case.line,
                )
                for case in cases
                if case.key in existing
            ]
            if clashes:
                raise CasesInvalid(clashes)

        created, updated, unchanged = [], [], []
        to_create, to_update = [], []
        start = 0
        if not replace:
            top = Case.objects.filter(dataset=dataset).aggregate(top=Max("position"))["top"]
            start = 0 if top is None else top + 1
        for offset, data in enumerate(cases):
            position = start + offset
            row = existing.get(data.key)
            if row is None:
                created.append(data.key)
                to_create.append(
                    Case(dataset=dataset, key=data.key, position=position, **data.fields())
                )
                continue
            if all(getattr(row, name) == value for name, value in data.fields().items()):
                unchanged.append(data.key)
            else:
                updated.append(data.key)
            for name, value in data.fields().items():
                setattr(row, name, value)
            row.position = position
            to_update.append(row)
        keys = {case.key for case in cases}
        removed = [key for key in existing if key not in keys] if replace else []
        result = ImportResult(
            dataset=dataset,
            cases=cases,
            created=created,
            updated=updated,
            unchanged=unchanged,
            removed=removed,
            dry_run=dry_run,
        )
        if dry_run:
            return result

        if removed:
            Case.objects.filter(dataset=dataset, key__in=removed).delete()
        if to_update:
            Case.objects.bulk_update(
                to_update,
                ["variables", "expectation", "holdout", "must_pass", "locale", "position"],
                batch_size=500,
            )
        try:
            # The lock above orders imports into this dataset; the constraint still backs the
            # key check against any other writer (the admin's inline).
            with transaction.atomic():
                Case.objects.bulk_create(to_create, batch_size=500)
        except IntegrityError as exc:
            raise CasesInvalid(
                [
                    Problem(
                        "key_exists",
                        "A case with one of these keys was added meanwhile; import again.",
                    )
                ]
            ) from exc
        dataset.save(update_fields=["updated_at"])
    logger.info(
        "Cases imported: dataset=%s created=%d updated=%d removed=%d actor=%s",
        dataset.pk,
        len(created),
        len(updated),
        len(removed),
        actor.label,
    )
    return result
