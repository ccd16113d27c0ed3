"""``manage.py evaluate start|show|resume|cancel``: eval runs from the command line.

- ``start PROMPT VERSION DATASET [--environment E] [--include-holdout] [--wait [--timeout S]]``
- ``show ID``: progress, pass rate against the stable version, and the cases that need a look
- ``resume ID``: queue again the cases of an unfinished run that have no result (after the
  broker lost its queue; a worker restart needs nothing: its batch comes back by itself)
- ``cancel ID``
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from evaluations.evalruns.report import CHANGE_LABELS, CaseChange, eval_run_report
from evaluations.evalruns.services import (
    IN_PROGRESS,
    eval_run_cancel,
    eval_run_get,
    eval_run_resume,
    eval_run_start,
)
from evaluations.models import EvalRun
from registry.actors import Actor
from registry.errors import ProblemsError, RegistryError
from registry.selectors import prompt_get

WAIT_POLL_SECONDS = 2.0
NEEDS_A_LOOK = (CaseChange.REGRESSED, CaseChange.STILL_FAILING, CaseChange.NEW_FAILING)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} %"


class Command(BaseCommand):
    help = "Eval runs: start one, show its report, resume or cancel it."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        start = sub.add_parser("start", help="Run VERSION of PROMPT over its dataset DATASET.")
        start.add_argument("prompt", help="The prompt's key, e.g. support.refund-reply.")
        start.add_argument("version", type=int, help="The version number; a draft too.")
        start.add_argument("dataset", help="The dataset's name, e.g. golden.")
        start.add_argument(
            "--environment",
            help="Whose stable version to compare with (default: EVAL_BASELINE_ENVIRONMENT, "
            "else the highest environment with a stable version).",
        )
        start.add_argument(
            "--include-holdout", action="store_true", help="A gate run: score the holdout too."
        )
        start.add_argument("--wait", action="store_true", help="Wait for the run and report.")
        start.add_argument(
            "--timeout",
            type=float,
            default=3600.0,
            help="With --wait: give up after this many seconds (the run goes on; "
            "`evaluate show ID` reports it later). Default 3600.",
        )
        start.add_argument("--actor", default="command-line", help="Name recorded as starter.")
        for name, text in (
            ("show", "Show a run's report."),
            ("resume", "Queue a run's unscored cases again."),
            ("cancel", "Cancel a run."),
        ):
            command = sub.add_parser(name, help=text)
            command.add_argument("id", type=int)
            command.add_argument("--actor", default="command-line")

    def handle(self, *args, action: str, **options) -> None:
        actor = Actor(label=options["actor"])
        try:
            if action == "start":
                run = eval_run_start(
                    prompt=prompt_get(key=options["prompt"]),
                    version=options["version"],
                    dataset_name=options["dataset"],
                    actor=actor,
                    include_holdout=options["include_holdout"],
                    environment=options["environment"],
                )
                self.stdout.write(f"Eval run {run.pk} started: {run.total_cases} case(s).")
                if options["wait"]:
                    deadline = time.monotonic() + options["timeout"]
                    while eval_run_get(run_id=run.pk).status in IN_PROGRESS:
                        if time.monotonic() > deadline:
                            raise CommandError(
                                f"Eval run {run.pk} has not finished after {options['timeout']:g} "
                                f"s (is a worker running?); `evaluate show {run.pk}` reports it "
                                "later."
                            )
                        time.sleep(WAIT_POLL_SECONDS)
                    self._show(run.pk)
            elif action == "show":
                self._show(options["id"])
            elif action == "resume":
                count = eval_run_resume(run=eval_run_get(run_id=options["id"]), actor=actor)
                self.stdout.write(f"Eval run {options['id']}: {count} case(s) queued again.")
            else:
                run = eval_run_cancel(run=eval_run_get(run_id=options["id"]), actor=actor)
                self.stdout.write(f"Eval run {run.pk} is {run.status}.")
        except RegistryError as exc:
            details = [p.detail for p in exc.problems] if isinstance(exc, ProblemsError) else []
            raise CommandError(" ".join([exc.message, *details])) from exc

    def _show(self, run_id: int) -> None:
        run: EvalRun = eval_run_get(run_id=run_id)
        report = eval_run_report(run)
        figures = report.run
        self.stdout.write(
            f"Eval run {run.pk}: {run.prompt.key} v{figures.version} on {run.dataset.name}, "
            f"{run.status}, {figures.done}/{figures.total} cases, pass rate "
            f"{_percent(figures.pass_rate)}"
        )
        if report.baseline is not None:
            delta = "—" if report.delta_points is None else f"{report.delta_points:+.1f} pp"
            self.stdout.write(
                f"Stable v{report.baseline.version}: {_percent(report.baseline.pass_rate)} "
                f"(difference {delta})"
            )
        counts = [(n, CHANGE_LABELS[CaseChange(c)].lower()) for c, n in report.counts.items() if n]
        self.stdout.write(", ".join(f"{n} {label}" for n, label in counts))
        for row in report.rows:
            if row.change in NEEDS_A_LOOK or (row.must_pass and not row.passed):
                flag = " (must pass)" if row.must_pass else ""
                why = "" if row.detail is None else f": {row.detail}"
                self.stdout.write(f"  {row.change_label}: {row.key}{flag}{why}")
