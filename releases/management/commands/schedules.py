"""``manage.py schedules apply``: every due step of every active schedule, now.

The same tick Celery beat runs every minute (``releases.tasks.apply_due_schedules``). Without beat
(``make run``, the embedded default) nothing else applies a scheduled change, so run this. Prints a
line per step; a skipped step goes to stderr and makes the exit status 1 (a script notices).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from releases.models import ScheduledStep
from releases.services.schedule import schedules_apply


class Command(BaseCommand):
    help = "Apply every due scheduled release change now (what Celery beat does every minute)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("apply", help="Apply the steps that are due, in order.")

    def handle(self, *args, action: str, **options) -> None:
        outcomes = schedules_apply()
        skipped = False
        for outcome in outcomes:
            line = f"schedule #{outcome.schedule_id} step {outcome.position}: {outcome.state}"
            if outcome.detail:
                line += f": {outcome.detail}"
            if outcome.state == ScheduledStep.State.APPLIED:
                self.stdout.write(line)
            else:
                skipped = True
                self.stderr.write(line)
        if not outcomes:
            self.stdout.write("No scheduled step is due.")
        if skipped:
            raise SystemExit(1)
