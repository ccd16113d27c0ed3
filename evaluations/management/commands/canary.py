"""``manage.py canary look [--release-id N]``: one look at running canary analyses, now.

The same look Celery beat runs every minute (``evaluations.canary.services``). Without beat (``make
run``, the embedded default) nothing else judges a canary, so run this, or press "Look now" on the
analysis's admin page. A look may ramp, promote or roll back the canary, as the policy says.
Without ``--release-id`` every running analysis is looked at, each on its own. Prints one line per
look; a rollback or a refused look goes to stderr and makes the exit status 1 (a script notices).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from evaluations.canary.services import Look, canary_analysis_look
from evaluations.models import CanaryAnalysis, CanaryVerdict
from registry.errors import RegistryError
from releases.models import Release


class Command(BaseCommand):
    help = "Look at running canary analyses now (what Celery beat does every minute)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        look = sub.add_parser("look", help="One look at every running analysis, or one release's.")
        look.add_argument(
            "--release-id",
            type=int,
            help="Only the running analysis of this release (its id, as in the admin).",
        )

    def handle(self, *args, action: str, release_id: int | None = None, **options) -> None:
        running = CanaryAnalysis.objects.filter(status=CanaryAnalysis.Status.RUNNING)
        if release_id is not None:
            if not Release.objects.filter(pk=release_id).exists():
                raise CommandError(f"No release with id {release_id}.")
            running = running.filter(release_id=release_id)
            if not running.exists():
                raise CommandError(
                    f"Release {release_id} has no running canary analysis (held or stopped ones "
                    "are resumed from the admin or the API first)."
                )
        failed = False
        analyses = running.select_related("release__prompt", "release__environment").order_by("id")
        for analysis in analyses:
            where = f"{analysis.release.prompt.key} @ {analysis.release.environment.name}, "
            try:
                result = canary_analysis_look(analysis_id=analysis.pk)
            except RegistryError as exc:  # one refused release does not stop the others
                failed = True
                self.stderr.write(f"{where}analysis {analysis.pk}: refused: {exc.message}")
                continue
            line = f"{where}analysis {analysis.pk}: {self._text(result, analysis)}"
            if result.outcome == CanaryVerdict.Outcome.FAILED:
                failed = True
                self.stderr.write(line)
            else:
                self.stdout.write(line)
        if not analyses:
            self.stdout.write("No running canary analysis.")
        if failed:
            raise CommandError("A canary was rolled back, or a look was refused.", returncode=1)

    def _text(self, result: Look, analysis: CanaryAnalysis) -> str:
        if result.outcome == "skipped":
            return "skipped (another look holds it, or the release changed during the look)."
        if result.outcome == "ended":
            analysis.refresh_from_db(fields=["hold_reason"])
            return f"ended: {analysis.hold_reason}"
        if result.verdict is None:
            return "still waiting for the step's minimum sample."
        return f"{result.outcome}: {result.verdict.summary}"
