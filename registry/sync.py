"""Prompts as YAML files in a git repository: export, and an import that plans before it applies.

One file per prompt, ``<key>.yaml``, holding the prompt's fields and the content of its latest
committed version. Import compares each file's content hash with that version:

- unchanged content creates nothing;
- changed content becomes a new committed version (the file's ``message`` is its commit message);
- an unknown key creates the prompt and its version 1.

Every file is read and validated before anything is written; one bad file stops the whole import,
reported with its path, and the database is left as it was. A prompt with an open draft is refused
too: the import would otherwise commit around an author's work in progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction

from .actors import Actor
from .content import VersionContent, content_check
from .errors import Problem, RegistryError, Severity
from .models import Prompt, PromptVersion
from .selectors import version_content
from .services import prompt_create, prompt_update, version_create

FILE_SUFFIX = ".yaml"
PROMPT_FIELDS = ("key", "description", "default_locale", "tags")
CONTENT_FIELDS = ("variables", "model", "templates")
KNOWN_FIELDS = {*PROMPT_FIELDS, *CONTENT_FIELDS, "message", "version", "content_hash"}


class SyncInvalid(RegistryError):
    """One or more files cannot be imported; nothing was changed."""

    def __init__(self, failures: list[FileFailure]) -> None:
        self.failures = failures
        super().__init__(f"{len(failures)} file(s) cannot be imported; nothing was changed.")


@dataclass(frozen=True, slots=True)
class FileFailure:
    path: Path
    problems: list[Problem]


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"


@dataclass(slots=True)
class PlanItem:
    path: Path
    key: str
    action: Action
    data: dict[str, Any]
    content: VersionContent
    from_version: int | None = None
    prompt_changes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.action is Action.CREATE:
            return f"create {self.key} (version 1) from {self.path.name}"
        if self.action is Action.UPDATE:
            what = []
            if self.from_version is not None:
                what.append(f"version {self.from_version} -> {self.from_version + 1}")
            what += [f"{name} changed" for name in self.prompt_changes]
            return f"update {self.key}: {', '.join(what)}"
        return f"unchanged {self.key} (version {self.from_version})"


def prompt_document(prompt: Prompt, version: PromptVersion) -> dict[str, Any]:
    content = version_content(version)
    return {
        "key": prompt.key,
        "description": prompt.description,
        "default_locale": prompt.default_locale,
        "tags": list(prompt.tags),
        "version": version.number,
        "content_hash": version.content_hash,
        "message": version.message,
        **content.canonical(),
    }


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line template text as YAML block scalars, so diffs in git read like the prompt."""


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def prompts_export(*, directory: Path) -> list[Path]:
    """Writes one file per prompt with a committed version; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    prompts = Prompt.objects.order_by("key")
    latest = {
        v.prompt_id: v
        for v in PromptVersion.objects.filter(status=PromptVersion.Status.COMMITTED)
        .order_by("prompt_id", "number")
        .select_related("prompt")
        .prefetch_related("variables", "templates")
    }
    for prompt in prompts:
        version = latest.get(prompt.pk)
        if version is None:
            continue
        path = directory / f"{prompt.key}{FILE_SUFFIX}"
        text = yaml.dump(
            prompt_document(prompt, version),
            Dumper=_LiteralDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def _read(path: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem("unreadable", f"Cannot read the file: {exc}")]
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        return None, [
            Problem(
                "invalid_yaml",
                f"Not valid YAML: {exc}",
                line=line + 1 if line is not None else None,
            )
        ]
    if not isinstance(data, dict):
        return None, [Problem("invalid_document", "The file must hold a mapping of fields.")]
    problems = [
        Problem("unknown_field", f"Unknown field {name!r}.", f"/{name}")
        for name in data
        if name not in KNOWN_FIELDS
    ]
    for name in ("key", "model", "templates"):
        if name not in data:
            problems.append(
                Problem("missing_field", f"The field {name!r} is required.", f"/{name}")
            )
    shapes = {
        "key": str,
        "description": str,
        "default_locale": str,
        "tags": list,
        "message": str,
        "variables": list,
        "model": dict,
        "templates": dict,
    }
    for name, kind in shapes.items():
        if name in data and not isinstance(data[name], kind):
            problems.append(
                Problem("wrong_type", f"{name!r} must be a {kind.__name__}.", f"/{name}")
            )
    if isinstance(data.get("key"), str) and path.name != f"{data['key']}{FILE_SUFFIX}":
        problems.append(
            Problem(
                "wrong_file_name",
                f"A file for {data['key']!r} must be named {data['key']}.yaml.",
                "/key",
            )
        )
    return (None, problems) if problems else (data, [])


def prompts_import_plan(*, directory: Path) -> list[PlanItem]:
    """Reads and validates every file; raises ``SyncInvalid`` listing every bad one."""
    paths = sorted(directory.glob(f"*{FILE_SUFFIX}"))
    failures: list[FileFailure] = []
    plan: list[PlanItem] = []
    existing = {p.key: p for p in Prompt.objects.all()}
    for path in paths:
        data, problems = _read(path)
        if data is None:
            failures.append(FileFailure(path, problems))
            continue
        key = data["key"]
        prompt = existing.get(key)
        default_locale = prompt.default_locale if prompt else data.get("default_locale", "en")
        content = VersionContent.from_dict(data)
        problems = [
            p
            for p in content_check(
                content,
                default_locale=default_locale,
                max_section_chars=settings.PROMPT_SECTION_MAX_CHARS,
            )
            if p.severity is Severity.ERROR
        ]
        if problems:
            failures.append(FileFailure(path, problems))
            continue
        plan.append(_plan_item(path, data, content, prompt, failures))
    if failures:
        raise SyncInvalid(failures)
    return plan


def _plan_item(
    path: Path,
    data: dict[str, Any],
    content: VersionContent,
    prompt: Prompt | None,
    failures: list[FileFailure],
) -> PlanItem:
    key = data["key"]
    if prompt is None:
        return PlanItem(path, key, Action.CREATE, data, content)
    versions = PromptVersion.objects.filter(prompt=prompt)
    if versions.filter(status=PromptVersion.Status.DRAFT).exists():
        failures.append(
            FileFailure(
                path,
                [
                    Problem(
                        "draft_open",
                        f"{key} has an open draft; commit or discard it before importing.",
                    )
                ],
            )
        )
    latest = versions.filter(status=PromptVersion.Status.COMMITTED).order_by("-number").first()
    changes = [
        name
        for name in ("description", "tags")
        if name in data and data[name] != getattr(prompt, name)
    ]
    if "default_locale" in data and data["default_locale"] != prompt.default_locale:
        failures.append(
            FileFailure(
                path,
                [
                    Problem(
                        "default_locale_fixed",
                        f"{key}'s default locale is {prompt.default_locale}; it cannot change on import.",
                        "/default_locale",
                    )
                ],
            )
        )
    unchanged = latest is not None and latest.content_hash == content.content_hash
    if unchanged and not changes:
        return PlanItem(path, key, Action.UNCHANGED, data, content, latest.number)
    return PlanItem(
        path,
        key,
        Action.UPDATE,
        data,
        content,
        latest.number if latest and not unchanged else None,
        changes,
    )


@transaction.atomic
def prompts_import_apply(*, plan: list[PlanItem], actor: Actor) -> None:
    """Applies a plan in one transaction: all files land, or none."""
    for item in plan:
        message = item.data.get("message") or f"Imported from {item.path.name}."
        if item.action is Action.CREATE:
            prompt = prompt_create(
                key=item.key,
                actor=actor,
                description=item.data.get("description", ""),
                default_locale=item.data.get("default_locale", "en"),
                tags=item.data.get("tags", []),
            )
            version_create(
                prompt=prompt, actor=actor, content=item.content, message=message, commit=True
            )
        elif item.action is Action.UPDATE:
            prompt = Prompt.objects.get(key=item.key)
            if item.prompt_changes:
                prompt_update(
                    prompt=prompt,
                    actor=actor,
                    description=item.data.get("description"),
                    tags=item.data.get("tags"),
                )
            if item.from_version is not None or not prompt.versions.exists():
                version_create(
                    prompt=prompt, actor=actor, content=item.content, message=message, commit=True
                )
