"""``pull``, ``push`` and ``diff``: a folder of prompt files (docs/prompts-as-files.md) against
the registry.

The registry reads, checks and imports the files itself (``GET /prompt-files``,
``POST /prompt-files/plan`` and ``/import``): this module reads the folder and writes files, and
holds no rule of the format. ``push`` sends every file in one request, which the registry plans
and applies in one transaction, so a folder lands whole or not at all (decision 0044).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CliError, ExitCode, ProblemError
from .output import Output
from .registry import Registry

SUFFIX = ".yaml"
# The registry refuses a file over PROMPT_FILE_MAX_BYTES (2 MiB by default) with its name; this
# bound only keeps the command from reading something that cannot be a prompt file into memory.
READ_MAX_BYTES = 16 * 1024 * 1024
# Problems that the registry raises only for a file whose content differs from the latest
# committed version (docs/api.md, "Prompts as files"): for diff, such a file differs.
DIFFERS_CODES = frozenset({"draft_open", "stale_file"})
# A file written with the informational fields carries this top-level line (the exporter's).
_STAMPED = re.compile(r"^content_hash: ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class LocalFile:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.name

    def body(self) -> dict[str, str]:
        return {"name": self.name, "text": self.text}


def local_files(directory: Path) -> list[LocalFile]:
    """The folder's ``*.yaml`` files, in name order; one that cannot be read stops the command
    before anything is sent."""
    if not directory.is_dir():
        raise CliError(f"{directory} is not a directory.")
    files = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        if not path.is_file():  # a FIFO would block its reader; a directory is no file
            raise CliError(f"{path} is not a regular file; nothing was sent.")
        try:
            with path.open("rb") as file:
                raw = file.read(READ_MAX_BYTES + 1)
            if len(raw) > READ_MAX_BYTES:
                raise CliError(f"{path} is larger than {READ_MAX_BYTES:,} bytes; nothing was sent.")
            files.append(LocalFile(path, raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise CliError(f"{path} is not UTF-8 text ({exc.reason}); nothing was sent.") from exc
        except OSError as exc:
            raise CliError(f"Cannot read {path}: {exc.strerror or exc}; nothing was sent.") from exc
    if not files:
        raise CliError(f"{directory} holds no prompt files (*{SUFFIX}).")
    return files


def _write(path: Path, text: str) -> bool:
    """Writes the file unless it holds ``text`` already; aside then renamed, so that a reader
    (git, an editor) never sees half a file. Returns whether it wrote."""
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass  # written again below
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def pull(
    registry: Registry,
    out: Output,
    *,
    directory: Path,
    environment: str | None,
    tag: str | None,
    version_fields: bool,
) -> ExitCode:
    params: dict[str, Any] = {"version_fields": "true" if version_fields else "false"}
    if environment:
        params["environment"] = environment
    if tag:
        params["tag"] = tag
    files = list(registry.pages("/prompt-files", params))
    try:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for file in files:
            name = str(file["name"])
            if Path(name).name != name or not name.endswith(SUFFIX):
                raise CliError(f"The registry sent a file named {name!r}; nothing more written.")
            written.append(_write(directory / name, file["text"]))
    except OSError as exc:
        raise CliError(f"Cannot write to {directory}: {exc.strerror or exc}.") from exc
    rows = [
        {"name": f["name"], "key": f["key"], "version": f["version"], "written": w}
        for f, w in zip(files, written, strict=True)
    ]
    where = f"released in {environment}" if environment else "latest committed"
    lines = [
        f"{'wrote' if r['written'] else 'kept'} {directory / r['name']} (version {r['version']})"
        for r in rows
    ]
    lines.append(
        f"Pulled {len(rows)} prompt(s) ({where}{f', tag {tag}' if tag else ''}); "
        f"{sum(written)} file(s) written."
    )
    out.result({"directory": str(directory), "files": rows}, lines)
    return ExitCode.OK


def push(
    registry: Registry, out: Output, *, directory: Path, dry_run: bool, commit: bool
) -> ExitCode:
    files = local_files(directory)
    body = {"files": [f.body() for f in files], "commit": commit}
    path = "/prompt-files/plan" if dry_run else "/prompt-files/import"
    try:
        plan = registry.post(path, body)
    except ProblemError as exc:
        if exc.type == "/problems/invalid-prompt-files":
            exc.message += f"\nNothing was changed: the {len(files)} file(s) of {directory} are imported together or not at all."
        raise
    lines = [item["summary"] for item in plan["files"]]
    changes = plan["changes"]
    if not changes:
        lines.append("Nothing to do: every file is unchanged.")
    elif dry_run:
        kind = "committed versions" if commit else "drafts"
        lines.append(f"Dry run: {changes} change(s) planned (as {kind}); nothing written.")
    else:
        kind = "committed" if commit else "as drafts"
        lines.append(f"Pushed {changes} change(s), {kind}.")
    out.result(plan, lines)
    return ExitCode.OK


def diff(registry: Registry, out: Output, *, directory: Path) -> ExitCode:
    """Exit 1 when a file's content or prompt fields differ from the registry's latest committed
    version (what ``push --commit`` would change), 0 when none does."""
    files = local_files(directory)
    differing = _differing(registry, files)
    stamped = any(_STAMPED.search(f.text) for f in files)
    params = {"version_fields": "true" if stamped else "false"}
    theirs = {f["name"]: f for f in registry.pages("/prompt-files", params)} if differing else {}
    rows, lines = [], []
    for file in files:
        why = differing.get(file.name)
        if why is None:
            rows.append({"name": file.name, "differs": False})
            continue
        registered = theirs.get(file.name)
        before = registered["text"] if registered else ""
        label = f"registry/{file.name}" + (
            f" (version {registered['version']})" if registered else " (new)"
        )
        text = "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                file.text.splitlines(keepends=True),
                fromfile=label,
                tofile=str(file.path),
            )
        )
        rows.append({"name": file.name, "differs": True, "why": why, "diff": text})
        lines += [f"{file.name}: {why}", text.rstrip("\n")] if text else [f"{file.name}: {why}"]
    count = sum(r["differs"] for r in rows)
    lines.append(
        f"{count} of {len(files)} file(s) differ from the registry."
        if count
        else f"The {len(files)} file(s) match the registry."
    )
    out.result({"differs": bool(count), "files": rows}, lines)
    return ExitCode.REFUSED if count else ExitCode.OK


def _differing(registry: Registry, files: list[LocalFile]) -> dict[str, str]:
    """File name -> what differs, from the registry's plan of committing them.

    A file refused only because its content differs from the latest committed version (someone
    else's open draft, an older export: ``DIFFERS_CODES``) differs; the other files are planned
    again without it. Any other refusal is an error (a bad file): exit 2."""
    body = {"files": [f.body() for f in files], "commit": True}
    try:
        plan = registry.post("/prompt-files/plan", body)
    except ProblemError as exc:
        if exc.type != "/problems/invalid-prompt-files" or not exc.errors:
            raise
        if not all(e.get("code") in DIFFERS_CODES for e in exc.errors):
            raise
        refused = {e["file"]: e["detail"] for e in exc.errors}
        if not refused.keys() & {f.name for f in files}:
            raise
        rest = [f for f in files if f.name not in refused]
        return refused | (_differing(registry, rest) if rest else {})
    return {
        item["name"]: item["summary"] for item in plan["files"] if item["action"] != "unchanged"
    }
