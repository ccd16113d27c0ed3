"""Serializers shared by several views: the shapes of a version's content on the wire.

Views nest their own ``InputSerializer``/``OutputSerializer`` (STYLE R11); these are the parts more
than one of them uses. They check shape only (types, presence); what the content *means* (valid
templates, declared variables, known parameters) is the registry's ``content_check``, so the admin,
the importer and the API refuse the same things with the same words.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent
from rest_framework import serializers

from evaluations.canary import policy as canary_policy
from registry import labels
from registry.content import VersionContent
from registry.errors import Problem
from registry.models import PromptVersion
from registry.rendering import Sections
from registry.selectors import (
    TranslationStatus,
    version_check,
    version_content,
    version_translation_status,
)
from registry.variables import PLACES, VariableType

from .fields import AbsentWhenNullChoiceField, AbsentWhenNullIntegerField

# --- Strict fields -------------------------------------------------------------------------------
# DRF's fields coerce: a CharField stores 424242 as "424242", a BooleanField reads "yes" and 1 as
# true, an IntegerField reads "7" as 7. The schema promises a JSON type for each field, and a
# client that sends another has a bug it should hear about rather than data stored in a shape it
# did not send. So every field of a JSON body is one of these: the value must already be of the
# documented JSON type (a 400 ``validation-error`` pointing at it), then DRF's own checks run.
# Query parameters are text on the wire and keep DRF's parsing (``?against=3``).
#
# ``pattern`` (an ECMA-262 regular expression, anchored; ``(?!\n)$`` because Python's ``$``, which
# Python validators and generators use, also matches before a trailing newline) is what the
# schema publishes for a
# string field: the registry checks the same rule itself with its own problem codes
# (``invalid_key``, ``invalid_locale``...), so the schema tells clients and generators what the
# server refuses. ``tests/api/test_strict_fields.py`` holds each pattern against its rule.

# A prompt key (registry.models.PROMPT_KEY_PATTERN): parts of [a-z0-9_-] joined by single dots.
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*(?!\n)$"
KEY_MAX_CHARS = 150
# An environment name (releases.models.ENVIRONMENT_NAME_PATTERN), at most 50 characters.
ENVIRONMENT_PATTERN = r"^[a-z][a-z0-9-]*(?!\n)$"
ENVIRONMENT_MAX_CHARS = 50
# A BCP 47 tag as promptregistry.core.locales reads it ("_" stands for "-"; case-insensitive).
LOCALE_PATTERN = (
    r"^(?:[A-Za-z]{2,3}|[A-Za-z]{5,8})(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*(?!\n)$"
)
LOCALE_MAX_CHARS = 64
# A dataset's name (evaluations.models.DATASET_NAME_PATTERN), at most 100 characters.
DATASET_PATTERN = r"^[a-z0-9][a-z0-9._-]*(?!\n)$"
DATASET_MAX_CHARS = 100
# A tag (registry.services.TAG_PATTERN), at most 50 characters.
TAG_PATTERN = r"^[a-z0-9][a-z0-9_.:-]*(?!\n)$"
TAG_MAX_CHARS = 50
# A provider's name (runs.models.PROVIDER_NAME_PATTERN). Which names are configured is data, not
# shape (providers are added in the admin or with `manage.py provider add`), so the schema gives
# the rule for a name and an unconfigured one is refused as content (``unknown_provider``).
PROVIDER_PATTERN = r"^[a-z0-9][a-z0-9_.-]*(?!\n)$"
PROVIDER_MAX_CHARS = 63
# A declared variable's name (registry.variables): an ASCII identifier, letter first.
VARIABLE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*(?!\n)$"
# A percent with at most two decimals, 0-100, when sent as a string ("12.5").
PERCENT_PATTERN = r"^(?:100(?:\.0{1,2})?|[0-9]{1,2}(?:\.[0-9]{1,2})?)(?!\n)$"
# An id a caller chooses (an event's id): no control or invisible character, not only spaces; and a
# label (an experiment variant's name): the same, with no space at either end (registry.labels).
ID_PATTERN = labels.ID_PATTERN
LABEL_PATTERN = labels.LABEL_PATTERN
# Names the release state gives its own arms: no experiment variant may take one.
RESERVED_VARIANT_NAMES = ("stable", "canary")
VARIANT_NAME_MAX_CHARS = 50

# The path parameters and the runtime path's query and body, as the schema publishes them on every
# route (api.schema.path_parameters for the DRF routes, api.runtime_schema for the runtime path).
KEY_SCHEMA = {"type": "string", "pattern": KEY_PATTERN, "maxLength": KEY_MAX_CHARS}
ENVIRONMENT_SCHEMA = {
    "type": "string",
    "pattern": ENVIRONMENT_PATTERN,
    "maxLength": ENVIRONMENT_MAX_CHARS,
}


class StrictCharField(serializers.CharField):
    """A JSON string, never a number or a boolean turned into one."""

    def __init__(self, *, pattern: str | None = None, **kwargs: Any) -> None:
        self.pattern = pattern
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class VariantNameField(StrictCharField):
    """An experiment variant's name: a label (``LABEL_PATTERN``) of up to 50 characters, and
    neither ``stable`` nor ``canary``; the service checks the same rule (``invalid_name``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_length=VARIANT_NAME_MAX_CHARS,
            trim_whitespace=False,
            pattern=LABEL_PATTERN,
            **kwargs,
        )


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false``, never ``"true"``, ``1`` or ``"yes"``."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def _is_json_integer(data: Any) -> bool:
    # JSON has one number type: 3.0 is the integer 3 (JSON Schema agrees); 3.5 is not.
    if isinstance(data, bool):
        return False
    return isinstance(data, int) or (isinstance(data, float) and data.is_integer())


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, never ``"7"`` or ``true``."""

    def to_internal_value(self, data: Any) -> int:
        if not _is_json_integer(data):
            self.fail("invalid")
        return super().to_internal_value(int(data))


class StrictFloatField(serializers.FloatField):
    """A JSON number, never ``"0.5"`` or ``true``."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class DecimalNumberField(serializers.DecimalField):
    """A decimal sent as a JSON number (``12.5``) or as a string of plain digits (``"12.5"``,
    exact for clients whose numbers are binary floats); never ``true``, ``" 12"``, ``"1e1"`` or
    ``"+5"``, which DRF would read.

    A number is read as the decimal it stands for: ``0.57`` arrives as the float nearest to it,
    and ``0.1 + 0.47`` computes 0.5700000000000001, so a number within a billionth of a
    hundredth is that hundredth (as JSON Schema validators compare ``multipleOf`` on floats).

    The schema publishes a percent, 0 to 100 with at most two decimals (``PERCENT_PATTERN``):
    ``PercentField`` enforces it here; the promotion gates' pass rate leaves it to the service,
    which answers the admin and the API with the same words."""

    _DIGITS = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
    _TOLERANCE = 1e-9

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", None)
        kwargs.setdefault("decimal_places", None)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, str):
            if not self._DIGITS.fullmatch(data):
                self.fail("invalid")
            return super().to_internal_value(data)
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float):
            if not math.isfinite(data):
                self.fail("invalid")
            scaled = data * 100
            # A float near the top of its range has no finite hundredfold: it is read as written
            # (then refused by the digits' bound), never rounded through infinity.
            hundredths = round(scaled) if math.isfinite(scaled) else None
            if hundredths is not None and abs(scaled - hundredths) <= self._TOLERANCE:
                data = Decimal(hundredths) / 100
            else:
                data = Decimal(repr(data))
        return super().to_internal_value(data)


class PercentField(DecimalNumberField):
    """0 to 100, at most two decimals (``DecimalNumberField``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=5, decimal_places=2, min_value=0, max_value=100, **kwargs)


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    target_class = StrictCharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if self.target.pattern:
            schema["pattern"] = self.target.pattern
        return schema


class VariantNameFieldSchema(OpenApiSerializerFieldExtension):
    target_class = VariantNameField
    priority = 1  # before StrictCharFieldSchema, which matches it as a subclass

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        schema["pattern"] = self.target.pattern
        # OpenAPI 3.0 has ``not``: the two names the release state keeps for itself.
        schema["not"] = {"enum": list(RESERVED_VARIANT_NAMES)}
        return schema


class PercentFieldSchema(OpenApiSerializerFieldExtension):
    target_class = DecimalNumberField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema: dict[str, Any] = {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ],
        }
        if self.target.help_text:
            schema["description"] = str(self.target.help_text)
        if self.target.allow_null:
            schema["nullable"] = True
        return schema


class NonEmptyDictFieldSchema(OpenApiSerializerFieldExtension):
    """drf-spectacular leaves out a DictField's ``allow_empty=False``: ``minProperties: 1``."""

    target_class = serializers.DictField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if not self.target.allow_empty:
            schema["minProperties"] = 1
        return schema


# --- A canary analysis policy ----------------------------------------------------------------
# Its rules are evaluations.canary.policy's (every bound below is read from there); the schema
# states each field's shape. What it cannot state, across fields or items, the service refuses with
# a code of its own: steps not ascending (``steps_not_ascending``), no step below 100
# (``no_step_to_judge``), a per-step list of another length than the steps (``wrong_length``),
# max_minutes below min_minutes (``max_below_min``), trusted keys without reports
# (``keys_without_reports``), no source at all (``no_trusted_source``).


def _per_step(name: str, default: int, low: int, high: int) -> dict[str, Any]:
    whole = {"type": "integer", "minimum": low, "maximum": high}
    return {
        "description": f"One number for every step, or a list with one per step (default "
        f"{default}).",
        "anyOf": [
            whole,
            {"type": "array", "items": whole, "minItems": 1, "maxItems": canary_policy.MAX_STEPS},
        ],
    }


CANARY_POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A canary analysis policy (docs/canary-analysis.md); fields left out take "
    "their defaults. As read back, every field is there and the per-step ones are lists.",
    "additionalProperties": False,
    "properties": {
        "steps": {
            "type": "array",
            "description": "The canary's percentages, ascending, at least one below 100 "
            f"(default {canary_policy.DEFAULT_STEPS}).",
            "minItems": 1,
            "maxItems": canary_policy.MAX_STEPS,
            "items": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 100,
                "multipleOf": 0.01,
            },
        },
        **{
            name: _per_step(name, default, low, high)
            for name, (default, low, high) in canary_policy.PER_STEP.items()
        },
        **{
            name: {
                "type": "number",
                "minimum": low,
                "maximum": high,
                "description": f"{meaning[0].upper()}{meaning[1:]} (default {default:g}).",
            }
            for name, (default, low, high, meaning) in canary_policy.NUMBERS.items()
        },
        "measure_retries": {
            "type": "integer",
            "minimum": canary_policy.MEASURE_RETRIES[1],
            "maximum": canary_policy.MEASURE_RETRIES[2],
            "description": f"Looks without the minimum sample before the analysis holds "
            f"(default {canary_policy.MEASURE_RETRIES[0]}).",
        },
        "sources": {
            "type": "object",
            "description": "Which calls count: the registry's runs, reports (POST /events and "
            "feedback), and the only API keys whose reports count (null: every key).",
            "additionalProperties": False,
            "properties": {
                "runs": {"type": "boolean"},
                "reports": {"type": "boolean"},
                "keys": {
                    "type": "array",
                    "nullable": True,
                    "minItems": 1,
                    "maxItems": canary_policy.MAX_TRUSTED_KEYS,
                    "items": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                },
            },
        },
    },
}


class CanaryPolicyField(serializers.JSONField):
    """A canary analysis policy as sent: checked by the service (``canary_policy_validate``, every
    problem with a pointer under ``/analysis``); published as the ``CanaryPolicy`` component."""


class CanaryPolicyFieldSchema(OpenApiSerializerFieldExtension):
    target_class = CanaryPolicyField

    def map_serializer_field(self, auto_schema, direction):
        component = ResolvedComponent(
            name="CanaryPolicy",
            type=ResolvedComponent.SCHEMA,
            object="CanaryPolicy",
            schema=CANARY_POLICY_SCHEMA,
        )
        auto_schema.registry.register_on_missing(component)
        schema: dict[str, Any] = {"allOf": [component.ref]}
        if self.target.allow_null:
            schema["nullable"] = True
        if self.target.help_text:
            schema["description"] = str(self.target.help_text)
        return schema


class SectionsSerializer(serializers.Serializer):
    system = StrictCharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    context = StrictCharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    instruction = StrictCharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )
    format = StrictCharField(required=False, allow_blank=True, trim_whitespace=False, default="")


# Identifiers (a variable's name, a provider, a model) are not trimmed: the registry refuses
# "name\n" with a pointer at it, as the admin and the importer do, rather than the API storing a
# name other than the one the client sent.
class VariableSerializer(serializers.Serializer):
    name = StrictCharField(max_length=64, trim_whitespace=False, pattern=VARIABLE_NAME_PATTERN)
    type = serializers.ChoiceField(choices=[str(t) for t in VariableType], default="string")
    # No default here: left out, a variable is optional exactly when it has a default, as in an
    # export file (``VariableSpec.from_dict``), so the API and the importer read a body alike.
    required = StrictBooleanField(required=False)
    default = serializers.JSONField(required=False, allow_null=True, default=None)
    description = StrictCharField(required=False, allow_blank=True, default="", max_length=500)
    after = AbsentWhenNullChoiceField(
        choices=list(PLACES),
        required=False,
        allow_null=True,
        default=None,
        help_text="A `messages` variable's place: the section its history follows "
        "(default: context, so before the instruction). Only a `messages` variable has one.",
    )


class ModelTargetSerializer(serializers.Serializer):
    provider = StrictCharField(
        max_length=PROVIDER_MAX_CHARS,
        trim_whitespace=False,
        pattern=PROVIDER_PATTERN,
        help_text="A configured provider's name (`manage.py provider add`).",
    )
    model = StrictCharField(max_length=200, trim_whitespace=False)
    parameters = serializers.DictField(required=False, default=dict)


class ModelBindingSerializer(ModelTargetSerializer):
    response_schema = serializers.DictField(required=False, allow_null=True, default=None)
    fallbacks = ModelTargetSerializer(many=True, required=False, default=list)
    # Checked by registry.tools at save (names, schemas, bounds), each problem at its pointer.
    tools = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        default=list,
        help_text="Tools in OpenAI's format: `{type: function, function: {name, description, "
        "parameters, strict}}`; names unique, parameters a JSON Schema with local references.",
    )
    tool_choice = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="`none`, `auto`, `required` or `{type: function, function: {name}}`.",
    )
    parallel_tool_calls = StrictBooleanField(required=False, allow_null=True, default=None)
    # Checked by registry.content at save (kinds, bounds), each problem at its pointer.
    cache = serializers.DictField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The response cache, opt-in: `{exact: {ttl_seconds}}` (1 s to 30 days); a "
        "hit is answered without a model call (docs/runs.md, Response cache).",
    )
    # Checked by registry.guardrails at save, each problem at its pointer.
    guardrails = serializers.DictField(
        required=False,
        allow_null=True,
        default=None,
        help_text="The guardrail policy: input checks (max_tokens, deny_patterns, pii, "
        "injection), output checks (deny_patterns, pii, moderation), each with an action "
        "(refuse, redact, flag, fallback) (docs/guardrails.md).",
    )


class ContentInputSerializer(serializers.Serializer):
    """The content fields of a version write; each one given replaces that part of the content."""

    variables = VariableSerializer(many=True, required=False)
    model = ModelBindingSerializer(required=False)
    templates = serializers.DictField(child=SectionsSerializer(), required=False, allow_empty=False)

    def content(self, base: VersionContent | None) -> VersionContent | None:
        """The content to save: ``base`` with the given parts replaced (None if none given)."""
        data = self.validated_data
        if not any(part in data for part in ("variables", "model", "templates")):
            return None
        merged: dict[str, Any] = base.canonical() if base is not None else {}
        merged |= {part: data[part] for part in ("variables", "model", "templates") if part in data}
        return VersionContent.from_dict(merged)


class ContentWarningSerializer(serializers.Serializer):
    """Something worth a look in a version's content that does not stop it being committed (a
    stale translation, an unused variable): ``registry.errors.Problem`` with the warning
    severity. Not a problem document, which is an answer's error (``api.problems``)."""

    code = serializers.CharField(help_text="Machine-readable, e.g. `stale_translation`.")
    detail = serializers.CharField()
    pointer = serializers.CharField(
        allow_blank=True, help_text="JSON Pointer (RFC 6901) into the version's content."
    )
    line = AbsentWhenNullIntegerField(required=False, help_text="The template line, when one.")
    severity = serializers.ChoiceField(choices=["warning"])

    class Meta:
        ref_name = "ContentWarning"


class TranslationSerializer(serializers.Serializer):
    locale = serializers.CharField()
    state = serializers.ChoiceField(choices=["source", "current", "stale"])


class VersionSummarySerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.ChoiceField(choices=PromptVersion.Status.choices)
    message = serializers.CharField()
    content_hash = serializers.CharField()
    parent = serializers.IntegerField(source="parent.number", allow_null=True, default=None)
    author = serializers.CharField(source="author_label")
    committed_by = serializers.CharField(source="committed_by_label")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    committed_at = serializers.DateTimeField(allow_null=True)


@dataclass(frozen=True, slots=True)
class VersionShown:
    """A version with what its detail shows beside the row, each read once: the content as a
    value (templates by locale, sorted), each locale's translation state, the content's
    warnings. The row's own fields (number, status, parent...) are read through."""

    version: PromptVersion
    content: VersionContent
    templates: dict[str, Sections]
    translations: list[TranslationStatus]
    warnings: list[Problem]

    @classmethod
    def of(cls, version: PromptVersion) -> VersionShown:
        content = version_content(version)
        return cls(
            version=version,
            content=content,
            templates=dict(sorted(content.templates.items())),
            translations=version_translation_status(version),
            warnings=[p for p in version_check(version) if p.severity != "error"],
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.version, name)


# Every version answer is ``VersionDetailSerializer(version).data``: the fields below are both the
# answer and its schema.
class VersionDetailSerializer(VersionSummarySerializer):
    prompt = serializers.CharField(source="prompt.key")
    variables = VariableSerializer(many=True, source="content.variables")
    model = ModelBindingSerializer(source="content.model")
    templates = serializers.DictField(child=SectionsSerializer())
    translations = TranslationSerializer(many=True)
    warnings = ContentWarningSerializer(many=True)

    def to_representation(self, version: PromptVersion) -> dict[str, Any]:
        return super().to_representation(VersionShown.of(version))
