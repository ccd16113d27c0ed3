"""``manage.py prompts export DIR`` and ``manage.py prompts import DIR [--dry-run]``."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from registry.actors import Actor
from registry.errors import RegistryError
from registry.promptfiles import prompts_export
from registry.sync import Action, SyncInvalid, prompts_import_apply, prompts_import_plan


class Command(BaseCommand):
    help = "Keep prompts as YAML files in a git repository."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Write one YAML file per prompt into DIR.")
        export.add_argument("directory", type=Path)
        load = sub.add_parser("import", help="Create or update prompts from DIR's YAML files.")
        load.add_argument("directory", type=Path)
        load.add_argument("--dry-run", action="store_true", help="Print the plan; change nothing.")
        load.add_argument("--actor", default="import", help="Name recorded as the author.")

    def handle(self, *args, action: str, directory: Path, **options) -> None:
        if action == "export":
            try:
                paths = prompts_export(directory=directory)
            except OSError as exc:
                raise CommandError(f"Cannot write to {directory}: {exc}") from exc
            self.stdout.write(f"Exported {len(paths)} prompt(s) to {directory}.")
            return
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        actor = Actor(label=options["actor"])
        try:
            plan = prompts_import_plan(directory=directory, actor=actor)
        except SyncInvalid as exc:
            for failure in exc.failures:
                for problem in failure.problems:
                    where = f":{problem.line}" if problem.line else ""
                    pointer = f" ({problem.pointer})" if problem.pointer else ""
                    self.stderr.write(f"{failure.path}{where}: {problem.detail}{pointer}")
            raise CommandError(exc.message) from exc
        for item in plan:
            self.stdout.write(item.describe())
        changes = sum(item.action is not Action.UNCHANGED for item in plan)
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {changes} change(s) planned, nothing written.")
            return
        try:
            prompts_import_apply(plan=plan, actor=actor)
        except RegistryError as exc:
            # The registry moved between plan and apply (an author opened a draft, a prompt was
            # created); the apply is one transaction, so nothing was written.
            raise CommandError(f"{exc.message} Nothing was changed; run the import again.") from exc
        self.stdout.write(f"Imported: {changes} change(s).")
