"""The version pages that read: preview and diff, and what every version page shares. Each
parses, calls one selector, and presents (STYLE R2); each checks its permission itself, since
``admin_view`` only checks that the user is staff. The verbs' pages are in ``verbs``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import zip_longest
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django import forms
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from registry.errors import (
    LocaleInvalid,
    LocaleUnavailable,
    Problem,
    RenderFailed,
    TemplateInvalid,
    VariablesInvalid,
)
from registry.linediff import Span, WordBudget, word_diff
from registry.models import PromptVersion
from registry.rendering import SECTIONS
from registry.selectors import (
    SectionDiff,
    version_check,
    version_content,
    version_diff,
    version_get,
    version_list,
    version_render,
    version_translation_status,
)
from registry.strictjson import JSONRefused, strict_json_loads
from registry.variables import VariableSpec, VariableType

from .display import translation_badges
from .forms import json_refusal, pointer_parts
from .samples import samples_remember

if TYPE_CHECKING:
    from .versions import PromptVersionAdmin

TEMPLATES = "admin/registry/promptversion"


# --- shared -----------------------------------------------------------------------------------


def version_or_404(
    model_admin: PromptVersionAdmin, request: HttpRequest, object_id: str
) -> PromptVersion:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    version = model_admin.get_object(request, unquote(object_id))
    if version is None:
        raise Http404("No such version.")
    return version


def page_context(
    model_admin: PromptVersionAdmin,
    request: HttpRequest,
    version: PromptVersion,
    title: str,
    **extra: Any,
) -> dict[str, Any]:
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "subtitle": str(version),
        "version": version,
        "original": version,
        "has_view_permission": True,
        **extra,
    }


# --- preview ----------------------------------------------------------------------------------


def variable_field(spec: VariableSpec) -> forms.Field:
    """An input typed by the declared variable: JSON for lists and objects, a number input for
    numbers, a checkbox for a boolean. Values are parsed loosely on purpose: a wrong type reaches
    ``variables_validate``, which says what it expected in the registry's own words."""
    help_text = f"{spec.type}{'' if spec.required else ', optional'}"
    if spec.description:
        help_text += f" — {spec.description}"
    label = spec.name
    match spec.type:
        case VariableType.BOOLEAN:
            return forms.BooleanField(
                required=False, label=label, help_text=help_text, initial=bool(spec.default)
            )
        case VariableType.INTEGER | VariableType.NUMBER:
            step = "1" if spec.type is VariableType.INTEGER else "any"
            return forms.CharField(
                required=False,
                label=label,
                help_text=help_text,
                initial="" if spec.default is None else json.dumps(spec.default),
                widget=forms.NumberInput(attrs={"step": step}),
            )
        case VariableType.MESSAGES:
            return forms.CharField(
                required=False,
                strip=False,
                label=label,
                help_text=help_text + HISTORY_HELP,
                initial=""
                if spec.default is None
                else json.dumps(spec.default, indent=2, ensure_ascii=False),
                widget=forms.Textarea(
                    attrs={
                        "rows": 5,
                        "cols": 60,
                        "class": "vLargeTextField",
                        "placeholder": "user: Where is my parcel?\nassistant: It left on Monday.",
                    }
                ),
            )
        case VariableType.LIST | VariableType.OBJECT:
            return forms.CharField(
                required=False,
                label=label,
                help_text=help_text + " (JSON)",
                initial=""
                if spec.default is None
                else json.dumps(spec.default, indent=2, ensure_ascii=False),
                widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "class": "vLargeTextField"}),
            )
        case _:
            return forms.CharField(
                required=False,
                strip=False,
                label=label,
                help_text=help_text,
                initial=spec.default if isinstance(spec.default, str) else "",
                widget=forms.Textarea(attrs={"rows": 2, "cols": 60, "class": "vLargeTextField"}),
            )


HISTORY_HELP = (
    " — one message per line as 'user: …', 'assistant: …' or 'tool: …' (the lines after one"
    ' continue it), or JSON: [{"role": "user", "content": "…"}]'
)
# A line that starts a message of a typed transcript. "system" is read too, so that the check
# refuses it in its own words instead of it silently joining the message before.
_TRANSCRIPT_LINE = re.compile(r"(user|assistant|tool|system):[ \t]?(.*)")


def transcript_messages(text: str) -> list[dict[str, str]] | str:
    """A history typed as a transcript, ``role: text`` per message (later lines continue it),
    as chat messages; the text itself when a line before the first role says nothing of whose
    it is (the check then says a history is a list)."""
    messages: list[dict[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        start = _TRANSCRIPT_LINE.fullmatch(line)
        if start is not None:
            messages.append({"role": start.group(1), "content": start.group(2)})
        elif messages:
            messages[-1]["content"] += "\n" + line
        elif line.strip():
            return text
    for number, message in enumerate(messages):
        message["content"] = message["content"].strip("\n")
        if message["role"] == "tool":
            # A tool message answers a call by its id; a transcript has none to give, so its
            # place stands in (JSON carries a conversation's real calls and ids).
            message["tool_call_id"] = f"call_{number}"
    return messages


def field_name(variable: str) -> str:
    return f"var_{variable}"


class PreviewForm(forms.Form):
    locale = forms.CharField(
        required=False,
        help_text="Any BCP 47 tag, e.g. fr-CA: it falls back to fr, then the default locale.",
        widget=forms.TextInput(attrs={"list": "version-locales", "size": 12}),
    )

    def __init__(
        self, data: Mapping[str, Any] | None, *, specs: Sequence[VariableSpec], locale: str
    ) -> None:
        super().__init__(data, initial={"locale": locale})
        self.specs = list(specs)
        for spec in self.specs:
            self.fields[field_name(spec.name)] = variable_field(spec)

    def variable_fields(self) -> list[forms.BoundField]:
        return [self[field_name(s.name)] for s in self.specs]

    def values(self) -> dict[str, Any]:
        """The variables to render with; an empty input is a variable left out."""
        values: dict[str, Any] = {}
        for spec in self.specs:
            name = field_name(spec.name)
            if name not in self.cleaned_data:
                continue
            raw = self.cleaned_data[name]
            if spec.type is VariableType.BOOLEAN:
                values[spec.name] = bool(raw)
            elif raw == "" or raw is None:
                continue
            elif spec.type is VariableType.STRING:
                values[spec.name] = raw.replace("\r\n", "\n")
            elif spec.type is VariableType.MESSAGES and not raw.lstrip().startswith("["):
                values[spec.name] = transcript_messages(raw)
            else:
                values[spec.name] = self._json(
                    name,
                    raw,
                    strict=spec.type
                    in (VariableType.LIST, VariableType.OBJECT, VariableType.MESSAGES),
                )
        return values

    def _json(self, name: str, raw: str, *, strict: bool) -> Any:
        try:
            return strict_json_loads(raw)
        except JSONRefused as exc:
            if exc.errors:
                self.add_error(name, json_refusal(exc))
            elif strict:
                self.add_error(name, "This is not valid JSON.")
            return raw  # a number input with text in it: variables_validate names the type


@dataclass(frozen=True, slots=True)
class SectionProblem:
    locale: str
    section: str
    source: str
    problems: list[Problem]


def preview(model_admin: PromptVersionAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """Renders the version with sample variables, as ``POST …/versions/{n}/render`` would.

    A read, so a GET form: the page can be bookmarked and shared with its sample values.
    """
    version = version_or_404(model_admin, request, object_id)
    content = version_content(version)
    submitted = "render" in request.GET
    form = PreviewForm(
        request.GET if submitted else None,
        specs=content.variables,
        locale=version.prompt.default_locale,
    )
    result = None
    section_problems: list[SectionProblem] = []
    if submitted and form.is_valid():
        values = form.values()
        if form.is_valid():  # values() may have found JSON that does not parse
            samples_remember(  # the playground starts from the last preview
                request,
                version_id=version.pk,
                values=values,
                locale=form.cleaned_data["locale"] or "",
            )
            try:
                result = version_render(
                    version=version, locale=form.cleaned_data["locale"] or None, variables=values
                )
            except (LocaleInvalid, LocaleUnavailable) as exc:
                form.add_error("locale", exc.message)
            except VariablesInvalid as exc:
                place_variable_problems(form, exc.problems)
            except (TemplateInvalid, RenderFailed) as exc:
                section_problems = group_by_section(exc.problems, content.templates)
    context = page_context(
        model_admin,
        request,
        version,
        "Preview",
        form=form,
        result=result,
        fell_back=result is not None and result.locale != result.requested_locale,
        section_problems=section_problems,
        locales=list(content.templates),
        checks=version_check(version),
        badges=translation_badges(version_translation_status(version)),
    )
    return TemplateResponse(request, f"{TEMPLATES}/preview.html", context)


def place_variable_problems(form: PreviewForm, problems: Sequence[Problem]) -> None:
    for problem in problems:
        parts = pointer_parts(problem.pointer)
        # A history's entry (/variables/history/3/role) goes to the history's input too.
        name = field_name(parts[1]) if len(parts) >= 2 and parts[0] == "variables" else None
        form.add_error(name if name in form.fields else None, problem.detail)


def group_by_section(
    problems: Sequence[Problem], templates: Mapping[str, Any]
) -> list[SectionProblem]:
    """Render problems next to the section text they are about (pointer /templates/fr/system)."""
    grouped: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        parts = pointer_parts(problem.pointer)
        key = (parts[1], parts[2]) if len(parts) >= 3 and parts[0] == "templates" else ("", "")
        grouped.setdefault(key, []).append(problem)
    return [
        SectionProblem(
            locale,
            section,
            getattr(templates[locale], section)
            if locale in templates and section in SECTIONS
            else "",
            items,
        )
        for (locale, section), items in grouped.items()
    ]


# --- diff -------------------------------------------------------------------------------------
#
# Two layouts of the same comparison: ``split`` (the versions side by side) and ``unified`` (one
# column, removed lines above the lines that replace them). Inside a changed line that has a
# counterpart, the words that changed are marked (``registry.linediff.word_diff``). The HTML of a
# line is built here with ``format_html``: every piece of template text is escaped (templates are
# text an author wrote, ``<script>`` included), only the <del>/<ins> marks are ours.


class DiffLayout(StrEnum):
    SPLIT = "split"
    UNIFIED = "unified"


DIFF_LAYOUT_SESSION_KEY = "registry_diff_layout"


@dataclass(frozen=True, slots=True)
class Line:
    """One row of a side-by-side table: a line on either side, or a gap (None)."""

    tag: str  # equal, replace, delete, insert
    left_no: int | None
    left: str | None
    right_no: int | None
    right: str | None
    left_html: SafeString | None = None
    right_html: SafeString | None = None


@dataclass(frozen=True, slots=True)
class UnifiedLine:
    """One row of the unified table: a line of the old version (``-``), the new one (``+``) or
    both (`` ``)."""

    sign: str  # " ", "-", "+"
    old_no: int | None
    new_no: int | None
    html: SafeString


def spans_html(spans: Sequence[Span], mark: str) -> SafeString:
    """A line's spans, the changed ones inside ``<del>`` or ``<ins>`` (``mark``); a changed run
    of whitespace alone carries ``ws`` so that it shows."""
    pieces: list[SafeString | str] = []
    for span in spans:
        if not span.changed:
            pieces.append(span.text)
        elif span.text.isspace():
            pieces.append(format_html('<{} class="ws">{}</{}>', mark, span.text, mark))
        else:
            pieces.append(format_html("<{}>{}</{}>", mark, span.text, mark))
    return format_html_join("", "{}", ((piece,) for piece in pieces))


def _whole(text: str) -> SafeString:
    return format_html("{}", text)


def _paired(
    before: Sequence[str], after: Sequence[str], *, words: bool, budget: WordBudget
) -> Iterator[tuple[SafeString | None, SafeString | None, bool]]:
    """A replaced block's lines, the n-th old with the n-th new: their HTML with the changed words
    marked (when ``words``), and whether the comparison was word by word."""
    for left, right in zip_longest(before, after):
        if left is None or right is None or not words:
            yield (
                None if left is None else _whole(left),
                None if right is None else _whole(right),
                True,
            )
            continue
        diff = word_diff(left, right, budget=budget)
        yield spans_html(diff.before, "del"), spans_html(diff.after, "ins"), diff.exact


@dataclass(frozen=True, slots=True)
class SectionView:
    diff: SectionDiff
    lines: list[Line]
    unified: list[UnifiedLine]
    # Some changed line was too long to compare word by word (or the page's budget was spent).
    words_coarse: bool = False


def section_view(diff: SectionDiff, budget: WordBudget) -> SectionView:
    """Both layouts of one section. A coarse section's replaced block is not paired line by line
    (its lines are not aligned), so its words are not compared either."""
    lines: list[Line] = []
    unified: list[UnifiedLine] = []
    left_no = right_no = 0
    words_coarse = False
    for row in diff.rows:
        if row.tag == "equal":
            for text in row.before:
                left_no += 1
                right_no += 1
                html = _whole(text)
                lines.append(Line("equal", left_no, text, right_no, text, html, html))
                unified.append(UnifiedLine(" ", left_no, right_no, html))
            continue
        removed: list[UnifiedLine] = []
        added: list[UnifiedLine] = []
        pairs = _paired(row.before, row.after, words=not diff.coarse, budget=budget)
        for (left, right), (left_html, right_html, exact) in zip(
            zip_longest(row.before, row.after), pairs, strict=True
        ):
            words_coarse |= not exact
            left_no += left is not None
            right_no += right is not None
            lines.append(
                Line(
                    row.tag,
                    left_no if left is not None else None,
                    left,
                    right_no if right is not None else None,
                    right,
                    left_html,
                    right_html,
                )
            )
            if left_html is not None:
                removed.append(UnifiedLine("-", left_no, None, left_html))
            if right_html is not None:
                added.append(UnifiedLine("+", None, right_no, right_html))
        unified += removed + added
    return SectionView(diff, lines, unified, words_coarse)


def pretty(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def diff_layout(request: HttpRequest) -> DiffLayout:
    """``?layout=split|unified`` when given (and remembered in the session for the next
    comparison), else the last one chosen, else split."""
    asked = request.GET.get("layout", "")
    if asked in DiffLayout:
        request.session[DIFF_LAYOUT_SESSION_KEY] = asked
        return DiffLayout(asked)
    remembered = request.session.get(DIFF_LAYOUT_SESSION_KEY, "")
    return DiffLayout(remembered) if remembered in DiffLayout else DiffLayout.SPLIT


class DiffForm(forms.Form):
    before = forms.TypedChoiceField(coerce=int, label="Compare")
    after = forms.TypedChoiceField(coerce=int, label="with")

    def __init__(
        self,
        data: Mapping[str, Any] | None,
        *,
        versions: Sequence[PromptVersion],
        initial: Mapping[str, int],
    ) -> None:
        super().__init__(data, initial=initial)
        choices = [
            (v.number, f"v{v.number} ({v.get_status_display().lower()}) {v.message[:40]}")
            for v in versions
        ]
        self.fields["before"].choices = choices
        self.fields["after"].choices = choices


def diff(model_admin: PromptVersionAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    """Two versions of one prompt, split or unified; by default this one against its parent."""
    version = version_or_404(model_admin, request, object_id)
    versions = list(version_list(prompt=version.prompt))
    default_before = (
        version.parent.number
        if version.parent is not None
        else next((v.number for v in versions if v.number < version.number), version.number)
    )
    initial = {"before": default_before, "after": version.number}
    bound = "before" in request.GET or "after" in request.GET
    form = DiffForm(request.GET if bound else None, versions=versions, initial=initial)
    numbers = form.cleaned_data if bound and form.is_valid() else (initial if not bound else None)
    layout = diff_layout(request)
    result = None
    locales: dict[str, list[SectionView]] = {}
    budget = WordBudget()
    if numbers is not None:
        result = version_diff(
            before=version_get(prompt=version.prompt, number=numbers["before"]),
            after=version_get(prompt=version.prompt, number=numbers["after"]),
        )
        for section in result.templates:
            if not section.before and not section.after:
                continue  # a section empty in both versions has nothing to show
            locales.setdefault(section.locale, []).append(section_view(section, budget))
    shown = {"before": numbers["before"], "after": numbers["after"]} if numbers else {}
    context = page_context(
        model_admin,
        request,
        version,
        "Compare versions",
        form=form,
        result=result,
        locales=locales,
        layout=layout.value,
        layouts=[
            (choice.value, choice.value.capitalize(), "?" + urlencode({**shown, "layout": choice}))
            for choice in DiffLayout
        ],
        words_budget_spent=budget.exhausted,
        variables=[(d, pretty(d.before), pretty(d.after)) for d in result.variables]
        if result
        else [],
        model=[(d, pretty(d.before), pretty(d.after)) for d in result.model] if result else [],
    )
    return TemplateResponse(request, f"{TEMPLATES}/diff.html", context)
