"""Prompts as YAML files in a git repository: export, and an import that plans before it applies.

One file per prompt, ``<key>.yaml``, holding the prompt's fields and the content of its latest
committed version. Import compares each file's content hash with that version:

- unchanged content creates nothing;
- changed content becomes a new committed version (the file's ``message`` is its commit message);
- an unknown key creates the prompt and its version 1.

Every file is read and validated before anything is written (its form, its prompt fields and its
content, as the services check them); one bad file stops the whole import, each problem reported
with the file's path and, where it can be found, the file's line, and the database is left as it
was. A file that changes the content of a prompt with an open draft is refused too: the import
would otherwise commit around an author's work in progress. Locales and tags compare canonically,
so ``FR_ca`` or tags in another order are no change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db import transaction
from django.db.models import Max, OuterRef, Q, Subquery

from .actors import Actor
from .content import (
    VersionContent,
    content_check,
    content_shape_check,
    model_binding_providers_check,
)
from .errors import (
    ContentInvalid,
    LocaleInvalid,
    Problem,
    PromptInvalid,
    RegistryError,
    errors_only,
)
from .locales import locale_normalize
from .models import Prompt, PromptVersion
from .providers import configured_providers
from .selectors import version_content
from .services import prompt_create, prompt_fields_check, prompt_update, version_create
from .snippets import content_snippet_refs
from .yamlfiles import AliasRefused, FileTooLarge, LiteralDumper, NoAliasLoader, NotAFile, read_text

FILE_SUFFIX = ".yaml"
PROMPT_FIELDS = ("key", "description", "default_locale", "tags")
CONTENT_FIELDS = ("variables", "model", "templates")
KNOWN_FIELDS = {
    *PROMPT_FIELDS,
    *CONTENT_FIELDS,
    "message",
    "version",
    "content_hash",
    "snippet",
}


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
    from_version: int | None = None  # the latest committed version, if any
    prompt_changes: list[str] = field(default_factory=list)
    new_version: bool = False  # whether a committed version is created

    def describe(self) -> str:
        if self.action is Action.CREATE:
            return f"create {self.key} (version 1) from {self.path.name}"
        if self.action is Action.UPDATE:
            what = []
            if self.new_version and self.from_version is not None:
                what.append(f"version {self.from_version} -> {self.from_version + 1}")
            elif self.new_version:
                what.append("version 1")
            what += [f"{name} changed" for name in self.prompt_changes]
            return f"update {self.key}: {', '.join(what)}"
        return f"unchanged {self.key} (version {self.from_version})"


def prompt_document(prompt: Prompt, version: PromptVersion) -> dict[str, Any]:
    """A prompt's file. Includes of snippets stay in the templates as written
    (``{{ snippet("brand.voice", version=3) }}``); a snippet's own file says ``snippet: true``."""
    content = version_content(version)
    return {
        "key": prompt.key,
        "description": prompt.description,
        "default_locale": prompt.default_locale,
        "tags": list(prompt.tags),
        **({"snippet": True} if prompt.is_snippet else {}),
        "version": version.number,
        "content_hash": version.content_hash,
        "message": version.message,
        **content.canonical(),
    }


def prompts_export(*, directory: Path) -> list[Path]:
    """Writes one file per prompt with a committed version; returns the paths written.

    Reads each prompt's latest committed version and its rows in three queries, however many
    prompts and versions there are.
    """
    directory.mkdir(parents=True, exist_ok=True)
    latest_number = (
        PromptVersion.objects.filter(
            prompt=OuterRef("prompt"), status=PromptVersion.Status.COMMITTED
        )
        .order_by("-number")
        .values("number")[:1]
    )
    versions = (
        PromptVersion.objects.filter(
            status=PromptVersion.Status.COMMITTED, number=Subquery(latest_number)
        )
        .select_related("prompt")
        .prefetch_related("variables", "templates")
        .order_by("prompt__key")
    )
    written = []
    for version in versions:
        prompt = version.prompt
        path = directory / f"{prompt.key}{FILE_SUFFIX}"
        text = yaml.dump(
            prompt_document(prompt, version),
            Dumper=LiteralDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )
        # Written aside, then renamed: a reader (git, an editor) never sees half a file.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def _yaml_error(exc: yaml.YAMLError) -> Problem:
    """One line saying what is wrong and where: the path comes first in the command's output."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    refused = isinstance(exc, AliasRefused)
    detail = ("Not allowed in a prompt file: " if refused else "Not valid YAML: ") + what
    detail += f" ({context})" if context else ""
    if mark is not None:
        detail += f", column {mark.column + 1}"
    return Problem(
        "yaml_alias" if refused else "invalid_yaml",
        detail,
        line=mark.line + 1 if mark is not None else None,
    )


def _not_json(value: Any, pointer: str) -> list[Problem]:
    """YAML values JSON cannot hold (dates, binary, NaN, non-text keys): the database stores JSON."""
    if isinstance(value, dict):
        problems = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(
                    Problem("wrong_type", f"The key {key!r} must be text.", f"{pointer}/{key}")
                )
            problems += _not_json(item, f"{pointer}/{key}")
        return problems
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _not_json(item, f"{pointer}/{i}")]
    if value is None or isinstance(value, str | bool | int):
        return []
    if isinstance(value, float) and math.isfinite(value):
        return []
    return [
        Problem(
            "wrong_type",
            f"{value!r} is not a JSON value (text, number, true/false, null, list or mapping); "
            "quote it to make it text.",
            pointer,
        )
    ]


def _node_line(root: yaml.Node | None, pointer: str, section_line: int | None) -> int | None:
    """The line of the file a JSON Pointer leads to; for a literal block (``|``) holding a
    template, the line of the template's own ``section_line`` within it."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for raw in [t for t in pointer.split("/")[1:] if t]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, yaml.MappingNode):
            pair = next((p for p in node.value if str(p[0].value) == token), None)
            if pair is None:
                return line
            node, line = pair[1], pair[0].start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and token.isdigit() and int(token) < len(node.value)
        ):
            node = node.value[int(token)]
            line = node.start_mark.line + 1
        else:
            return line
    if isinstance(node, yaml.ScalarNode) and node.style == "|" and section_line is not None:
        return node.start_mark.line + 1 + section_line
    return line


def _located(problems: list[Problem], root: yaml.Node | None) -> list[Problem]:
    """The problems with ``line`` a line of the file (a template problem's own line is within its
    section, and its detail says so)."""
    return [
        replace(p, line=_node_line(root, p.pointer, p.line) if p.pointer else p.line)
        for p in problems
    ]


SHAPES: dict[str, type] = {
    "key": str,
    "description": str,
    "default_locale": str,
    "tags": list,
    "snippet": bool,
    "message": str,
    "variables": list,
    "model": dict,
    "templates": dict,
}


def _read(path: Path) -> tuple[dict[str, Any] | None, yaml.Node | None, list[Problem]]:
    """The file's document and its node tree (for lines), with the problems of its form.

    The document is None when its form stops the check there (not YAML, a missing or mistyped
    field, content of the wrong shape). Otherwise its content is checked next, and an unknown field
    or a wrong file name is reported along with whatever that check finds.
    """
    try:
        loader = NoAliasLoader(read_text(path))
        try:
            # The node tree keeps each value's line; the document is built from it.
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError, NotAFile) as exc:
        return None, None, [Problem("unreadable", f"Cannot read the file: {exc}")]
    except FileTooLarge as exc:
        return None, None, [Problem("file_too_large", str(exc))]
    except yaml.YAMLError as exc:
        return None, None, [_yaml_error(exc)]
    if not isinstance(data, dict):
        return None, root, [Problem("invalid_document", "The file must hold a mapping of fields.")]
    problems = [
        Problem("unknown_field", f"Unknown field {name!r}.", f"/{name}")
        for name in data
        if name not in KNOWN_FIELDS
    ]
    if isinstance(data.get("key"), str) and path.name != f"{data['key']}{FILE_SUFFIX}":
        problems.append(
            Problem(
                "wrong_file_name",
                f"A file for {data['key']!r} must be named {data['key']}.yaml.",
                "/key",
            )
        )
    blocking = [
        Problem("missing_field", f"The field {name!r} is required.", f"/{name}")
        for name in ("key", "model", "templates")
        if name not in data
    ]
    blocking += [
        Problem("wrong_type", f"{name!r} must be a {kind.__name__}.", f"/{name}")
        for name, kind in SHAPES.items()
        if name in data and not isinstance(data[name], kind)
    ]
    if not blocking:
        blocking = content_shape_check(data) + _not_json(data, "")
    if blocking:
        return None, root, problems + blocking
    problems += prompt_fields_check(
        key=data["key"],
        description=data.get("description"),
        default_locale=data.get("default_locale"),
        tags=data.get("tags"),
    )
    return data, root, problems


def _normalized_locale(tag: Any, fallback: str) -> str:
    try:
        return locale_normalize(tag)
    except LocaleInvalid:
        return fallback


@dataclass(frozen=True, slots=True)
class _Existing:
    """What the plan needs to know of a prompt that exists, read in one query for all."""

    prompt: Prompt
    latest_number: int | None
    latest_hash: str | None
    latest_message: str | None
    draft_number: int | None


def _existing_prompts() -> dict[str, _Existing]:
    latest = PromptVersion.objects.filter(
        prompt=OuterRef("pk"), status=PromptVersion.Status.COMMITTED
    ).order_by("-number")
    prompts = Prompt.objects.annotate(
        latest_number=Subquery(latest.values("number")[:1]),
        latest_hash=Subquery(latest.values("content_hash")[:1]),
        latest_message=Subquery(latest.values("message")[:1]),
        draft_number=Max("versions__number", filter=Q(versions__status="draft")),
    )
    return {
        p.key: _Existing(p, p.latest_number, p.latest_hash, p.latest_message, p.draft_number)
        for p in prompts
    }


def prompts_import_plan(*, directory: Path) -> list[PlanItem]:
    """Reads and validates every file; raises ``SyncInvalid`` listing every bad one.

    1. Each file's form: YAML, known fields of the right types, named after its key.
    2. Its prompt fields and content, checked as the services will (every problem at once),
       including providers that are not configured, unless the file's content is exactly the
       latest committed version's (nothing would be written, so nothing is refused).
    3. Against the registry: unchanged, a new committed version, or new prompt fields; a prompt
       whose default locale would change, or with an open draft that a new version would commit
       around, is refused.
    """
    paths = sorted(directory.glob(f"*{FILE_SUFFIX}"))
    failures: list[FileFailure] = []
    plan: list[PlanItem] = []
    existing = _existing_prompts()
    providers = configured_providers()  # once for every file
    for path in paths:
        data, root, problems = _read(path)
        item = None
        if data is not None:
            found = existing.get(data["key"])
            content, content_problems = _content(data, found, providers)
            if any(p.pointer == "/default_locale" for p in problems):
                # The default locale itself is wrong; which template it needs is moot.
                content_problems = [
                    p for p in content_problems if p.code != "missing_default_locale"
                ]
            problems += content_problems
            if not problems:
                item, problems = _plan_item(path, data, content, found)
        if item is None:
            failures.append(FileFailure(path, _located(problems, root)))
        else:
            plan.append(item)
    if failures:
        raise SyncInvalid(failures)
    return plan


def _content(
    data: dict[str, Any], found: _Existing | None, providers: frozenset[str] | None
) -> tuple[VersionContent, list[Problem]]:
    """The file's content, checked as the services will check it, with canonical locales so that
    ``FR_ca`` in a file is the ``fr-CA`` the registry holds.

    Its providers are checked only when the content would become a new version: an unchanged file
    whose provider was removed since writes nothing, and must not stop the rest of the import.
    """
    default_locale = (
        found.prompt.default_locale
        if found
        else _normalized_locale(data.get("default_locale", "en"), "en")
    )
    content = VersionContent.from_dict(data)
    problems = errors_only(
        content_check(
            content,
            default_locale=default_locale,
            max_section_chars=settings.PROMPT_SECTION_MAX_CHARS,
            max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
            max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
        )
    )
    if not problems:
        templates = {locale_normalize(locale): s for locale, s in content.templates.items()}
        content = VersionContent(content.variables, content.model, templates)
    unchanged = not problems and found is not None and found.latest_hash == content.content_hash
    if providers is not None and not unchanged:
        problems += model_binding_providers_check(content.model, configured=providers)
    return content, problems


def _plan_item(
    path: Path, data: dict[str, Any], content: VersionContent, found: _Existing | None
) -> tuple[PlanItem | None, list[Problem]]:
    key = data["key"]
    if found is None:
        return PlanItem(path, key, Action.CREATE, data, content, new_version=True), []
    prompt = found.prompt
    problems = []
    default_locale = _normalized_locale(data.get("default_locale"), "")
    if "default_locale" in data and default_locale != prompt.default_locale:
        problems.append(
            Problem(
                "default_locale_fixed",
                f"{key}'s default locale is {prompt.default_locale}; it cannot change on import.",
                "/default_locale",
            )
        )
    changes = []
    if "description" in data and data["description"] != prompt.description:
        changes.append("description")
    if "tags" in data and sorted(set(data["tags"])) != sorted(set(prompt.tags)):
        changes.append("tags")
    if data.get("snippet", False) != prompt.is_snippet:
        changes.append("snippet")
    new_version = found.latest_hash != content.content_hash
    if new_version and found.draft_number is not None:
        # The new version would be committed around the author's work in progress.
        problems.append(
            Problem(
                "draft_open",
                f"{key} has an open draft (version {found.draft_number}); commit or discard it "
                "before importing a change of its content.",
            )
        )
    exported_from = data.get("version")
    if (
        new_version
        and isinstance(exported_from, int)
        and found.latest_number is not None
        and exported_from < found.latest_number
    ):
        # Someone committed in the registry after this file was exported: importing it would
        # silently drop their version's changes.
        problems.append(
            Problem(
                "stale_file",
                f"{key} is at version {found.latest_number} but this file was exported from "
                f"version {exported_from}; export again and reapply your change (or remove the "
                "file's version field to replace the registry's content on purpose).",
                "/version",
            )
        )
    if problems:
        return None, problems
    if new_version and data.get("message") == found.latest_message:
        # The file still carries the exported version's message; don't reuse it for new content.
        data = {**data, "message": ""}
    if not new_version and not changes:
        return PlanItem(path, key, Action.UNCHANGED, data, content, found.latest_number), []
    return (
        PlanItem(
            path,
            key,
            Action.UPDATE,
            data,
            content,
            found.latest_number,
            changes,
            new_version=new_version,
        ),
        [],
    )


def _apply_order(plan: list[PlanItem]) -> list[PlanItem]:
    """The plan with every snippet before the files that include it (a version's commit checks
    that what it includes exists as a committed snippet). A cycle keeps its files in order: the
    commit refuses it."""
    by_key = {item.key: item for item in plan}
    includes = {
        item.key: {
            key
            for calls in content_snippet_refs(item.content).values()
            for _section, (key, _pinned), _line in calls
            if key in by_key and key != item.key
        }
        for item in plan
    }
    ordered: list[PlanItem] = []
    done: set[str] = set()
    waiting = list(plan)
    while waiting:
        ready = [item for item in waiting if includes[item.key] <= done]
        if not ready:
            ready = waiting[:1]
        for item in ready:
            ordered.append(item)
            done.add(item.key)
            waiting.remove(item)
    return ordered


@transaction.atomic
def prompts_import_apply(*, plan: list[PlanItem], actor: Actor) -> None:
    """Applies a plan in one transaction: all files land, or none. Snippets land before the
    files that include them; a file whose includes the commit refuses (an unknown snippet, a
    missing locale, a cycle) stops the import with its path (``SyncInvalid``)."""
    for item in _apply_order(plan):
        try:
            _apply(item, actor)
        except (ContentInvalid, PromptInvalid) as exc:
            raise SyncInvalid([FileFailure(item.path, exc.problems)]) from exc


def _apply(item: PlanItem, actor: Actor) -> None:
    message = item.data.get("message") or f"Imported from {item.path.name}."
    if item.action is Action.CREATE:
        prompt = prompt_create(
            key=item.key,
            actor=actor,
            description=item.data.get("description", ""),
            default_locale=item.data.get("default_locale", "en"),
            tags=item.data.get("tags", []),
            is_snippet=item.data.get("snippet", False),
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
                is_snippet=item.data.get("snippet", False),
            )
        if item.new_version:
            version_create(
                prompt=prompt, actor=actor, content=item.content, message=message, commit=True
            )
