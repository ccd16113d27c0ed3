"""``manage.py dataset import PROMPT NAME FILE [--format jsonl|csv] [--replace] [--dry-run]``."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluations.datasets.casefiles import case_file_read
from evaluations.datasets.selectors import DatasetNotFound, dataset_get
from evaluations.datasets.services import ImportFormat, dataset_import
from evaluations.models import Dataset
from registry.actors import Actor
from registry.errors import ProblemsError, RegistryError
from registry.selectors import prompt_get

_SUFFIXES = {".jsonl": ImportFormat.JSONL, ".ndjson": ImportFormat.JSONL, ".csv": ImportFormat.CSV}


class Command(BaseCommand):
    help = "Golden datasets: import cases from a JSONL or CSV file."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        load = sub.add_parser(
            "import",
            help="Import FILE's cases into the prompt's dataset NAME (created when missing); "
            "all or nothing.",
        )
        load.add_argument("prompt", help="The prompt's key, e.g. support.refund-reply.")
        load.add_argument("name", help="The dataset's name, e.g. golden.")
        load.add_argument("file", type=Path)
        load.add_argument(
            "--format",
            choices=[f.value for f in ImportFormat],
            help="Default: from the file's extension (.jsonl, .ndjson, .csv).",
        )
        load.add_argument(
            "--replace",
            action="store_true",
            help="The dataset ends up holding exactly FILE's cases (same keys are updated, "
            "others removed).",
        )
        load.add_argument("--dry-run", action="store_true", help="Check and report; store nothing.")
        load.add_argument("--actor", default="import", help="Name recorded as the importer.")

    def handle(self, *args, action: str, **options) -> None:
        path: Path = options["file"]
        kind = options["format"] or _SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise CommandError(f"Cannot tell the format of {path.name}; pass --format jsonl|csv.")
        try:
            with path.open("rb") as file:
                content = case_file_read(file)  # the import refuses a larger file
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        try:
            prompt = prompt_get(key=options["prompt"])
            try:
                dataset = dataset_get(prompt=prompt, name=options["name"])
            except DatasetNotFound:
                dataset = Dataset(prompt=prompt, name=options["name"])  # created by the import
            result = dataset_import(
                dataset=dataset,
                content=content,
                format=kind,
                replace=options["replace"],
                dry_run=options["dry_run"],
                actor=Actor(label=options["actor"]),
            )
        except ProblemsError as exc:
            for problem in exc.problems:
                where = f":{problem.line}" if problem.line else ""
                pointer = f" ({problem.pointer})" if problem.pointer else ""
                self.stderr.write(f"{path}{where}: {problem.detail}{pointer}")
            raise CommandError(f"{exc.message} {len(exc.problems)} problem(s).") from exc
        except RegistryError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(result.describe())
        if result.dry_run:
            self.stdout.write("Dry run: nothing was stored.")
