"""Writes of the registry: prompts, drafts, commits (STYLE R1, R3, R4, R5).

Every function takes keyword arguments and the acting ``actor``, returns domain objects and raises
the domain errors of ``registry.errors``. Views, the admin, management commands and the importer
call these and nothing else to change a prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from .actors import Actor
from .content import VersionContent, content_check, sections_hash
from .errors import (
    ContentInvalid,
    DraftConflict,
    DraftExists,
    LocaleInvalid,
    Problem,
    PromptExists,
    PromptInvalid,
    VersionImmutable,
    VersionNotFound,
    errors_only,
)
from .events import EventType, event_emit
from .locales import locale_normalize
from .models import (
    PROMPT_KEY_MAX,
    PROMPT_KEY_PATTERN,
    LocalizedTemplate,
    Prompt,
    PromptVersion,
    SnippetUse,
)
from .models import Variable as VariableRow
from .providers import configured_providers
from .selectors import template_sections, version_content
from .snippets import snippet_references_check, snippet_uses_write
from .variables import DEFAULT_PLACE, VariableType

TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,49}")
MAX_TAGS = 20
DESCRIPTION_MAX = 2000


def prompt_fields_check(
    *,
    key: str | None,
    description: str | None,
    default_locale: str | None,
    tags: Iterable[str] | None,
) -> list[Problem]:
    """Every problem with a prompt's own fields; ``None`` skips a field. The importer plans with it."""
    problems: list[Problem] = []
    if key is not None and (
        not isinstance(key, str)
        or len(key) > PROMPT_KEY_MAX
        or not re.fullmatch(PROMPT_KEY_PATTERN, key)
    ):
        problems.append(
            Problem(
                "invalid_key",
                "Use lowercase letters, digits, '-', '_' and single "
                f"dots between parts, at most {PROMPT_KEY_MAX} characters.",
                "/key",
            )
        )
    if description is not None and len(description) > DESCRIPTION_MAX:
        problems.append(
            Problem(
                "description_too_long", f"At most {DESCRIPTION_MAX} characters.", "/description"
            )
        )
    if default_locale is not None:
        try:
            locale_normalize(default_locale)
        except LocaleInvalid as exc:
            problems.append(Problem("invalid_locale", exc.message, "/default_locale"))
    if tags is not None:
        tags = list(tags)
        if len(tags) > MAX_TAGS:
            problems.append(Problem("too_many_tags", f"At most {MAX_TAGS} tags.", "/tags"))
        for i, tag in enumerate(tags):
            if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
                problems.append(
                    Problem(
                        "invalid_tag",
                        "A tag is 1 to 50 lowercase letters, digits, '-', '_', '.' or ':'.",
                        f"/tags/{i}",
                    )
                )
    if description is not None and "\x00" in description:
        problems.append(
            Problem(
                "nul_character", "Text cannot contain the NUL character (U+0000).", "/description"
            )
        )
    return problems


def prompt_create(
    *,
    key: str,
    actor: Actor,
    description: str = "",
    default_locale: str = "en",
    tags: Iterable[str] = (),
    owner_id: int | None = None,
    is_snippet: bool = False,
) -> Prompt:
    tags = list(tags)
    problems = prompt_fields_check(
        key=key, description=description, default_locale=default_locale, tags=tags
    )
    if problems:
        raise PromptInvalid(problems)
    if Prompt.objects.filter(key=key).exists():
        raise PromptExists(f"A prompt with the key {key!r} exists already.")
    try:
        # The unique constraint on key settles a race between two creators; the loser gets the
        # same error the check above gives.
        with transaction.atomic():
            return Prompt.objects.create(
                key=key,
                description=description,
                default_locale=locale_normalize(default_locale),
                tags=sorted(set(tags)),
                owner_id=owner_id if owner_id is not None else actor.user_id,
                is_snippet=is_snippet,
            )
    except IntegrityError as exc:
        raise PromptExists(f"A prompt with the key {key!r} exists already.") from exc


def prompt_update(
    *,
    prompt: Prompt,
    actor: Actor,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    owner_id: int | None = None,
    is_snippet: bool | None = None,
) -> Prompt:
    """Changes what describes a prompt. The key and default locale are fixed once versions exist,
    because services ask by key and every translation's staleness is measured against the default."""
    tags = list(tags) if tags is not None else None
    problems = prompt_fields_check(
        key=None, description=description, default_locale=None, tags=tags
    )
    if is_snippet is not None and is_snippet != prompt.is_snippet:
        problems += prompt_snippet_check(prompt=prompt, is_snippet=is_snippet)
    if problems:
        raise PromptInvalid(problems)
    fields = ["updated_at"]
    if description is not None:
        prompt.description = description
        fields.append("description")
    if tags is not None:
        prompt.tags = sorted(set(tags))
        fields.append("tags")
    if owner_id is not None:
        prompt.owner_id = owner_id
        fields.append("owner")
    if is_snippet is not None:
        prompt.is_snippet = is_snippet
        fields.append("is_snippet")
    prompt.save(update_fields=fields)
    return prompt


def prompt_snippet_check(*, prompt: Prompt, is_snippet: bool) -> list[Problem]:
    """Why ``prompt`` cannot become a snippet (a version declares variables) or stop being one
    (versions include it: their renders would fail), if it cannot."""
    if is_snippet:
        if VariableRow.objects.filter(version__prompt=prompt).exists():
            return [
                Problem(
                    "snippet_variables",
                    f"{prompt.key} has versions that declare variables; a snippet declares none.",
                    "/is_snippet",
                )
            ]
        return []
    users = SnippetUse.objects.filter(snippet=prompt).values("version__prompt").distinct().count()
    if users:
        return [
            Problem(
                "snippet_in_use",
                f"{prompt.key} is included by versions of {users} prompt(s); remove the includes "
                "first.",
                "/is_snippet",
            )
        ]
    return []


def _content_normalized(content: VersionContent) -> VersionContent:
    return VersionContent(
        variables=content.variables,
        model=content.model,
        templates={locale_normalize(loc): s for loc, s in content.templates.items()},
    )


def _content_validated(
    content: VersionContent, prompt: Prompt, *, providers: frozenset[str] | None
) -> VersionContent:
    """``content`` with canonical locales, or ``ContentInvalid`` listing every error.

    ``providers`` is ``configured_providers()`` wherever an author's content is written or
    committed (docs/decisions/0008); None only where a draft copies a version as it stands.
    """
    problems = errors_only(
        content_check(
            content,
            default_locale=prompt.default_locale,
            max_section_chars=settings.PROMPT_SECTION_MAX_CHARS,
            max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
            max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
            providers=providers,
        )
    )
    if providers is not None:
        # What it includes, like its providers, is checked where an author writes or commits.
        problems += snippet_references_check(prompt=prompt, content=content)
    if problems:
        raise ContentInvalid(problems)
    return _content_normalized(content)


def _content_write(
    *, version: PromptVersion, content: VersionContent, previous: Mapping[str, LocalizedTemplate]
) -> None:
    """Replaces a draft's variables and templates with ``content``.

    ``previous`` is the translations this content replaces (the draft's own rows on an update, the
    parent's on a new draft): a translation whose text did not change keeps the ``source_hash`` it
    had, so it turns stale when the default-locale text moves on without it.
    """
    default_locale = version.prompt.default_locale
    source = sections_hash(content.templates[default_locale])
    VariableRow.objects.filter(version=version).delete()
    LocalizedTemplate.objects.filter(version=version).delete()
    VariableRow.objects.bulk_create(
        VariableRow(
            version=version,
            position=i,
            name=v.name,
            type=str(v.type),
            required=v.required,
            default=v.default,
            description=v.description,
            # A history's place is stored even when it is the default, so it reads back named.
            after=(v.after or DEFAULT_PLACE) if v.type == VariableType.MESSAGES else "",
        )
        for i, v in enumerate(content.variables)
    )
    rows = []
    for locale, sections in content.templates.items():
        before = previous.get(locale)
        unchanged = before is not None and sections_hash(
            template_sections(before)
        ) == sections_hash(sections)
        source_hash = before.source_hash if (unchanged and locale != default_locale) else source
        rows.append(
            LocalizedTemplate(
                version=version, locale=locale, source_hash=source_hash, **sections.as_dict()
            )
        )
    LocalizedTemplate.objects.bulk_create(rows)
    snippet_uses_write(version=version, content=content)


def _binding_fields(content: VersionContent) -> dict[str, Any]:
    m = content.model
    return {
        "provider": m.provider,
        "model_name": m.model,
        "parameters": dict(m.parameters),
        "response_schema": dict(m.response_schema) if m.response_schema else None,
        "fallbacks": [f.as_dict() for f in m.fallbacks],
        "tools": [dict(t) for t in m.tools],
        "tool_choice": m.tool_choice,
        "parallel_tool_calls": m.parallel_tool_calls,
        "cache": m.as_dict().get("cache"),
        "guardrails": m.as_dict().get("guardrails"),
        "content_hash": content.content_hash,
    }


def _templates_by_locale(version: PromptVersion | None) -> dict[str, LocalizedTemplate]:
    if version is None:
        return {}
    return {t.locale: t for t in LocalizedTemplate.objects.filter(version=version)}


@transaction.atomic
def version_draft_create(
    *,
    prompt: Prompt,
    actor: Actor,
    content: VersionContent,
    message: str = "",
    parent: PromptVersion | None = None,
) -> PromptVersion:
    """Opens the prompt's draft with ``content``; its parent is ``parent`` or the latest commit.

    1. Validate the content (every problem at once), its providers among the configured ones.
    2. Lock the prompt: the next number and the one-draft rule are read under the lock.
    3. Insert the version and its rows; the unique constraints back both rules if a writer
       that does not take the lock races us.
    """
    content = _content_validated(content, prompt, providers=configured_providers())
    return _draft_open(prompt=prompt, actor=actor, content=content, message=message, parent=parent)


def _draft_open(
    *,
    prompt: Prompt,
    actor: Actor,
    content: VersionContent,
    message: str,
    parent: PromptVersion | None,
) -> PromptVersion:
    """Steps 2 and 3 of ``version_draft_create``, for content its caller validated."""
    # Lock the prompt row first (the project's lock order: prompt, then its versions, then releases).
    Prompt.objects.select_for_update().filter(pk=prompt.pk).first()
    draft = PromptVersion.objects.filter(prompt=prompt, status=PromptVersion.Status.DRAFT).first()
    if draft is not None:
        raise DraftExists(draft.number)
    if parent is None:
        parent = (
            PromptVersion.objects.filter(prompt=prompt, status=PromptVersion.Status.COMMITTED)
            .order_by("-number")
            .first()
        )
    number = (PromptVersion.objects.filter(prompt=prompt).aggregate(n=Max("number"))["n"] or 0) + 1
    try:
        with transaction.atomic():
            version = PromptVersion.objects.create(
                prompt=prompt,
                number=number,
                message=message,
                parent=parent,
                author_id=actor.user_id,
                author_label=actor.label,
                **_binding_fields(content),
            )
    except IntegrityError as exc:
        current = PromptVersion.objects.filter(prompt=prompt, status=PromptVersion.Status.DRAFT)
        raise DraftExists(current.values_list("number", flat=True).first() or number) from exc
    _content_write(version=version, content=content, previous=_templates_by_locale(parent))
    return version


def _locked_draft(version: PromptVersion, expected_tag: str | None) -> PromptVersion:
    # Lock before comparing: a tag read outside the lock is stale by the time we write.
    try:
        locked = (
            # of=("self",): lock the version only; the prompt row is locked by those who need it,
            # first, in the project's lock order.
            PromptVersion.objects.select_for_update(of=("self",))
            .select_related("prompt")
            .get(pk=version.pk)
        )
    except PromptVersion.DoesNotExist as exc:
        # Discarded since the caller read it.
        raise VersionNotFound(
            f"{version.prompt.key} has no version {version.number} any more."
        ) from exc
    if locked.is_committed:
        raise VersionImmutable()
    if expected_tag is not None and expected_tag != locked.edit_tag:
        raise DraftConflict(locked.edit_tag)
    return locked


@transaction.atomic
def version_draft_update(
    *,
    version: PromptVersion,
    actor: Actor,
    content: VersionContent | None = None,
    message: str | None = None,
    expected_tag: str | None = None,
) -> PromptVersion:
    """Changes a draft's content and/or message. A committed version answers ``VersionImmutable``."""
    locked = _locked_draft(version, expected_tag)
    fields = ["updated_at"]
    if message is not None:
        locked.message = message
        fields.append("message")
    if content is not None:
        content = _content_validated(content, locked.prompt, providers=configured_providers())
        for name, value in _binding_fields(content).items():
            setattr(locked, name, value)
        fields += list(_binding_fields(content))
        _content_write(version=locked, content=content, previous=_templates_by_locale(locked))
    locked.author_id, locked.author_label = actor.user_id, actor.label
    fields += ["author", "author_label"]
    locked.save(update_fields=fields)
    return locked


@transaction.atomic
def version_commit(
    *,
    version: PromptVersion,
    actor: Actor,
    message: str | None = None,
    expected_tag: str | None = None,
) -> PromptVersion:
    """Freezes a draft. Its content is validated again: rules may have tightened since it was
    saved, and a provider it names may have been removed since."""
    locked = _locked_draft(version, expected_tag)
    _content_validated(version_content(locked), locked.prompt, providers=configured_providers())
    if message is not None:
        locked.message = message
    if not locked.message.strip():
        raise ContentInvalid(
            [
                Problem(
                    "missing_message", "Say what changed and why in the commit message.", "/message"
                )
            ]
        )
    locked.status = PromptVersion.Status.COMMITTED
    locked.committed_at = timezone.now()
    locked.committed_by_id, locked.committed_by_label = actor.user_id, actor.label
    locked.save(
        update_fields=[
            "status",
            "committed_at",
            "committed_by",
            "committed_by_label",
            "message",
            "updated_at",
        ]
    )
    event_emit(
        EventType.VERSION_COMMITTED, version_committed_data(locked), prompt_id=locked.prompt_id
    )
    return locked


def version_committed_data(version: PromptVersion) -> dict[str, Any]:
    """``version.committed`` (docs/webhooks.md): what was committed, by whom; never its text."""
    parent = (
        PromptVersion.objects.filter(pk=version.parent_id).values_list("number", flat=True).first()
        if version.parent_id
        else None
    )
    return {
        "prompt": version.prompt.key,
        "version": version.number,
        "parent_version": parent,
        "content_hash": version.content_hash,
        "message": version.message,
        "committed_by": version.committed_by_label,
        "committed_at": version.committed_at,
    }


@transaction.atomic
def version_create(
    *,
    prompt: Prompt,
    actor: Actor,
    content: VersionContent,
    message: str = "",
    commit: bool = False,
) -> PromptVersion:
    """A draft, or with ``commit`` a committed version in one step (a prompt repository's CI)."""
    version = version_draft_create(prompt=prompt, actor=actor, content=content, message=message)
    if commit:
        version = version_commit(version=version, actor=actor)
    return version


@transaction.atomic
def version_branch(*, source: PromptVersion, actor: Actor, message: str = "") -> PromptVersion:
    """ "New draft from this version": the draft starts as a copy of ``source``, its parent.

    The copy's providers are not checked: a version whose provider has been removed since must
    stay the way to a fixed draft. The editor shows the problem and the commit refuses it.
    """
    content = _content_validated(version_content(source), source.prompt, providers=None)
    return _draft_open(
        prompt=source.prompt,
        actor=actor,
        content=content,
        message=message or f"Started from version {source.number}.",
        parent=source,
    )


@transaction.atomic
def version_draft_discard(*, version: PromptVersion, actor: Actor) -> None:
    locked = _locked_draft(version, None)
    locked.delete()
