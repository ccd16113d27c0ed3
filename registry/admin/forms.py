"""The admin's forms: a prompt's fields, and a draft edited as one piece of content.

A draft is edited on three forms at once (the version's own fields, the variables inline and the
templates inline), but the registry checks it as one ``VersionContent``: a template is only wrong
relative to the declared variables, and a variable only unused relative to the templates.
``DraftEditor`` joins the three: it assembles the content from their cleaned data, runs the same
``content_check`` the services run, and puts every problem next to the field its JSON pointer
names. Nothing here writes; ``PromptVersionAdmin.save_model`` hands the content to a service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django import forms
from django.conf import settings
from django.db.models import Model
from django.forms.fields import InvalidJSONInput
from django.forms.models import BaseInlineFormSet

from registry.content import ModelBinding, ModelTarget, VersionContent, content_check
from registry.errors import LocaleInvalid, Problem, Severity
from registry.locales import locale_normalize
from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable
from registry.providers import configured_providers
from registry.rendering import SECTIONS, Sections
from registry.selectors import version_list
from registry.services import DESCRIPTION_MAX, MAX_TAGS, TAG_PATTERN, prompt_snippet_check
from registry.snippets import snippet_references_check
from registry.strictjson import JSONRefused, strict_json_loads
from registry.variables import PLACES, VariableSpec, VariableType

# Where a problem under /model/<name> goes on the version form.
MODEL_FIELDS = {
    "provider": "provider",
    "model": "model_name",
    "parameters": "parameters",
    "response_schema": "response_schema",
    "fallbacks": "fallbacks",
    "tools": "tools",
    "tool_choice": "tool_choice",
    "parallel_tool_calls": "parallel_tool_calls",
    "cache": "cache",
    "guardrails": "guardrails",
}
# Problems about a locale tag belong on the locale field; the rest of a row's problems (an empty
# template) belong to the row.
LOCALE_CODES = frozenset({"invalid_locale", "duplicate_locale"})


def pointer_parts(pointer: str) -> list[str]:
    """The reference tokens of a JSON Pointer (RFC 6901), unescaped."""
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]


def text_field(rows: int = 4) -> forms.CharField:
    """A section's textarea. Browsers send CRLF line breaks; the registry stores LF, or every admin
    save would change the text's hash and turn every translation stale. Whitespace is kept: it is
    part of a template, as the API keeps it."""
    return forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": rows, "cols": 100, "class": "vLargeTextField"}),
    )


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- prompts ----------------------------------------------------------------------------------


class PromptForm(forms.ModelForm):
    """A prompt's fields. The key's pattern and uniqueness come from the model; the rest uses the
    rules ``prompt_create`` applies, so the service's refusal never reaches the author as a 500."""

    tags = forms.CharField(
        required=False,
        help_text="Comma-separated, e.g. support, billing.",
        widget=forms.TextInput(attrs={"size": 60}),
    )

    class Meta:
        model = Prompt
        fields = ["key", "description", "default_locale", "tags", "is_snippet"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3, "cols": 80})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "description" in self.fields:
            self.fields["description"].max_length = DESCRIPTION_MAX
        if self.instance.pk is not None and not self.is_bound:
            self.initial["tags"] = ", ".join(self.instance.tags or [])

    def clean_default_locale(self) -> str:
        try:
            return locale_normalize(self.cleaned_data["default_locale"])
        except LocaleInvalid as exc:
            raise forms.ValidationError(exc.message) from exc

    def clean_is_snippet(self) -> bool:
        """Marking or unmarking a snippet, refused in place as the service would refuse it."""
        value = bool(self.cleaned_data.get("is_snippet"))
        if self.instance.pk is not None and value != self.instance.is_snippet:
            problems = prompt_snippet_check(prompt=self.instance, is_snippet=value)
            if problems:
                raise forms.ValidationError(problems[0].detail)
        return value

    def clean_tags(self) -> list[str]:
        tags = [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]
        bad = [t for t in tags if not TAG_PATTERN.fullmatch(t)]
        if bad:
            raise forms.ValidationError(
                "A tag is 1 to 50 lowercase letters, digits, '-', '_', '.' or ':'; not %(bad)s.",
                params={"bad": ", ".join(bad)},
            )
        if len(set(tags)) > MAX_TAGS:
            raise forms.ValidationError(f"At most {MAX_TAGS} tags.")
        return sorted(set(tags))


# --- the draft editor -------------------------------------------------------------------------


class DraftEditor:
    """One request's version form and inline formsets, checked together as one content.

    Why the *main form's* ``clean()`` runs the check: ``ModelAdmin._changeform_view`` builds the
    inline formsets before it validates the main form, and only asks ``all_valid(formsets)``
    after it. So when the main form cleans, every part exists and nothing has been decided: the
    editor validates the formsets (their result is cached, Django's own ``all_valid`` reuses
    it), assembles the content, runs ``content_check`` and adds each error to the field its
    pointer names. An error added to an inline form makes ``all_valid`` fail, an error on the
    main form makes ``is_valid`` fail: nothing is saved, and the page shows every problem at once.

    The admin creates one editor per request and hands it to the form class (``get_form``) and
    to each formset (``get_formset_kwargs``); the formsets register themselves by model. Should a
    future Django build the formsets after validating the form, ``formset()`` raises instead of
    letting an unchecked draft through (the service would still refuse it, with a 500).
    """

    def __init__(self) -> None:
        self.formsets: dict[type[Model], BaseInlineFormSet] = {}
        self.content: VersionContent | None = None  # set once the check found no error
        self.warnings: list[Problem] = []
        self.errors: list[Problem] = []  # every error the domain check found, placed or not
        self._field_errors: dict[int, set[str]] = {}

    def formset(self, model: type[Model]) -> BaseInlineFormSet:
        try:
            return self.formsets[model]
        except KeyError as exc:
            # A programming error, not an input error: the admin wires both inlines.
            raise RuntimeError(f"The draft editor has no {model.__name__} formset.") from exc

    def check(self, form: VersionForm, prompt: Prompt | None) -> None:
        """Assemble the content, run the domain check, put each problem in place.

        1. Validate both formsets (field errors first: a bad JSON default, a bad locale tag).
        2. Take the rows that will exist: not marked for deletion, not untouched extra rows;
           a variable's position is its row's order.
        3. Run ``content_check`` with the prompt's default locale, the section size cap and the
           configured providers, as the service will.
        4. Route each error by pointer; keep warnings for after the save.
        The check runs even when some field already has an error, so the author sees everything
        in one round; a problem is not repeated on a field that already shows one.
        """
        variables_fs = self.formset(Variable)
        templates_fs = self.formset(LocalizedTemplate)
        variables_fs.is_valid()
        templates_fs.is_valid()
        variable_forms = kept_forms(variables_fs)
        # A row whose locale is not a valid tag cannot be keyed; its field says why.
        template_forms = {
            f.cleaned_data["locale"]: f
            for f in kept_forms(templates_fs)
            if f.cleaned_data.get("locale")
        }
        content = VersionContent(
            variables=tuple(variable_spec(f.cleaned_data) for f in variable_forms),
            model=form.binding(),
            templates={
                locale: Sections(**{s: f.cleaned_data.get(s, "") for s in SECTIONS})
                for locale, f in template_forms.items()
            },
        )
        problems = content_check(
            content,
            default_locale=prompt.default_locale if prompt is not None else "",
            max_section_chars=settings.PROMPT_SECTION_MAX_CHARS,
            max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
            max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
            providers=configured_providers(),
        )
        if prompt is None:
            # No prompt chosen yet (its field says so): the templates are still checked, but
            # which locale must be there is the prompt's to say.
            problems = [p for p in problems if p.code != "missing_default_locale"]
        else:
            # What it includes, as the save's service will check it (registry.snippets).
            problems += snippet_references_check(prompt=prompt, content=content)
        self.warnings = [p for p in problems if p.severity is Severity.WARNING]
        errors = [p for p in problems if p.severity is Severity.ERROR]
        self.errors = errors
        # The fields that failed their own validation, before the domain check adds to them.
        self._field_errors = {
            id(f): set(f.errors) for f in [form, *variable_forms, *template_forms.values()]
        }
        for problem in errors:
            self._place(problem, form, variable_forms, template_forms)
        if not errors:
            self.content = content

    def _place(
        self,
        problem: Problem,
        form: VersionForm,
        variable_forms: list[forms.Form],
        template_forms: Mapping[str, forms.Form],
    ) -> None:
        parts = pointer_parts(problem.pointer)
        text = problem.detail
        match parts:
            case ["variables", index, *rest] if index.isdigit() and int(index) < len(
                variable_forms
            ):
                self._add(variable_forms[int(index)], rest[0] if rest else None, text)
            case ["templates", locale, *rest] if locale in template_forms:
                field = rest[0] if rest else ("locale" if problem.code in LOCALE_CODES else None)
                self._add(template_forms[locale], field, text)
            case ["templates", *_]:
                # non_form_errors() returns the formset's own list, which is_valid() reads.
                self.formset(LocalizedTemplate).non_form_errors().append(text)
            case ["variables", *_]:
                self.formset(Variable).non_form_errors().append(text)
            case ["model", name, *rest] if name in MODEL_FIELDS:
                if name == "fallbacks" and rest and rest[0].isdigit():
                    text = f"Fallback {int(rest[0]) + 1}: {text}"
                elif name == "response_schema" and rest:
                    # Where in the schema: a schema can be long, and the field holds all of it.
                    text = f"{text} (at {problem.pointer.removeprefix('/model/response_schema')})"
                elif name == "tools" and rest and rest[0].isdigit():
                    at = "/".join(rest[1:])
                    text = f"Tool {int(rest[0]) + 1}: {text}" + (f" (at {at})" if at else "")
                self._add(form, MODEL_FIELDS[name], text)
            case _:
                form.add_error(None, text)

    def _add(self, form: forms.Form, field: str | None, text: str) -> None:
        """Adds ``text`` to ``field`` (or to the row when it has no such field). A field that
        failed its own validation (``This field is required``) is not told again about the same
        value by the domain check."""
        if field is not None and field not in form.fields:
            field = None
        if field is not None and field in self._field_errors.get(id(form), ()):
            return
        form.add_error(field, text)


def kept_forms(formset: BaseInlineFormSet) -> list[forms.Form]:
    """The rows the draft will have: in order, without deleted rows and untouched extra rows."""
    kept = []
    for form in formset.forms:
        data = getattr(form, "cleaned_data", None) or {}
        if data.get("DELETE"):
            continue
        if form.instance.pk is None and not form.has_changed():
            continue
        kept.append(form)
    return kept


def variable_spec(data: Mapping[str, Any]) -> VariableSpec:
    raw_type = data.get("type") or VariableType.STRING
    return VariableSpec(
        name=data.get("name", ""),
        type=VariableType(raw_type),
        required=bool(data.get("required", False)),
        default=data.get("default"),
        description=data.get("description", ""),
        after=data.get("after") or None,
    )


class DraftInlineFormSet(BaseInlineFormSet):
    """An inline formset that registers with the request's ``DraftEditor``. Its rows are never
    saved by Django: the service writes the whole content at once."""

    def __init__(self, *args: Any, editor: DraftEditor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if editor is not None:
            editor.formsets[self.model] = self


class VariableForm(forms.ModelForm):
    # JSON, typed by the row's type; text that is not JSON is taken literally for a string.
    default = forms.CharField(
        required=False,
        strip=False,
        widget=forms.TextInput(attrs={"size": 18}),
        help_text='JSON: "friendly", 3, true, ["a", "b"]',
    )
    # A history's place (a messages variable): the section it follows. Any value reaches the
    # content check, which says in its own words that only a history has a place.
    after = forms.ChoiceField(
        required=False,
        choices=[("", "—"), *((place, place) for place in PLACES)],
        help_text="messages only: the section the history follows (— : after the context)",
    )

    class Meta:
        model = Variable
        fields = ["name", "type", "required", "default", "after", "description"]
        widgets = {"description": forms.TextInput(attrs={"size": 40})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and self.instance.default is not None:
            self.initial["default"] = json.dumps(self.instance.default, ensure_ascii=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        raw = data.get("default")
        if raw is None or not raw.strip():
            data["default"] = None
            return data
        try:
            data["default"] = strict_json_loads(raw)
        except JSONRefused as exc:
            if exc.malformed and not exc.errors and data.get("type") == VariableType.STRING:
                data["default"] = raw
            elif exc.errors:
                self.add_error("default", json_refusal(exc))
            else:
                self.add_error("default", 'Enter JSON, e.g. 3, true, ["a", "b"] or {"k": 1}.')
        return data


def json_refusal(exc: JSONRefused) -> str:
    """What the strict parser refused, for a form field: the first value and where it is."""
    first = exc.errors[0]
    return f"{first.detail} (at {first.pointer})" if first.pointer else first.detail


class TemplateForm(forms.ModelForm):
    system = text_field(3)
    context = text_field(4)
    instruction = text_field(6)
    format = text_field(3)

    class Meta:
        model = LocalizedTemplate
        fields = ["locale", *SECTIONS]  # source_hash is the service's business

    def clean_locale(self) -> str:
        try:
            return locale_normalize(self.cleaned_data["locale"])
        except LocaleInvalid as exc:
            raise forms.ValidationError(exc.message) from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for section in SECTIONS:
            if isinstance(data.get(section), str):
                data[section] = normalize_newlines(data[section])
        return data


class StrictJSONField(forms.JSONField):
    """A JSON field read by the API's strict parser (``registry.strictjson``): no ``NaN`` or
    infinities, NULs, unpaired surrogates or deep nesting, which PostgreSQL would refuse on save
    (a 500) or the renderer could not write back."""

    def to_python(self, value: Any) -> Any:
        if self.disabled or value in self.empty_values or not isinstance(value, str):
            return super().to_python(value)
        try:
            strict_json_loads(value)
        except JSONRefused as exc:
            if exc.errors:
                raise forms.ValidationError(json_refusal(exc), code="invalid") from exc
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid") from exc
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Shown again as typed: decoded and dumped back, an unpaired surrogate could not be
        # written into the page.
        if isinstance(data, str) and not self.disabled:
            try:
                strict_json_loads(data)
            except JSONRefused:
                return InvalidJSONInput(data)
        return super().bound_data(data, initial)


class OptionalJSONField(StrictJSONField):
    """A JSON field that shows nothing, rather than ``null``, when there is no value."""

    def prepare_value(self, value: Any) -> Any:
        return "" if value is None else super().prepare_value(value)


class VersionForm(forms.ModelForm):
    """A draft's own fields: its prompt (when opening one), message and model binding.

    ``number``, ``status``, ``content_hash`` and the labels are the services' to set. ``loaded_hash``
    carries the content hash the author opened, so saving over a colleague's newer save is refused
    (the admin's ``If-Match``)."""

    editor: DraftEditor | None = None  # bound per request by PromptVersionAdmin.get_form
    conflict_tag: str | None = None  # the newer save's tag, when this one was refused over it
    loaded_hash = forms.CharField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = PromptVersion
        fields = [
            "prompt",
            "message",
            "provider",
            "model_name",
            "parameters",
            "response_schema",
            "fallbacks",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "cache",
            "guardrails",
        ]
        widgets = {
            "message": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "parameters": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "response_schema": forms.Textarea(attrs={"rows": 3, "cols": 80}),
            "fallbacks": forms.Textarea(attrs={"rows": 2, "cols": 80}),
            "tools": forms.Textarea(attrs={"rows": 4, "cols": 80}),
            "tool_choice": forms.Textarea(attrs={"rows": 1, "cols": 80}),
            "parallel_tool_calls": forms.Textarea(attrs={"rows": 1, "cols": 80}),
            "cache": forms.Textarea(attrs={"rows": 1, "cols": 80}),
            "guardrails": forms.Textarea(attrs={"rows": 4, "cols": 80}),
        }
        field_classes = {
            "parameters": StrictJSONField,
            "response_schema": OptionalJSONField,
            "fallbacks": StrictJSONField,
            "tools": StrictJSONField,
            "tool_choice": OptionalJSONField,
            "parallel_tool_calls": OptionalJSONField,
            "cache": OptionalJSONField,
            "guardrails": OptionalJSONField,
        }
        help_texts = {
            "parameters": 'JSON object, e.g. {"temperature": 0.2, "max_tokens": 500}.',
            "response_schema": "Optional JSON Schema the model's answer must match.",
            "fallbacks": 'JSON list, e.g. [{"provider": "local", "model": "echo-2"}].',
            "tools": 'JSON list of tools in OpenAI\'s format, e.g. [{"type": "function", '
            '"function": {"name": "order_lookup", "description": "…", "parameters": '
            '{"type": "object", "properties": {…}}, "strict": true}}].',
            "tool_choice": 'Optional: "auto", "none", "required" or {"type": "function", '
            '"function": {"name": "order_lookup"}}.',
            "parallel_tool_calls": "Optional: true or false (with tools only).",
            "cache": 'Optional response cache, e.g. {"exact": {"ttl_seconds": 3600}}: a repeated '
            "request is answered without a model call (docs/runs.md, Response cache).",
            "guardrails": 'Optional guardrail policy, e.g. {"input": {"injection": {"action": '
            '"refuse"}, "pii": {"action": "redact"}}, "output": {"pii": {"action": "redact"}}} '
            "(docs/guardrails.md).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and not self.is_bound:
            self.initial["loaded_hash"] = self.instance.edit_tag

    def clean_parameters(self) -> dict[str, Any]:
        value = self.cleaned_data.get("parameters")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON object.")
        return value

    def clean_response_schema(self) -> dict[str, Any] | None:
        value = self.cleaned_data.get("response_schema")
        if value in (None, "", {}):
            return None
        if not isinstance(value, dict):
            raise forms.ValidationError("Enter a JSON Schema object, or leave it empty.")
        return value

    def clean_fallbacks(self) -> list[dict[str, Any]]:
        value = self.cleaned_data.get("fallbacks")
        if value in (None, ""):
            return []
        if not isinstance(value, list) or not all(
            isinstance(f, dict)
            and isinstance(f.get("provider", ""), str)
            and isinstance(f.get("model", ""), str)
            and isinstance(f.get("parameters", {}), dict)
            for f in value
        ):
            raise forms.ValidationError(
                'Enter a JSON list of {"provider": ..., "model": ..., "parameters": {...}}.'
            )
        return value

    def clean_tools(self) -> list[dict[str, Any]]:
        value = self.cleaned_data.get("tools")
        if value in (None, ""):
            return []
        if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
            raise forms.ValidationError(
                'Enter a JSON list of {"type": "function", "function": {"name": ...}}.'
            )
        return value

    def clean_parallel_tool_calls(self) -> bool | None:
        value = self.cleaned_data.get("parallel_tool_calls")
        if value in (None, ""):
            return None
        if not isinstance(value, bool):
            raise forms.ValidationError("Enter true or false, or leave it empty.")
        return value

    def clean_cache(self) -> Any:
        # What the policy must be is registry.content's to say, at /model/cache: kept as given.
        value = self.cleaned_data.get("cache")
        return None if value in (None, "") else value

    def clean_guardrails(self) -> Any:
        # Likewise: registry.guardrails says what is wrong, at /model/guardrails.
        value = self.cleaned_data.get("guardrails")
        return None if value in (None, "") else value

    def binding(self) -> ModelBinding:
        """The model binding as far as the fields are valid (a broken field reads as empty)."""
        data = self.cleaned_data
        return ModelBinding(
            provider=data.get("provider") or "",
            model=data.get("model_name") or "",
            parameters=data.get("parameters") or {},
            response_schema=data.get("response_schema"),
            fallbacks=tuple(
                ModelTarget(
                    provider=f.get("provider") or "",
                    model=f.get("model") or "",
                    parameters=f.get("parameters") or {},
                )
                for f in data.get("fallbacks") or ()
            ),
            tools=tuple(data.get("tools") or ()),
            tool_choice=data.get("tool_choice"),
            parallel_tool_calls=data.get("parallel_tool_calls"),
            cache=data.get("cache"),
            guardrails=data.get("guardrails"),
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        adding = self.instance.pk is None
        prompt = data.get("prompt") if adding else self.instance.prompt
        if adding and prompt is not None:
            draft = version_list(prompt=prompt).filter(status=PromptVersion.Status.DRAFT).first()
            if draft is not None:
                self.add_error(
                    "prompt",
                    f"{prompt.key} has an open draft already (version "
                    f"{draft.number}); edit, commit or discard it first.",
                )
        if not adding:
            loaded = data.get("loaded_hash")
            # "Save mine over theirs": the author saw the conflict and chose to overwrite the
            # save they were shown (its tag); a save newer than that one is refused again.
            overwrite = self.data.get("_overwrite") if self.is_bound else None
            if loaded and overwrite and overwrite == self.instance.edit_tag:
                data["loaded_hash"] = loaded = overwrite
            if loaded and loaded != self.instance.edit_tag:
                self.conflict_tag = self.instance.edit_tag
                who = self.instance.author_label or "someone"
                self.add_error(
                    None,
                    f"Someone saved this draft after you opened it ({who}); nothing was saved. "
                    "Your text is still here: compare it with the saved draft (open this page "
                    "in a new tab), then save yours over it, or reload to take theirs.",
                )
        if self.editor is not None:
            self.editor.check(self, prompt)
        return data
