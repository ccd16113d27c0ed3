"""The workbench: a draft written on one page (locale tabs, code editors, a live preview beside
them, variables found in the templates, the model binding with pickers), and its preview
endpoint.

The page is the draft's change form: Django's change view builds, checks (``DraftEditor``) and
saves it through the services as before; ``workbench_context`` only lays the same forms out, and
lists every error at the top with a link to its field and line. ``preview`` is the JSON endpoint
the page calls as the author types: it checks the unsaved content with ``content_check`` and
``snippet_references_check`` and renders it with ``content_render`` (includes too: a snippet
that follows renders its latest committed version), the checks a save runs and the render path
of the preview page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.forms import BaseInlineFormSet, Form
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from registry.content import VersionContent, content_check, content_shape_check
from registry.errors import (
    LocaleInvalid,
    LocaleUnavailable,
    Problem,
    RenderFailed,
    Severity,
    TemplateInvalid,
    VariablesInvalid,
)
from registry.locales import locale_normalize, locale_pick
from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable
from registry.providers import configured_providers, priced_models
from registry.rendering import SECTIONS, template_variables
from registry.selectors import (
    TranslationState,
    content_render,
    draft_translation_status,
    version_translation_status,
)
from registry.snippets import snippet_references_check
from registry.strictjson import JSONRefused, strict_json_loads
from registry.variables import VariableType

from .display import translation_badges
from .forms import MODEL_FIELDS, DraftEditor, pointer_parts
from .samples import samples_remember

if TYPE_CHECKING:
    from .versions import PromptVersionAdmin

TEMPLATE = "admin/registry/promptversion/workbench.html"
PREVIEW_DEBOUNCE_MS = 400


# --- the page ---------------------------------------------------------------------------------

# A template problem's detail starts with its place ("The format section (en), line 2: …", for the
# API and the preview page, where nothing else says where). Beside a link that names the place
# already ("en · format, line 2"), the message is said once: without it.
_SECTION_NAMES = "|".join(SECTIONS)
_PLACE = re.compile(rf"^The (?:{_SECTION_NAMES}) section(?: \([^)]*\))?(?:, line \d+)?: ")


def without_place(detail: str) -> str:
    """``detail`` without its leading "The <section> section (<locale>), line N: "."""
    return _PLACE.sub("", detail, count=1) or detail


@dataclass(frozen=True, slots=True)
class ErrorLink:
    """One error at the top of the page: what, where (a label), and the element it is about."""

    text: str
    where: str
    anchor: str  # the id of the field (or panel) to go to; empty: the page as a whole
    line: int | None = None


@dataclass(frozen=True, slots=True)
class LocaleTab:
    form: Form
    locale: str
    blank: bool  # an untouched extra row: hidden behind "Add a locale" when scripts run
    source: bool
    stale: bool
    error_count: int


def formset_of(context: Mapping[str, Any], model: type) -> BaseInlineFormSet | None:
    """The inline formset of ``model``; None when the user may not edit those rows."""
    return next(
        (f.formset for f in context["inline_admin_formsets"] if f.formset.model is model), None
    )


def is_blank_extra(form: Form, field: str) -> bool:
    """A row the author has not filled in: no saved row behind it, no value in ``field``."""
    return form.instance.pk is None and not (form[field].value() or "").strip() and not form.errors


def error_links(
    form: Form,
    variables: BaseInlineFormSet,
    templates: BaseInlineFormSet,
    editor: DraftEditor | None,
) -> list[ErrorLink]:
    """Every error on the page, in page order, each with where it is and how to get there.

    The domain check's errors carry the line of the template they are about; a field's own
    errors (JSON that does not parse, a missing prompt) carry none."""
    lines = {p.detail: p.line for p in (editor.errors if editor else ()) if p.line}
    links = [ErrorLink(str(e), "Draft", "") for e in form.non_field_errors()]
    for name in form.fields:
        for error in form.errors.get(name, ()):
            links.append(ErrorLink(error, str(form.fields[name].label), form[name].auto_id))
    for error in templates.non_form_errors():
        links.append(ErrorLink(error, "Locales", "wb-locales"))
    for i, row in enumerate(templates.forms):
        locale = row["locale"].value() or f"locale {i + 1}"
        for name, errors in row.errors.items():
            anchor = row[name].auto_id if name in row.fields else f"wb-locale-{i}"
            where = locale if name == "__all__" else f"{locale} · {name}"
            links += [ErrorLink(without_place(e), where, anchor, lines.get(e)) for e in errors]
    for error in variables.non_form_errors():
        links.append(ErrorLink(error, "Variables", "wb-variables"))
    for i, row in enumerate(variables.forms):
        label = row["name"].value() or f"variable {i + 1}"
        for name, errors in row.errors.items():
            anchor = row[name].auto_id if name in row.fields else "wb-variables"
            where = f"Variable {label}" + ("" if name == "__all__" else f" · {name}")
            links += [ErrorLink(e, where, anchor) for e in errors]
    return links


def prompt_of(form: Form, obj: PromptVersion | None) -> Prompt | None:
    if obj is not None:
        return obj.prompt
    value = form["prompt"].value() if "prompt" in form.fields else None
    if value in (None, ""):
        return None
    return Prompt.objects.filter(pk=value).first() if str(value).isdigit() else None


def workbench_context(
    request: HttpRequest,
    context: Mapping[str, Any],
    obj: PromptVersion | None,
    editor: DraftEditor | None,
) -> dict[str, Any] | None:
    """What the workbench template needs besides the change form's own context; None when the
    user may not edit the variables and templates (the stock form shows what they may)."""
    form = context["adminform"].form
    variables = formset_of(context, Variable)
    templates = formset_of(context, LocalizedTemplate)
    if variables is None or templates is None:
        return None
    prompt = prompt_of(form, obj)
    default_locale = prompt.default_locale if prompt is not None else ""
    statuses = version_translation_status(obj) if obj is not None else []
    stale = {s.locale for s in statuses if s.state is TranslationState.STALE}
    tabs = []
    for row in templates.forms:
        locale = (row["locale"].value() or "").strip()
        tabs.append(
            LocaleTab(
                form=row,
                locale=locale,
                blank=is_blank_extra(row, "locale"),
                source=bool(locale) and locale == default_locale,
                stale=locale in stale,
                error_count=sum(len(e) for e in row.errors.values()),
            )
        )
    configured = sorted(configured_providers() or ())
    current = (form["provider"].value() or "").strip()
    return {
        "title": "New version" if obj is None else "Edit draft",
        "saved_translations": translation_badges(statuses) if statuses else "",
        "subtitle": str(obj) if obj is not None else "",
        "templates_formset": templates,
        "variables_formset": variables,
        "locale_tabs": tabs,
        "variable_rows": [(row, is_blank_extra(row, "name")) for row in variables.forms],
        "sections": SECTIONS,
        "variable_types": [t.value for t in VariableType],
        "error_links": error_links(form, variables, templates, editor),
        "conflict_tag": getattr(form, "conflict_tag", None),
        "wb_prompt": prompt,
        "providers": configured,
        "provider_unconfigured": current if current and current not in configured else "",
        "models_by_provider": priced_models(),
        "workbench_config": {
            "previewUrl": reverse("admin:registry_promptversion_workbench_preview"),
            "prompt": prompt.pk if prompt is not None else None,
            "version": obj.pk if obj is not None else None,
            "defaultLocale": default_locale,
            "debounceMs": PREVIEW_DEBOUNCE_MS,
        },
    }


# --- the preview endpoint ---------------------------------------------------------------------


def refusal(status: int, detail: str) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status)


def problem_json(problem: Problem) -> dict[str, Any]:
    """A problem with where it belongs on the page: locale and section for a template, the
    form field for the binding, the row and field for a declaration."""
    data = problem.as_dict()
    data["severity"] = str(problem.severity)
    match pointer_parts(problem.pointer):
        case ["templates", locale, *rest]:
            data["locale"] = locale
            data["section"] = rest[0] if rest and rest[0] in SECTIONS else ""
            # Said after a link that names the place: the detail without its own.
            data["message"] = without_place(problem.detail)
        case ["model", name, *_] if name in MODEL_FIELDS:
            data["field"] = MODEL_FIELDS[name]
        case ["variables", index, *rest] if index.isdigit():
            data["variable"] = int(index)
            data["field"] = rest[0] if rest else ""
        case ["values", name, *_]:  # a history's entry (/values/history/3/role) too
            data["value"] = name
    return data


def variable_uses(content: VersionContent) -> dict[str, dict[str, Any]]:
    """Every variable the templates use, by name: its first use and the type it suggests."""
    uses: dict[str, dict[str, Any]] = {}
    for locale, sections in content.templates.items():
        for section in SECTIONS:
            for use in template_variables(getattr(sections, section)):
                uses.setdefault(
                    use.name,
                    {
                        "name": use.name,
                        "kind": use.kind,
                        "locale": locale,
                        "section": section,
                        "line": use.line,
                    },
                )
    return uses


def sample_values(doc: Mapping[str, Any]) -> dict[str, Any]:
    values = doc.get("values")
    return dict(values) if isinstance(values, Mapping) else {}


def preview(model_admin: PromptVersionAdmin, request: HttpRequest) -> JsonResponse:
    """POST ``{prompt, version, locale, values, content}`` (content as the authoring API's
    version document) → the problems of the whole content, the variables to declare or unused,
    each locale's translation state as a save would leave it, and the locale's chat messages
    rendered with the sample values. Staff only (``admin_view``), CSRF-protected, POST only,
    bounded like a form post; changes nothing."""
    if request.method != "POST":
        response = refusal(405, "POST the draft's content to preview it.")
        response["Allow"] = "POST"
        return response
    if not (model_admin.has_add_permission(request) or model_admin.has_change_permission(request)):
        raise PermissionDenied
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
        return refusal(413, f"The preview takes at most {limit:,} bytes, as a save does.")
    try:
        doc = strict_json_loads(request.body.decode("utf-8"))
    except (JSONRefused, UnicodeDecodeError):
        return refusal(400, "Send the draft as a JSON object.")
    if not isinstance(doc, Mapping) or not isinstance(doc.get("content"), Mapping):
        return refusal(400, "Send {prompt, locale, values, content} as a JSON object.")
    prompt_id, version_id = doc.get("prompt"), doc.get("version")
    prompt = Prompt.objects.filter(pk=prompt_id).first() if type(prompt_id) is int else None
    if prompt is None:
        return refusal(400, "Choose the prompt first: its default locale decides what is checked.")
    version = (
        PromptVersion.objects.filter(pk=version_id, prompt=prompt).first()
        if type(version_id) is int
        else None
    )
    shape = content_shape_check(doc["content"])
    if shape:
        return JsonResponse({"problems": [problem_json(p) for p in shape], "render": None})
    try:
        content = VersionContent.from_dict(doc["content"])
    except TemplateInvalid as exc:
        return JsonResponse({"problems": [problem_json(p) for p in exc.problems], "render": None})
    problems = content_check(
        content,
        default_locale=prompt.default_locale,
        max_section_chars=settings.PROMPT_SECTION_MAX_CHARS,
        max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
        max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
        providers=configured_providers(),
    )
    problems += snippet_references_check(prompt=prompt, content=content)
    declared = [v.name for v in content.variables]
    # A history is inserted as messages: no template needs to use it.
    inserted = {v.name for v in content.variables if v.type == VariableType.MESSAGES}
    uses = variable_uses(content)
    # A section that does not parse may use any declared variable: flag none as unused then.
    parsed = not any(p.code in ("template_syntax", "section_too_long") for p in problems)
    answer: dict[str, Any] = {
        "undeclared": [u for name, u in uses.items() if name not in declared],
        "unused": [n for n in declared if n not in uses and n not in inserted] if parsed else [],
        "translations": [],
        "render": None,
    }
    if not any(p.code in ("invalid_locale", "duplicate_locale") for p in problems):
        answer["translations"] = [
            {"locale": s.locale, "state": str(s.state)}
            for s in draft_translation_status(prompt=prompt, version=version, content=content)
        ]
    values = sample_values(doc)
    render_problems, answer["render"] = render_for_preview(
        content, prompt, doc.get("locale"), values, problems
    )
    if version is not None:  # the playground starts from the draft's last preview
        locale = doc.get("locale")
        samples_remember(
            request,
            version_id=version.pk,
            values=values,
            locale=locale if isinstance(locale, str) else "",
        )
    answer["problems"] = [problem_json(p) for p in [*problems, *render_problems]]
    return JsonResponse(answer)


def render_for_preview(
    content: VersionContent,
    prompt: Prompt,
    locale: object,
    values: Mapping[str, Any],
    problems: Sequence[Problem],
) -> tuple[list[Problem], dict[str, Any] | None]:
    """The chosen locale rendered with the sample values, as the preview page renders a saved
    version; not attempted while the declarations or that locale's templates have errors (the
    problems already say what to fix)."""
    requested = locale if isinstance(locale, str) and locale else prompt.default_locale
    try:
        chosen = locale_pick(
            locale_normalize(requested), content.templates.keys(), default=prompt.default_locale
        )
    except (LocaleInvalid, LocaleUnavailable) as exc:
        return [Problem("locale_unavailable", exc.message, "/locale")], None
    blocking = [
        p
        for p in problems
        if p.severity is Severity.ERROR
        and (
            p.pointer.startswith("/variables")
            or p.pointer.startswith(f"/templates/{chosen}/")
            or p.pointer == f"/templates/{chosen}"
        )
    ]
    if blocking:
        return [], {"locale": chosen, "blocked": True, "messages": []}
    try:
        result = content_render(
            content=content,
            default_locale=prompt.default_locale,
            locale=requested,
            variables=values,
        )
    except VariablesInvalid as exc:
        # The sample values' problems, pointed at the sample inputs, not at the declarations.
        return [
            Problem(p.code, p.detail, "/values/" + "/".join(pointer_parts(p.pointer)[1:]), p.line)
            for p in exc.problems
        ], {"locale": chosen, "blocked": True, "messages": []}
    except (TemplateInvalid, RenderFailed) as exc:
        return list(exc.problems), {"locale": chosen, "blocked": True, "messages": []}
    return [], {
        "locale": result.locale,
        "requested_locale": result.requested_locale,
        "blocked": False,
        "messages": result.messages,
        "rendered": result.rendered.as_dict(),
    }
