"""Promotion gates: what a version must have shown on its golden sets before it is released.

A ``PromotionGate`` belongs to an environment and names a dataset. For a version to be deployed,
canaried, promoted or made an experiment's variant or winner there, it needs a finished gate run
(holdout included) over the dataset's *current* cases: a run of older cases says nothing about the
cases as they are now. For a committed version the run must have started after the commit: a run
started on the draft scored the draft as it was then, which may not be what was committed. On
that run it must reach the gate's minimum pass rate and, unless the gate says otherwise, pass
every must-pass case. No run, no pass: a gate never assumes.

Each gate is judged as named checks, so a refusal says exactly what failed: ``golden-pass-rate``,
``golden-must-pass``, or, when nothing could be judged, ``golden-run`` (no current gate run) or
``golden-dataset`` (a gate naming a prompt that has no such dataset).

Which gates apply to a prompt: the environment's enabled gates that name it, and those that name
no prompt for each dataset name the prompt has. A prompt's own gate for a dataset name takes the
place of the every-prompt gate of that name, enabled or not, so a release manager can set another
bar for one prompt, or exempt it by disabling its own gate.

``releases`` asks through its protocol (``releases.gates``): ``EvaluationsConfig.ready()``
registers ``promotion_gates_check``. Rollback never asks. The services below change gates; the
selectors read them and a version's status against them, for authors to see what would block.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from enum import Enum
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q, QuerySet

from registry.actors import Actor
from registry.errors import Problem, ProblemsError, RegistryError, VersionNotFound
from registry.models import Prompt, PromptVersion
from releases.gates import GateReport, GateState, GateVerdict
from releases.models import Environment

from ..evalruns.services import IN_PROGRESS
from ..models import DATASET_NAME_MAX, DATASET_NAME_PATTERN, Dataset, EvalResult, EvalRun
from ..models import PromotionGate as Gate

logger = logging.getLogger(__name__)

# How many must-pass case keys a refusal names before it says "and N more".
CASE_KEYS_SHOWN = 10


# --- errors -----------------------------------------------------------------------------------


class GateNotFound(RegistryError):
    message = "There is no such promotion gate in that environment."


class GateExists(RegistryError):
    message = "The environment has a gate on that dataset already."


class GateInvalid(ProblemsError):
    message = "The promotion gate is not valid."


# --- the check --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GateStatus:
    """One gate as a version stands against it: each named check's verdict and the figures."""

    gate: Gate
    verdicts: tuple[GateVerdict, ...]
    run: EvalRun | None = None
    passed_cases: int = 0
    total_cases: int = 0
    failed_must_pass: tuple[str, ...] = ()
    # The failing must-pass cases that passed in the run's baseline (the stable version).
    regressed_must_pass: tuple[str, ...] = ()
    # No run judged and one that would count is queued or running: the gate waits for it.
    pending: EvalRun | None = None

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    @property
    def pass_rate(self) -> Decimal | None:
        if self.run is None or not self.total_cases:
            return None
        return Decimal(self.passed_cases * 100) / Decimal(self.total_cases)


def percent_text(value: Decimal) -> str:
    """``92.5``, ``95``: cut (not rounded) to two decimals, so a rate below a minimum never reads
    as equal to it."""
    cut = value.quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    return format(cut.normalize(), "f") if cut else "0"


def _keys_text(keys: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(keys[:CASE_KEYS_SHOWN])
    more = len(keys) - CASE_KEYS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _applicable(*, prompt_id: int, environment: str) -> list[tuple[Gate, Dataset | None]]:
    """The gates that apply to the prompt in the environment, with the prompt's dataset of each
    gate's name (None only for a gate naming the prompt: it fails for want of one)."""
    gates = list(
        Gate.objects.filter(environment__name=environment)
        .filter(Q(prompt_id=prompt_id) | Q(prompt__isnull=True))
        .select_related("environment", "prompt")
        .order_by("dataset_name", "pk")
    )
    own = {g.dataset_name for g in gates if g.prompt_id is not None}
    gates = [
        g for g in gates if g.enabled and (g.prompt_id is not None or g.dataset_name not in own)
    ]
    if not gates:
        return []
    datasets = {
        d.name: d
        for d in Dataset.objects.filter(
            prompt_id=prompt_id, name__in={g.dataset_name for g in gates}
        )
    }
    return [
        (g, datasets.get(g.dataset_name))
        for g in gates
        if g.prompt_id is not None or g.dataset_name in datasets
    ]


def _start_hint(*, which: str = "one") -> str:
    # Words, not a request: the admin offers a button beside the refusal, the API's docs name the
    # endpoint (docs/gates.md), and the same sentence is read in both (and in the history).
    return f"start {which}: an eval run of the version over every case, holdout included"


def _no_run(
    gate: Gate, *, prompt: Prompt, version: int, dataset: Dataset, committed_at: datetime | None
) -> GateStatus:
    """Why no run can be judged, and what to do about it."""
    runs = EvalRun.objects.filter(
        prompt=prompt, version__number=version, dataset=dataset, include_holdout=True
    )
    current = runs.filter(dataset_updated_at=dataset.updated_at)
    counted = current.filter(created_at__gte=committed_at) if committed_at else current
    # The newest run that could count, if any: it is queued, running, failed or cancelled.
    latest = counted.order_by("-created_at", "-id").first()
    name = dataset.name
    if latest is not None and latest.status in IN_PROGRESS:
        detail = (
            f"The gate run of version {version} on {name!r} (run {latest.pk}) is still "
            f"{latest.status}; release it once the run has finished and passed."
        )
    elif latest is not None:
        detail = (
            f"The gate run of version {version} on {name!r} (run {latest.pk}) did not finish "
            f"({latest.status}); " + _start_hint(which="another") + "."
        )
    elif committed_at and current.filter(status=EvalRun.Status.FINISHED).exists():
        detail = (
            f"The gate runs of version {version} on {name!r} started before it was committed: "
            "they scored the draft as it was then, not the version; " + _start_hint() + "."
        )
    elif runs.filter(status=EvalRun.Status.FINISHED).exists():
        detail = (
            f"No gate run of version {version} on {name!r} since its cases changed; "
            + _start_hint()
            + "."
        )
    else:
        detail = f"No gate run of version {version} on {name!r} yet; " + _start_hint() + "."
    pending = latest if latest is not None and latest.status in IN_PROGRESS else None
    return GateStatus(gate, (GateVerdict(False, f"{name}-run", detail),), pending=pending)


def _judge(
    gate: Gate,
    *,
    prompt: Prompt,
    version: int,
    dataset: Dataset | None,
    committed_at: datetime | None,
) -> GateStatus:
    name = gate.dataset_name
    if dataset is None:
        return GateStatus(
            gate,
            (
                GateVerdict(
                    False,
                    f"{name}-dataset",
                    f"{prompt.key} has no dataset {name!r}, which the "
                    f"{gate.environment.name} gate requires: create it and import its cases.",
                ),
            ),
        )
    # The latest finished gate run over the cases as they are now (holdout included) and, for a
    # committed version, started after the commit: a batch renders the version as it is when it
    # starts, so a run started on the draft may have scored content the commit no longer has.
    runs = EvalRun.objects.filter(
        prompt=prompt,
        version__number=version,
        dataset=dataset,
        include_holdout=True,
        status=EvalRun.Status.FINISHED,
        dataset_updated_at=dataset.updated_at,
    )
    if committed_at is not None:
        runs = runs.filter(created_at__gte=committed_at)
    run = runs.select_related("baseline__version").order_by("-created_at", "-id").first()
    if run is None:
        return _no_run(
            gate, prompt=prompt, version=version, dataset=dataset, committed_at=committed_at
        )
    counts = EvalResult.objects.filter(run=run).aggregate(
        scored=Count("id"), passed=Count("id", filter=Q(passed=True))
    )
    # A case the run did not score is not a pass.
    total, passed = max(run.total_cases, counts["scored"]), counts["passed"]
    verdicts = []
    where = f"run {run.pk} of version {version} on {name!r}"
    if not total:
        verdicts.append(
            GateVerdict(False, f"{name}-pass-rate", f"The gate {where} scored no cases.")
        )
    else:
        rate = Decimal(passed * 100) / Decimal(total)
        figures = (
            f"{percent_text(rate)} % of cases pass in the gate {where} ({passed} of {total}); "
            f"the minimum is {percent_text(gate.min_pass_rate)} %."
        )
        verdicts.append(GateVerdict(rate >= gate.min_pass_rate, f"{name}-pass-rate", figures))
    failing: tuple[str, ...] = ()
    regressed: tuple[str, ...] = ()
    if gate.must_pass_cases:
        failing = tuple(
            EvalResult.objects.filter(run=run, must_pass=True, passed=False)
            .order_by("case_key")
            .values_list("case_key", flat=True)
        )
        if failing and run.baseline_id is not None:
            passed_before = set(
                EvalResult.objects.filter(
                    run_id=run.baseline_id, case_key__in=failing, passed=True
                ).values_list("case_key", flat=True)
            )
            regressed = tuple(k for k in failing if k in passed_before)
        if failing:
            detail = (
                f"{len(failing)} must-pass {'case fails' if len(failing) == 1 else 'cases fail'} "
                f"in the gate {where}: {_keys_text(failing)}."
            )
            if run.baseline_id is not None:
                stable = f"the stable version {run.baseline.version.number}"
                detail += (
                    f" Regressed against {stable}: {_keys_text(regressed)}."
                    if regressed
                    else f" None of them passed in {stable} either."
                )
        else:
            detail = f"Every must-pass case passes in the gate {where}."
        verdicts.append(GateVerdict(not failing, f"{name}-must-pass", detail))
    return GateStatus(
        gate,
        tuple(verdicts),
        run=run,
        passed_cases=passed,
        total_cases=total,
        failed_must_pass=failing,
        regressed_must_pass=regressed,
    )


def _statuses(*, prompt_id: int, environment: str, version: int) -> list[GateStatus]:
    applicable = _applicable(prompt_id=prompt_id, environment=environment)
    if not applicable:
        return []
    prompt = Prompt.objects.only("key").get(pk=prompt_id)
    committed_at = (
        PromptVersion.objects.filter(prompt_id=prompt_id, number=version)
        .values_list("committed_at", flat=True)
        .first()
    )
    return [
        _judge(g, prompt=prompt, version=version, dataset=d, committed_at=committed_at)
        for g, d in applicable
    ]


def promotion_gates_check(*, prompt_id: int, environment: str, version: int) -> list[GateVerdict]:
    """``releases.gates.PromotionCheck``: every named check of every applicable gate. No gates
    configured: nothing to refuse."""
    statuses = _statuses(prompt_id=prompt_id, environment=environment, version=version)
    return [v for status in statuses for v in status.verdicts]


def _report(status: GateStatus, *, version: int) -> GateReport:
    gate = status.gate
    if status.run is not None:
        state = GateState.PASSED if status.passed else GateState.FAILED
    elif status.pending is not None:
        state = GateState.RUNNING
    elif any(v.gate.endswith("-dataset") for v in status.verdicts):
        state = GateState.NO_DATASET
    else:
        state = GateState.NO_RUN
    run = status.run or status.pending
    return GateReport(
        name=gate.dataset_name,
        version=version,
        state=state,
        min_pass_rate=gate.min_pass_rate,
        must_pass_cases=gate.must_pass_cases,
        details=tuple(v.detail for v in status.verdicts),
        pass_rate=status.pass_rate,
        passed_cases=status.passed_cases,
        total_cases=status.total_cases,
        run_id=run.pk if run is not None else None,
        startable=state in (GateState.NO_RUN, GateState.FAILED),
    )


def promotion_gates_report(*, prompt_id: int, environment: str, version: int) -> list[GateReport]:
    """``releases.gates.PromotionGateReader``: every applicable gate, passed or not, as the
    release confirmation pages show it (the same judgement as ``promotion_gates_check``)."""
    statuses = _statuses(prompt_id=prompt_id, environment=environment, version=version)
    return [_report(status, version=version) for status in statuses]


# --- selectors --------------------------------------------------------------------------------


def promotion_gate_list(*, environment: Environment | None = None) -> QuerySet[Gate]:
    """The gates of one environment (or all), every-prompt gates before a prompt's own."""
    gates = Gate.objects.select_related("environment", "prompt").order_by(
        "environment__position", "dataset_name", "prompt__key", "pk"
    )
    return gates.filter(environment=environment) if environment is not None else gates


def promotion_gate_get(*, environment: Environment, gate_id: int) -> Gate:
    try:
        return promotion_gate_list(environment=environment).get(pk=gate_id)
    except Gate.DoesNotExist as exc:
        raise GateNotFound(f"{environment.name} has no promotion gate {gate_id}.") from exc


def version_gate_status(
    *, prompt: Prompt, version: int, environment: Environment
) -> list[GateStatus]:
    """Every gate that applies to the version in the environment, passed or not, with why: what
    deploying it there would run into."""
    if not PromptVersion.objects.filter(prompt=prompt, number=version).exists():
        raise VersionNotFound(f"{prompt.key} has no version {version}.")
    return _statuses(prompt_id=prompt.pk, environment=environment.name, version=version)


# --- services ---------------------------------------------------------------------------------


class _Keep(Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP  # an update leaves a field as it is


def _pass_rate(value: object, problems: list[Problem]) -> Decimal:
    wrong = Problem(
        "invalid_pass_rate",
        "Give the minimum pass rate as a percentage from 0 to 100, at most two decimals.",
        "/min_pass_rate",
    )
    # bool is an int to Python; "true percent" is a caller's mistake, not 1 %.
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        problems.append(wrong)
        return Decimal(0)
    try:
        rate = Decimal(str(value).strip())
    except InvalidOperation:
        problems.append(wrong)
        return Decimal(0)
    if (
        not rate.is_finite()
        or not Decimal(0) <= rate <= Decimal(100)
        or rate != rate.quantize(Decimal("0.01"))
    ):
        problems.append(wrong)
    return rate


def _gate_check(
    gate: Gate, *, prompt_key: str | _Keep | None, min_pass_rate: object, problems: list[Problem]
) -> None:
    """Validates the gate's fields as set on ``gate`` (collecting every problem)."""
    name = gate.dataset_name
    if (
        not isinstance(name, str)
        or len(name) > DATASET_NAME_MAX
        or not re.fullmatch(DATASET_NAME_PATTERN, name)
    ):
        problems.append(
            Problem(
                "invalid_dataset",
                f"Name the dataset as datasets are named: lowercase letters, digits, '.', '-' "
                f"and '_', at most {DATASET_NAME_MAX} characters (e.g. golden).",
                "/dataset",
            )
        )
    if min_pass_rate is not KEEP:
        gate.min_pass_rate = _pass_rate(min_pass_rate, problems)
    for field in ("must_pass_cases", "enabled"):
        if not isinstance(getattr(gate, field), bool):
            problems.append(Problem("invalid_flag", "Give true or false.", f"/{field}"))
    if prompt_key is KEEP:
        return
    if prompt_key is None:
        gate.prompt = None
        return
    prompt = Prompt.objects.filter(key=prompt_key).first() if isinstance(prompt_key, str) else None
    if prompt is None:
        problems.append(
            Problem(
                "unknown_prompt",
                f"There is no prompt with the key {prompt_key!r}; leave it out for a gate on "
                "every prompt.",
                "/prompt",
            )
        )
    else:
        gate.prompt = prompt


def _gate_save(gate: Gate, *, adding: bool) -> Gate:
    scope = f"{gate.prompt.key}'s" if gate.prompt is not None else "the every-prompt"
    exists = GateExists(
        f"{gate.environment.name} has {scope} gate on {gate.dataset_name!r} already; "
        "change that one instead."
    )
    same = Gate.objects.filter(
        environment=gate.environment, prompt=gate.prompt, dataset_name=gate.dataset_name
    )
    if same.exclude(pk=gate.pk).exists():
        raise exists
    try:
        # Two partial unique constraints settle a race between two writers; the loser gets the
        # same error as the check above.
        with transaction.atomic():
            gate.save(force_insert=adding)
    except IntegrityError as exc:
        raise exists from exc
    return gate


@transaction.atomic
def promotion_gate_create(
    *,
    environment: Environment,
    dataset_name: str,
    min_pass_rate: Decimal | int | str,
    actor: Actor,
    prompt_key: str | None = None,
    must_pass_cases: bool = True,
    enabled: bool = True,
) -> Gate:
    """A new gate of ``environment``: on every prompt with a dataset ``dataset_name``, or on the
    prompt ``prompt_key`` alone."""
    gate = Gate(
        environment=environment,
        dataset_name=dataset_name,
        must_pass_cases=must_pass_cases,
        enabled=enabled,
    )
    problems: list[Problem] = []
    _gate_check(gate, prompt_key=prompt_key, min_pass_rate=min_pass_rate, problems=problems)
    if problems:
        raise GateInvalid(problems)
    _gate_save(gate, adding=True)
    logger.info(
        "Promotion gate created: id=%s environment=%s %s actor=%s",
        gate.pk,
        environment.name,
        _describe(gate),
        actor.label,
    )
    return gate


@transaction.atomic
def promotion_gate_update(
    *,
    gate: Gate,
    actor: Actor,
    dataset_name: str | _Keep = KEEP,
    prompt_key: str | _Keep | None = KEEP,
    min_pass_rate: Decimal | int | str | _Keep = KEEP,
    must_pass_cases: bool | _Keep = KEEP,
    enabled: bool | _Keep = KEEP,
) -> Gate:
    """Changes the fields given; the others stay. Nothing changes if any is wrong."""
    # Lock the row: two edits of one gate apply one after the other, never half of each.
    locked = (
        Gate.objects.select_for_update(of=("self",))
        .select_related("environment", "prompt")
        .get(pk=gate.pk)
    )
    changes: dict[str, Any] = {
        "dataset_name": dataset_name,
        "must_pass_cases": must_pass_cases,
        "enabled": enabled,
    }
    for field, value in changes.items():
        if value is not KEEP:
            setattr(locked, field, value)
    problems: list[Problem] = []
    _gate_check(locked, prompt_key=prompt_key, min_pass_rate=min_pass_rate, problems=problems)
    if problems:
        raise GateInvalid(problems)
    _gate_save(locked, adding=False)
    logger.info(
        "Promotion gate changed: id=%s environment=%s %s actor=%s",
        locked.pk,
        locked.environment.name,
        _describe(locked),
        actor.label,
    )
    return locked


@transaction.atomic
def promotion_gate_delete(*, gate: Gate, actor: Actor) -> None:
    logger.info(
        "Promotion gate deleted: id=%s environment=%s %s actor=%s",
        gate.pk,
        gate.environment.name,
        _describe(gate),
        actor.label,
    )
    Gate.objects.filter(pk=gate.pk).delete()


def _describe(gate: Gate) -> str:
    return (
        f"dataset={gate.dataset_name} prompt={gate.prompt.key if gate.prompt else '*'} "
        f"min_pass_rate={gate.min_pass_rate} must_pass_cases={gate.must_pass_cases} "
        f"enabled={gate.enabled}"
    )
