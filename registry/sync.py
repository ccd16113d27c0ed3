"""Prompts as YAML files in a git repository: export, and an import that plans before it applies.

One file per prompt, ``<key>.yaml`` (``registry.promptfiles``), holding the prompt's fields and
the content of a committed version. Import compares each file's content hash with the prompt's
latest committed version:

- unchanged content creates nothing;
- changed content becomes a new committed version (the file's ``message`` is its commit
  message), or, imported as drafts (``commit=False``, what ``promptregistry push`` does by
  default), the prompt's draft;
- an unknown key creates the prompt and its version 1 (or draft 1).

Drafts belong to whoever last wrote them. An import writes only into a draft it wrote itself
(the same API key or user): it replaces that draft's content, or commits it. Someone else's open
draft is never overwritten, nor committed around: a file whose content differs from it is
refused. (A draft that already holds exactly the file's content is that content: a draft import
leaves it alone.)

Every file is read and validated before anything is written (its form, its prompt fields and its
content, as the services check them); one bad file stops the whole import, each problem reported
with the file's path and, where it can be found, the file's line, and the database is left as it
was. Locales and tags compare canonically, so ``FR_ca`` or tags in another order are no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery

from .actors import Actor
from .content import (
    VersionContent,
    content_check,
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
from .promptfiles import (
    PromptFile,
    located,
    prompt_file_parse,
    prompt_files_read,
)
from .providers import configured_providers
from .services import (
    prompt_create,
    prompt_update,
    version_commit,
    version_create,
    version_draft_update,
)
from .snippets import content_snippet_refs


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


class VersionChange(StrEnum):
    """What an import does to a prompt's versions for one file."""

    NONE = "none"
    COMMIT = "commit"  # a new committed version
    OPEN_DRAFT = "open_draft"  # a new draft
    REPLACE_DRAFT = "replace_draft"  # the importer's own draft takes the file's content
    COMMIT_DRAFT = "commit_draft"  # the importer's own draft, holding the file's content, commits
    REPLACE_AND_COMMIT_DRAFT = "replace_and_commit_draft"

    @property
    def commits(self) -> bool:
        return self in {self.COMMIT, self.COMMIT_DRAFT, self.REPLACE_AND_COMMIT_DRAFT}


@dataclass(slots=True)
class PlanItem:
    path: Path
    key: str
    action: Action
    data: dict[str, Any]
    content: VersionContent
    from_version: int | None = None  # the latest committed version, if any
    prompt_changes: list[str] = field(default_factory=list)
    change: VersionChange = VersionChange.NONE
    # The version that holds the file's content once the plan is applied (for a new version, the
    # number it is expected to get; applying sets the number it got).
    version: int | None = None
    # The open draft the change replaces or commits, as read: applying refuses it if it changed.
    draft: PromptVersion | None = None

    @property
    def new_version(self) -> bool:
        return self.change is not VersionChange.NONE

    @property
    def committed(self) -> bool:
        """Whether ``version`` is (or will be) a committed version rather than a draft."""
        return self.change.commits or (self.change is VersionChange.NONE and self.draft is None)

    def describe(self) -> str:
        kind = "version" if self.committed else "draft"
        if self.action is Action.CREATE:
            return f"create {self.key} ({kind} 1) from {self.path.name}"
        if self.action is Action.UNCHANGED:
            return f"unchanged {self.key} ({kind} {self.version})"
        what = [self._version_text()] if self.new_version else []
        what += [f"{name} changed" for name in self.prompt_changes]
        return f"update {self.key}: {', '.join(what)}"

    def _version_text(self) -> str:
        n = self.version
        match self.change:
            case VersionChange.COMMIT if self.from_version is not None:
                return f"version {self.from_version} -> {n}"
            case VersionChange.COMMIT:
                return f"version {n}"
            case VersionChange.OPEN_DRAFT if self.from_version is not None:
                return f"draft {n} (from version {self.from_version})"
            case VersionChange.REPLACE_DRAFT:
                return f"draft {n} replaced"
            case VersionChange.COMMIT_DRAFT:
                return f"draft {n} committed"
            case VersionChange.REPLACE_AND_COMMIT_DRAFT:
                return f"draft {n} replaced and committed"
        return f"draft {n}"


def _normalized_locale(tag: Any, fallback: str) -> str:
    try:
        return locale_normalize(tag)
    except LocaleInvalid:
        return fallback


@dataclass(frozen=True, slots=True)
class _Existing:
    """What the plan needs to know of a prompt that exists, read in two queries for all."""

    prompt: Prompt
    latest_number: int | None
    latest_hash: str | None
    latest_message: str | None
    draft: PromptVersion | None


def _existing_prompts(keys: set[str]) -> dict[str, _Existing]:
    latest = PromptVersion.objects.filter(
        prompt=OuterRef("pk"), status=PromptVersion.Status.COMMITTED
    ).order_by("-number")
    prompts = Prompt.objects.filter(key__in=keys).annotate(
        latest_number=Subquery(latest.values("number")[:1]),
        latest_hash=Subquery(latest.values("content_hash")[:1]),
        latest_message=Subquery(latest.values("message")[:1]),
    )
    drafts = {
        d.prompt_id: d
        for d in PromptVersion.objects.filter(
            prompt__key__in=keys, status=PromptVersion.Status.DRAFT
        )
    }
    return {
        p.key: _Existing(p, p.latest_number, p.latest_hash, p.latest_message, drafts.get(p.pk))
        for p in prompts
    }


def prompts_import_plan(*, directory: Path, actor: Actor | None = None) -> list[PlanItem]:
    """The plan of importing the directory's files as committed versions
    (``manage.py prompts import``); raises ``SyncInvalid`` listing every bad file."""
    return prompt_files_plan(files=prompt_files_read(directory=directory), actor=actor)


def prompt_files_plan(
    *, files: list[PromptFile], actor: Actor | None = None, commit: bool = True
) -> list[PlanItem]:
    """Reads and validates every file; raises ``SyncInvalid`` listing every bad one.

    1. Each file's form: YAML, known fields of the right types, named after its key.
    2. Its prompt fields and content, checked as the services will (every problem at once),
       including providers that are not configured, unless the file's content is exactly the
       latest committed version's (nothing would be written, so nothing is refused).
    3. Against the registry: unchanged, a new version or draft (``commit``), or new prompt
       fields; a prompt whose default locale would change, or with a draft of someone other than
       ``actor`` that the file's content would overwrite or commit around, is refused.
    """
    parsed = [(file, *prompt_file_parse(file)) for file in files]
    existing = _existing_prompts({data["key"] for _, data, _, _ in parsed if data is not None})
    providers = configured_providers()  # once for every file
    failures: list[FileFailure] = []
    plan: list[PlanItem] = []
    for file, data, root, problems in parsed:
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
                item, problems = _plan_item(file.path, data, content, found, actor, commit)
        if item is None:
            failures.append(FileFailure(file.path, located(problems, root)))
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


def _written_by(draft: PromptVersion, actor: Actor | None) -> bool:
    """Whether ``actor`` wrote the draft last (each edit makes its writer the draft's author):
    the same user, or for an API key or a command, the same label and no user."""
    if actor is None:
        return False
    if actor.user_id is not None:
        return draft.author_id == actor.user_id
    return draft.author_id is None and draft.author_label == actor.label


def _draft_change(
    key: str, draft: PromptVersion, content: VersionContent, actor: Actor | None, commit: bool
) -> tuple[VersionChange, list[Problem]]:
    """What a file whose content differs from the latest commit does with the open draft."""
    own = _written_by(draft, actor)
    if draft.content_hash == content.content_hash and not commit:
        return VersionChange.NONE, []  # the draft holds the file's content already
    if own and draft.content_hash == content.content_hash:
        return VersionChange.COMMIT_DRAFT, []
    if own:
        change = VersionChange.REPLACE_AND_COMMIT_DRAFT if commit else VersionChange.REPLACE_DRAFT
        return change, []
    # The new content would be committed around, or written over, someone's work in progress.
    by = f", by {draft.author_label}" if draft.author_label else ""
    return VersionChange.NONE, [
        Problem(
            "draft_open",
            f"{key} has an open draft (version {draft.number}{by}); commit or discard it before "
            "importing a change of its content.",
        )
    ]


def _plan_item(
    path: Path,
    data: dict[str, Any],
    content: VersionContent,
    found: _Existing | None,
    actor: Actor | None,
    commit: bool,
) -> tuple[PlanItem | None, list[Problem]]:
    key = data["key"]
    first = VersionChange.COMMIT if commit else VersionChange.OPEN_DRAFT
    if found is None:
        return PlanItem(path, key, Action.CREATE, data, content, change=first, version=1), []
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
    new_content = found.latest_hash != content.content_hash
    change, version, draft = VersionChange.NONE, found.latest_number, None
    if new_content and found.draft is None:
        change, version = first, (found.latest_number or 0) + 1
    elif new_content:
        change, draft_problems = _draft_change(key, found.draft, content, actor, commit)
        problems += draft_problems
        version, draft = found.draft.number, found.draft
    exported_from = data.get("version")
    if (
        new_content
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
    if new_content and data.get("message") == found.latest_message:
        # The file still carries the exported version's message; don't reuse it for new content.
        data = {**data, "message": ""}
    action = Action.UNCHANGED if change is VersionChange.NONE and not changes else Action.UPDATE
    item = PlanItem(
        path, key, action, data, content, found.latest_number, changes, change, version, draft
    )
    return item, []


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
    missing locale, a cycle) stops the import with its path (``SyncInvalid``). A draft the plan
    read that has changed since is refused (``DraftConflict``), as is a draft opened since
    (``DraftExists``): the registry moved, nothing is written, plan again."""
    for item in _apply_order(plan):
        try:
            item.version = _apply(item, actor)
        except (ContentInvalid, PromptInvalid) as exc:
            raise SyncInvalid([FileFailure(item.path, exc.problems)]) from exc


@transaction.atomic
def prompt_files_import(
    *, files: list[PromptFile], actor: Actor, commit: bool = True
) -> list[PlanItem]:
    """Plans and applies in one transaction (the API's import): every file lands, or none."""
    plan = prompt_files_plan(files=files, actor=actor, commit=commit)
    prompts_import_apply(plan=plan, actor=actor)
    return plan


def _apply(item: PlanItem, actor: Actor) -> int | None:
    """Writes one file's plan; returns the number of the version holding its content."""
    message = item.data.get("message") or f"Imported from {item.path.name}."
    if item.action is Action.UNCHANGED:
        return item.version
    if item.action is Action.CREATE:
        prompt = prompt_create(
            key=item.key,
            actor=actor,
            description=item.data.get("description", ""),
            default_locale=item.data.get("default_locale", "en"),
            tags=item.data.get("tags", []),
            is_snippet=item.data.get("snippet", False),
        )
    else:
        prompt = Prompt.objects.get(key=item.key)
    if item.prompt_changes:
        prompt_update(
            prompt=prompt,
            actor=actor,
            description=item.data.get("description"),
            tags=item.data.get("tags"),
            is_snippet=item.data.get("snippet", False),
        )
    draft, tag = item.draft, item.draft.edit_tag if item.draft is not None else None
    match item.change:
        case VersionChange.COMMIT | VersionChange.OPEN_DRAFT:
            return version_create(
                prompt=prompt,
                actor=actor,
                content=item.content,
                message=message,
                commit=item.change.commits,
            ).number
        case VersionChange.REPLACE_DRAFT | VersionChange.REPLACE_AND_COMMIT_DRAFT:
            draft = version_draft_update(
                version=draft, actor=actor, content=item.content, message=message, expected_tag=tag
            )
            if item.change.commits:
                draft = version_commit(version=draft, actor=actor)
            return draft.number
        case VersionChange.COMMIT_DRAFT:
            # The file's own message, else the draft's (which this importer wrote).
            given = item.data.get("message") or (None if draft.message.strip() else message)
            return version_commit(
                version=draft, actor=actor, message=given, expected_tag=tag
            ).number
    return item.version
