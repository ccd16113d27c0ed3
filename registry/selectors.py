"""Reads of the registry (STYLE R1, R16): lookups, a version's content, diff, render, translation
status. Selectors own the queries' shape (``select_related``/``prefetch_related``) so no caller
walks relations row by row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Prefetch, Q, QuerySet

from .content import ModelBinding, ModelTarget, VersionContent, content_check, sections_hash
from .errors import Problem, PromptNotFound, VersionNotFound
from .linediff import line_diff_bounded, line_diff_coarse, unified_text
from .locales import locale_normalize, locale_pick
from .models import LocalizedTemplate, Prompt, PromptVersion, Variable
from .providers import configured_providers
from .rendering import SECTIONS, Sections, render_sections, to_messages
from .snippets import Following, latest_committed, library_for_templates
from .variables import VariableSpec, VariableType, histories, variables_validate


def prompt_list(*, search: str = "", tag: str = "") -> QuerySet[Prompt]:
    """Prompts with their latest committed number and draft number, in one query.

    ``search`` matches part of the key, the description or a tag, in any case."""
    qs = Prompt.objects.annotate(
        latest_number=Max("versions__number", filter=Q(versions__status="committed")),
        draft_number=Max("versions__number", filter=Q(versions__status="draft")),
        version_count=Count("versions"),
    ).order_by("key")
    if search:
        # Tags are matched in the list's JSON text: portable to SQLite, and tags are short words
        # (a search for a quote or a comma may match across two tags, which is harmless).
        qs = qs.filter(
            Q(key__icontains=search) | Q(description__icontains=search) | Q(tags__icontains=search)
        )
    if tag:
        # JSON containment is not portable to SQLite; tags are few, so match the quoted element.
        qs = qs.filter(tags__icontains=f'"{tag}"')
    return qs


def prompt_get(*, key: str) -> Prompt:
    try:
        return Prompt.objects.get(key=key)
    except Prompt.DoesNotExist as exc:
        raise PromptNotFound(f"There is no prompt with the key {key!r}.") from exc


def _with_content(qs: QuerySet[PromptVersion]) -> QuerySet[PromptVersion]:
    return qs.select_related("prompt", "parent").prefetch_related(
        Prefetch("variables", queryset=Variable.objects.order_by("position")),
        Prefetch("templates", queryset=LocalizedTemplate.objects.order_by("locale")),
    )


def version_list(*, prompt: Prompt) -> QuerySet[PromptVersion]:
    return PromptVersion.objects.filter(prompt=prompt).select_related("prompt").order_by("-number")


def version_get(*, prompt: Prompt, number: int) -> PromptVersion:
    """A version with its content prefetched (two extra queries, whatever its size)."""
    try:
        return _with_content(PromptVersion.objects.filter(prompt=prompt)).get(number=number)
    except PromptVersion.DoesNotExist as exc:
        raise VersionNotFound(f"{prompt.key} has no version {number}.") from exc


def template_sections(row: LocalizedTemplate) -> Sections:
    return Sections(
        system=row.system, context=row.context, instruction=row.instruction, format=row.format
    )


def version_content(version: PromptVersion) -> VersionContent:
    """The version's content as a value; uses prefetched rows when the selector loaded them."""
    return VersionContent(
        variables=tuple(
            VariableSpec(
                name=v.name,
                type=VariableType(v.type),
                required=v.required,
                default=v.default,
                description=v.description,
                after=v.after or None,
            )
            for v in sorted(version.variables.all(), key=lambda v: v.position)
        ),
        model=ModelBinding(
            provider=version.provider,
            model=version.model_name,
            parameters=dict(version.parameters or {}),
            response_schema=version.response_schema or None,
            fallbacks=tuple(
                ModelTarget(
                    provider=f["provider"],
                    model=f["model"],
                    parameters=dict(f.get("parameters") or {}),
                )
                for f in version.fallbacks or ()
            ),
            tools=tuple(version.tools or ()),
            tool_choice=version.tool_choice,
            parallel_tool_calls=version.parallel_tool_calls,
            cache=version.cache,
            guardrails=version.guardrails,
        ),
        templates={t.locale: template_sections(t) for t in version.templates.all()},
    )


def version_check(version: PromptVersion) -> list[Problem]:
    """Every problem and warning of a version's content, as authors see them in the editor,
    including a provider that is not configured (any more): the commit would refuse it."""
    return content_check(
        version_content(version),
        default_locale=version.prompt.default_locale,
        max_section_chars=settings.PROMPT_SECTION_MAX_CHARS,
        max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
        max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
        providers=configured_providers(),
    )


class TranslationState(StrEnum):
    SOURCE = "source"  # the default locale: what translations are measured against
    CURRENT = "current"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class TranslationStatus:
    locale: str
    state: TranslationState


def version_translation_status(version: PromptVersion) -> list[TranslationStatus]:
    """Per locale: the source, a current translation, or a stale one (the default-locale text
    changed since it was translated and it did not)."""
    templates = list(version.templates.all())
    default = version.prompt.default_locale
    source = next((t for t in templates if t.locale == default), None)
    current = sections_hash(template_sections(source)) if source else ""
    statuses = []
    for t in sorted(templates, key=lambda t: (t.locale != default, t.locale)):
        if t.locale == default:
            state = TranslationState.SOURCE
        elif t.source_hash == current:
            state = TranslationState.CURRENT
        else:
            state = TranslationState.STALE
        statuses.append(TranslationStatus(t.locale, state))
    return statuses


@dataclass(frozen=True, slots=True)
class RenderResult:
    locale: str  # the locale whose template was used, after fallback
    requested_locale: str
    sections: Sections  # the raw templates
    rendered: Sections
    messages: list[dict[str, str]]
    variables: dict[str, Any]  # the values rendered with, defaults applied


def version_render(
    *,
    version: PromptVersion,
    locale: str | None,
    variables: Mapping[str, Any],
    following: Following = latest_committed,
) -> RenderResult:
    """Renders a version (preview, the authoring API); the runtime path renders the same way.
    ``following``: how includes that follow a snippet's release resolve (outside any
    environment: the snippet's latest committed version)."""
    return content_render(
        content=version_content(version),
        default_locale=version.prompt.default_locale,
        locale=locale,
        variables=variables,
        following=following,
    )


def content_render(
    *,
    content: VersionContent,
    default_locale: str,
    locale: str | None,
    variables: Mapping[str, Any],
    following: Following = latest_committed,
) -> RenderResult:
    """Renders a version's content, saved or not (the workbench previews unsaved text with it).

    1. Pick the locale by fallback (fr-CA -> fr -> the prompt's default).
    2. Validate the variables against the declared ones, listing every problem.
    3. Load the snippets it includes (``registry.snippets``; none: no query), the ones that
       follow resolved by ``following``.
    4. Render in the sandbox, with the size cap.
    """
    requested = locale_normalize(locale) if locale else default_locale
    chosen = locale_pick(requested, content.templates.keys(), default=default_locale)
    values = variables_validate(
        content.variables,
        variables,
        max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
        max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
    )
    sections = content.templates[chosen]
    library = library_for_templates({chosen: sections.as_dict()}, following=following)
    rendered = render_sections(
        sections=sections,
        variables=values,
        locale=chosen,
        max_chars=settings.PROMPT_RENDER_MAX_CHARS,
        max_steps=settings.PROMPT_RENDER_MAX_STEPS,
        deadline_ms=settings.PROMPT_RENDER_DEADLINE_MS,
        history=histories(content.variables, values),
        snippets=library,
    )
    return RenderResult(
        locale=chosen,
        requested_locale=requested,
        sections=sections,
        rendered=rendered,
        messages=to_messages(rendered),
        variables=values,
    )


def draft_translation_status(
    *, prompt: Prompt, version: PromptVersion | None, content: VersionContent
) -> list[TranslationStatus]:
    """What ``version_translation_status`` will say once ``content`` is saved as the prompt's
    draft (``version``, or a new draft when None), for an editor showing unsaved text.

    The rule ``version_draft_create``/``update`` write by: a translation whose text is unchanged
    from the row it replaces (the draft's own, or for a new draft its parent's, the latest
    commit) keeps the source hash it had; any other one is written against the current
    default-locale text, so it is current.
    """
    default = prompt.default_locale
    if version is None:
        version = (
            PromptVersion.objects.filter(prompt=prompt, status=PromptVersion.Status.COMMITTED)
            .order_by("-number")
            .first()
        )
    previous = (
        {t.locale: t for t in LocalizedTemplate.objects.filter(version=version)}
        if version is not None
        else {}
    )
    source = content.templates.get(default)
    current = sections_hash(source) if source is not None else ""
    statuses = []
    for locale in sorted(content.templates, key=lambda loc: (loc != default, loc)):
        before = previous.get(locale)
        if locale == default:
            state = TranslationState.SOURCE
        elif before is None or sections_hash(template_sections(before)) != sections_hash(
            content.templates[locale]
        ):
            state = TranslationState.CURRENT
        else:
            state = (
                TranslationState.CURRENT
                if before.source_hash == current
                else TranslationState.STALE
            )
        statuses.append(TranslationStatus(locale, state))
    return statuses


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One aligned stretch of a side-by-side diff: ``equal``, ``replace``, ``delete`` or ``insert``."""

    tag: str
    before: list[str]
    after: list[str]


@dataclass(frozen=True, slots=True)
class SectionDiff:
    locale: str
    section: str
    change: Change
    before: str
    after: str
    rows: list[DiffRow] = field(default_factory=list)
    unified: str = ""
    # Too many lines differ to compare them one by one (``VERSION_DIFF_MAX_LINES``): the lines
    # the two share at the start and the end are kept, everything between is one replaced block.
    coarse: bool = False


@dataclass(frozen=True, slots=True)
class ValueDiff:
    name: str  # a variable's name, or a binding field ("model", "parameters.temperature")
    change: Change
    before: Any = None
    after: Any = None


@dataclass(frozen=True, slots=True)
class VersionDiff:
    prompt: str
    before_number: int
    after_number: int
    templates: list[SectionDiff]
    variables: list[ValueDiff]
    model: list[ValueDiff]

    @property
    def coarse(self) -> bool:
        return any(d.coarse for d in self.templates)

    @property
    def is_empty(self) -> bool:
        return all(d.change is Change.UNCHANGED for d in self.templates) and not (
            self.variables or self.model
        )


def _text_diff(locale: str, section: str, before: str | None, after: str | None) -> SectionDiff:
    a, b = (before or "").splitlines(), (after or "").splitlines()
    if before is None:
        change = Change.ADDED
    elif after is None:
        change = Change.REMOVED
    else:
        change = Change.UNCHANGED if before == after else Change.CHANGED
    opcodes = line_diff_bounded(a, b, max_lines=settings.VERSION_DIFF_MAX_LINES)
    coarse = opcodes is None
    if opcodes is None:
        opcodes = line_diff_coarse(a, b)
    rows = [DiffRow(tag, a[i1:i2], b[j1:j2]) for tag, i1, i2, j1, j2 in opcodes]
    unified = unified_text(a, b, opcodes, f"{locale}/{section}")
    return SectionDiff(
        locale, section, change, before or "", after or "", rows, unified, coarse=coarse
    )


def _value_diffs(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[ValueDiff]:
    diffs = []
    for name in list(before) + [n for n in after if n not in before]:
        if name not in after:
            diffs.append(ValueDiff(name, Change.REMOVED, before[name], None))
        elif name not in before:
            diffs.append(ValueDiff(name, Change.ADDED, None, after[name]))
        elif before[name] != after[name]:
            diffs.append(ValueDiff(name, Change.CHANGED, before[name], after[name]))
    return diffs


def _binding_flat(binding: ModelBinding) -> dict[str, Any]:
    flat: dict[str, Any] = {"provider": binding.provider, "model": binding.model}
    flat |= {f"parameters.{k}": v for k, v in sorted(binding.parameters.items())}
    flat["response_schema"] = dict(binding.response_schema) if binding.response_schema else None
    flat["fallbacks"] = [f.as_dict() for f in binding.fallbacks]
    # One row per tool (by name, so a reordering shows as what it is), then the choice settings.
    for tool in binding.tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        flat[f"tools.{name}"] = dict(tool) if isinstance(tool, Mapping) else tool
    if binding.tool_choice is not None:
        flat["tool_choice"] = binding.tool_choice
    if binding.parallel_tool_calls is not None:
        flat["parallel_tool_calls"] = binding.parallel_tool_calls
    if binding.cache is not None:
        flat["cache"] = binding.as_dict()["cache"]
    if binding.guardrails is not None:
        flat["guardrails"] = binding.as_dict()["guardrails"]
    return flat


def version_diff(*, before: PromptVersion, after: PromptVersion) -> VersionDiff:
    """What changed from ``before`` to ``after``: every locale's sections side by side (unchanged
    ones included, so a page can show the whole prompt), variables and model binding changes."""
    a, b = version_content(before), version_content(after)
    templates = []
    locales = sorted(
        set(a.templates) | set(b.templates),
        key=lambda loc: (loc != after.prompt.default_locale, loc),
    )
    for locale in locales:
        sa, sb = a.templates.get(locale), b.templates.get(locale)
        for section in SECTIONS:
            templates.append(
                _text_diff(
                    locale,
                    section,
                    getattr(sa, section) if sa else None,
                    getattr(sb, section) if sb else None,
                )
            )
    return VersionDiff(
        prompt=after.prompt.key,
        before_number=before.number,
        after_number=after.number,
        templates=templates,
        variables=_value_diffs(
            {v.name: v.as_dict() for v in a.variables}, {v.name: v.as_dict() for v in b.variables}
        ),
        model=_value_diffs(_binding_flat(a.model), _binding_flat(b.model)),
    )
