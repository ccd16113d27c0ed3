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
from rest_framework import serializers

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
from registry.variables import VariableType

from .fields import AbsentWhenNullIntegerField

# --- Strict fields -------------------------------------------------------------------------------
# DRF's fields coerce: a CharField stores 424242 as "424242", a BooleanField reads "yes" and 1 as
# true, an IntegerField reads "7" as 7. The schema promises a JSON type for each field, and a
# client that sends another has a bug it should hear about rather than data stored in a shape it
# did not send. So every field of a JSON body is one of these: the value must already be of the
# documented JSON type (a 400 ``validation-error`` pointing at it), then DRF's own checks run.
# Query parameters are text on the wire and keep DRF's parsing (``?against=3``).
#
# ``pattern`` (an ECMA-262 regular expression, anchored) is what the schema publishes for a
# string field: the registry checks the same rule itself with its own problem codes
# (``invalid_key``, ``invalid_locale``...), so the schema tells clients and generators what the
# server refuses. ``tests/api/test_strict_fields.py`` holds each pattern against its rule.

# A prompt key (registry.models.PROMPT_KEY_PATTERN): parts of [a-z0-9_-] joined by single dots.
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*$"
KEY_MAX_CHARS = 150
# An environment name (releases.models.ENVIRONMENT_NAME_PATTERN), at most 50 characters.
ENVIRONMENT_PATTERN = r"^[a-z][a-z0-9-]*$"
ENVIRONMENT_MAX_CHARS = 50
# A BCP 47 tag as promptregistry.core.locales reads it ("_" stands for "-"; case-insensitive).
LOCALE_PATTERN = (
    r"^(?:[A-Za-z]{2,3}|[A-Za-z]{5,8})(?:[-_][A-Za-z]{4})?(?:[-_](?:[A-Za-z]{2}|[0-9]{3}))?"
    r"(?:[-_](?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$"
)
LOCALE_MAX_CHARS = 64
# A dataset's name (evaluations.models.DATASET_NAME_PATTERN), at most 100 characters.
DATASET_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
DATASET_MAX_CHARS = 100
# A tag (registry.services.TAG_PATTERN), at most 50 characters.
TAG_PATTERN = r"^[a-z0-9][a-z0-9_.:-]*$"
TAG_MAX_CHARS = 50
# A provider's name (runs.models.PROVIDER_NAME_PATTERN). Which names are configured is data, not
# shape (providers are added in the admin or with `manage.py provider add`), so the schema gives
# the rule for a name and an unconfigured one is refused as content (``unknown_provider``).
PROVIDER_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
PROVIDER_MAX_CHARS = 63
# A declared variable's name (registry.variables): an ASCII identifier, letter first.
VARIABLE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
# A percent with at most two decimals, 0-100, when sent as a string ("12.5").
PERCENT_PATTERN = r"^(?:100(?:\.0{1,2})?|[0-9]{1,2}(?:\.[0-9]{1,2})?)$"


class StrictCharField(serializers.CharField):
    """A JSON string, never a number or a boolean turned into one."""

    def __init__(self, *, pattern: str | None = None, **kwargs: Any) -> None:
        self.pattern = pattern
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


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
            hundredths = round(data * 100)
            if abs(data * 100 - hundredths) <= self._TOLERANCE:
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
