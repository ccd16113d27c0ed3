"""Serializers shared by several views: the shapes of a version's content on the wire.

Views nest their own ``InputSerializer``/``OutputSerializer`` (STYLE R11); these are the parts more
than one of them uses. They check shape only (types, presence); what the content *means* (valid
templates, declared variables, known parameters) is the registry's ``content_check``, so the admin,
the importer and the API refuse the same things with the same words.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from registry.content import VersionContent
from registry.errors import Problem
from registry.models import PromptVersion
from registry.selectors import version_check, version_content, version_translation_status
from registry.variables import VariableType


class SectionsSerializer(serializers.Serializer):
    system = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )
    context = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )
    instruction = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )
    format = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, default=""
    )


# Identifiers (a variable's name, a provider, a model) are not trimmed: the registry refuses
# "name\n" with a pointer at it, as the admin and the importer do, rather than the API storing a
# name other than the one the client sent.
class VariableSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64, trim_whitespace=False)
    type = serializers.ChoiceField(choices=[str(t) for t in VariableType], default="string")
    # No default here: left out, a variable is optional exactly when it has a default, as in an
    # export file (``VariableSpec.from_dict``), so the API and the importer read a body alike.
    required = serializers.BooleanField(required=False)
    default = serializers.JSONField(required=False, allow_null=True, default=None)
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=500
    )


class ModelTargetSerializer(serializers.Serializer):
    provider = serializers.CharField(max_length=63, trim_whitespace=False)
    model = serializers.CharField(max_length=200, trim_whitespace=False)
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
    line = serializers.IntegerField(required=False, help_text="The template line, when one.")
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


class VersionDetailSerializer(VersionSummarySerializer):
    prompt = serializers.CharField(source="prompt.key")
    variables = VariableSerializer(many=True)
    model = ModelBindingSerializer()
    templates = serializers.DictField(child=SectionsSerializer())
    translations = TranslationSerializer(many=True)
    warnings = ContentWarningSerializer(many=True)

    def to_representation(self, version: PromptVersion) -> dict[str, Any]:
        # The declared fields above describe the shape for the schema; the content is read once.
        data = dict(VersionSummarySerializer(version).data)
        data["prompt"] = version.prompt.key
        content = version_content(version)
        data["variables"] = [v.as_dict() for v in content.variables]
        data["model"] = content.model.as_dict()
        data["templates"] = {loc: s.as_dict() for loc, s in sorted(content.templates.items())}
        data["translations"] = [
            {"locale": t.locale, "state": str(t.state)} for t in version_translation_status(version)
        ]
        data["warnings"] = [p.as_dict() for p in version_check(version) if _is_warning(p)]
        return data


def _is_warning(problem: Problem) -> bool:
    return problem.severity != "error"
