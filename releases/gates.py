"""Promotion checks: how a release asks the evaluations app whether a version may ship.

``releases`` sits below ``evaluations`` and cannot import it. Instead it defines this protocol and
a registry; ``EvaluationsConfig.ready()`` registers its gate check (``evaluations.gates.services``).
Deploy, canary start and promote, experiment start and stop with a winner call every registered
check; rollback never does.

A check answers one verdict, or several: one check may stand for many gates (every promotion gate
of an environment), and a refusal must name each one that failed, not only the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    gate: str = ""
    detail: str = ""


class PromotionCheck(Protocol):
    def __call__(
        self, *, prompt_id: int, environment: str, version: int
    ) -> GateVerdict | Iterable[GateVerdict]: ...


_CHECKS: list[PromotionCheck] = []


def promotion_check_register(check: PromotionCheck) -> None:
    if check not in _CHECKS:
        _CHECKS.append(check)


def promotion_checks() -> tuple[PromotionCheck, ...]:
    return tuple(_CHECKS)


def promotion_check_unregister(check: PromotionCheck) -> None:
    """Removes a check (tests, or an app that turns its gate off)."""
    if check in _CHECKS:
        _CHECKS.remove(check)


def verdicts_of(answer: GateVerdict | Iterable[GateVerdict]) -> tuple[GateVerdict, ...]:
    """A check's answer as a tuple of verdicts, whether it gave one or several."""
    if isinstance(answer, GateVerdict):
        return (answer,)
    return tuple(answer)


# --- what the confirmation pages show -----------------------------------------------------------
#
# The check above answers "may it ship?"; a release manager about to click also wants to see each
# gate, passed or not, with its figures, and to start what is missing. A second small protocol,
# registered the same way: the gates that apply, each as a ``GateReport``.


class GateState(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # a run was judged and fell short (pass rate, must-pass cases)
    RUNNING = "running"  # no judged run yet, one is queued or running
    NO_RUN = "no_run"  # no run counts (none, of older cases, of the draft, failed, cancelled)
    NO_DATASET = "no_dataset"  # the gate names the prompt, the prompt has no such dataset


@dataclass(frozen=True, slots=True)
class GateReport:
    """One gate as a version stands against it, in the words a confirmation page shows."""

    name: str  # the dataset the gate names, e.g. "golden"
    version: int
    state: GateState
    min_pass_rate: Decimal
    must_pass_cases: bool
    details: tuple[str, ...]  # the checks' sentences (what failed, or the figures that passed)
    pass_rate: Decimal | None = None
    passed_cases: int = 0
    total_cases: int = 0
    run_id: int | None = None  # the judged run, or the one queued or running
    # A gate run would settle it: there is a dataset to run and no run under way.
    startable: bool = False


class PromotionGateReader(Protocol):
    def __call__(self, *, prompt_id: int, environment: str, version: int) -> list[GateReport]: ...


_READERS: list[PromotionGateReader] = []


def promotion_gate_reader_register(reader: PromotionGateReader) -> None:
    if reader not in _READERS:
        _READERS.append(reader)


def promotion_gate_reports(*, prompt_id: int, environment: str, version: int) -> list[GateReport]:
    """Every gate that applies to ``version`` in ``environment``, from every registered reader;
    empty when none applies (nothing checks the version before release)."""
    return [
        report
        for reader in _READERS
        for report in reader(prompt_id=prompt_id, environment=environment, version=version)
    ]
