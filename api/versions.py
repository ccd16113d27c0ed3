"""Versions: drafts, commits, diffs and previews (the authoring path, STYLE R11).

A committed version never changes, so its GET is cacheable forever: ``Cache-Control: immutable``
with the content hash as ``ETag``. A draft's ETag is its content hash too, and a write to a draft
may send it back in ``If-Match`` so two authors never overwrite each other unknowingly.
"""

from __future__ import annotations

from typing import Any

from django.utils.cache import patch_cache_control
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.models import PromptVersion
from registry.selectors import (
    prompt_get,
    version_content,
    version_diff,
    version_get,
    version_list,
    version_render,
)
from registry.services import (
    version_commit,
    version_create,
    version_draft_discard,
    version_draft_update,
)

from .models import Scope
from .pagination import Pagination
from .permissions import HasScope, scope_by_method
from .runtime import model_request
from .serializers import (
    LOCALE_PATTERN,
    ContentInputSerializer,
    ModelBindingSerializer,
    SectionsSerializer,
    StrictBooleanField,
    StrictCharField,
    VersionDetailSerializer,
    VersionSummarySerializer,
)

IMMUTABLE_MAX_AGE = 365 * 24 * 3600


def _etag(tag: str) -> str:
    return f'"{tag}"'


def if_match_hash(request: Request) -> str | None:
    """The version's ETag a client sends back in ``If-Match`` (quoted or not), or None."""
    value = request.headers.get("If-Match", "").strip()
    if not value or value == "*":
        return None
    return value.removeprefix("W/").strip('"')


def version_response(version, *, status_code: int = status.HTTP_200_OK) -> Response:
    return _with_cache_headers(
        Response(VersionDetailSerializer(version).data, status=status_code), version
    )


def _with_cache_headers(response: Response, version) -> Response:
    # A 304 carries these too (RFC 9110 §15.4.5), so a revalidated copy stays immutable.
    response["ETag"] = _etag(version.edit_tag)
    if version.is_committed:
        patch_cache_control(response, private=True, max_age=IMMUTABLE_MAX_AGE, immutable=True)
    else:
        patch_cache_control(response, private=True, no_cache=True)
    return response


class VersionCollectionApi(APIView):
    """``GET /prompts/{key}/versions`` lists versions; ``POST`` opens a draft or commits one."""

    # Read by drf-spectacular too: the list is documented as the paginated object it is.
    pagination_class = Pagination

    class InputSerializer(ContentInputSerializer):
        class Meta:
            ref_name = "VersionCreateInput"

        # A new version is whole: unlike an edit, it has no content to take the other parts from.
        model = ModelBindingSerializer()
        templates = serializers.DictField(child=SectionsSerializer(), allow_empty=False)
        message = StrictCharField(required=False, allow_blank=True, default="", max_length=5000)
        commit = StrictBooleanField(required=False, default=False)

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.PROMPTS_WRITE)

    @extend_schema(operation_id="versions_list", responses=VersionSummarySerializer(many=True))
    def get(self, request: Request, key: str) -> Response:
        versions = version_list(prompt=prompt_get(key=key)).select_related("parent")
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(versions, request, view=self)
        return paginator.get_paginated_response(VersionSummarySerializer(page, many=True).data)

    @extend_schema(
        operation_id="versions_create",
        request=InputSerializer,
        responses={201: VersionDetailSerializer},
    )
    def post(self, request: Request, key: str) -> Response:
        prompt = prompt_get(key=key)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = version_create(
            prompt=prompt,
            actor=request.user.actor,
            content=data.content(None),
            message=data.validated_data["message"],
            commit=data.validated_data["commit"],
        )
        return version_response(
            version_get(prompt=prompt, number=version.number), status_code=status.HTTP_201_CREATED
        )


class VersionDetailApi(APIView):
    """``GET /prompts/{key}/versions/{n}``; ``PATCH`` edits a draft; ``DELETE`` discards one."""

    class InputSerializer(ContentInputSerializer):
        class Meta:
            ref_name = "VersionUpdateInput"

        message = StrictCharField(required=False, allow_blank=True, max_length=5000)

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.PROMPTS_WRITE)

    @extend_schema(operation_id="versions_retrieve", responses=VersionDetailSerializer)
    def get(self, request: Request, key: str, number: int) -> Response:
        version = version_get(prompt=prompt_get(key=key), number=number)
        # Only a committed version's representation is fixed by its content hash: a draft's
        # message and author change under the same hash, so a draft is always sent in full.
        if version.is_committed and if_none_match(request, version.content_hash):
            return _with_cache_headers(Response(status=status.HTTP_304_NOT_MODIFIED), version)
        return version_response(version)

    @extend_schema(
        operation_id="versions_update",
        request=InputSerializer,
        responses=VersionDetailSerializer,
        parameters=[
            OpenApiParameter(
                "If-Match",
                str,
                OpenApiParameter.HEADER,
                description="The draft's ETag (content hash) as read.",
            )
        ],
    )
    def patch(self, request: Request, key: str, number: int) -> Response:
        prompt = prompt_get(key=key)
        version = version_get(prompt=prompt, number=number)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version_draft_update(
            version=version,
            actor=request.user.actor,
            content=data.content(version_content(version)),
            message=data.validated_data.get("message"),
            expected_tag=if_match_hash(request),
        )
        return version_response(version_get(prompt=prompt, number=number))

    @extend_schema(operation_id="versions_discard", responses={204: None})
    def delete(self, request: Request, key: str, number: int) -> Response:
        version = version_get(prompt=prompt_get(key=key), number=number)
        version_draft_discard(version=version, actor=request.user.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


def if_none_match(request: Request, content_hash: str) -> bool:
    tags = [
        t.strip().removeprefix("W/").strip('"')
        for t in request.headers.get("If-None-Match", "").split(",")
    ]
    return content_hash in tags or "*" in tags


class VersionCommitApi(APIView):
    """``POST /prompts/{key}/versions/{n}/commit``: freezes the draft."""

    permission_classes = [HasScope(Scope.PROMPTS_WRITE)]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionCommitInput"

        message = StrictCharField(required=False, allow_blank=True, max_length=5000)

    @extend_schema(
        operation_id="versions_commit", request=InputSerializer, responses=VersionDetailSerializer
    )
    def post(self, request: Request, key: str, number: int) -> Response:
        prompt = prompt_get(key=key)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version_commit(
            version=version_get(prompt=prompt, number=number),
            actor=request.user.actor,
            message=data.validated_data.get("message"),
            expected_tag=if_match_hash(request),
        )
        return version_response(version_get(prompt=prompt, number=number))


class DiffRowSerializer(serializers.Serializer):
    tag = serializers.ChoiceField(choices=["equal", "replace", "delete", "insert"])
    before = serializers.ListField(child=serializers.CharField(allow_blank=True))
    after = serializers.ListField(child=serializers.CharField(allow_blank=True))


class SectionDiffSerializer(serializers.Serializer):
    locale = serializers.CharField()
    section = serializers.CharField()
    change = serializers.CharField()
    before = serializers.CharField(allow_blank=True)
    after = serializers.CharField(allow_blank=True)
    rows = DiffRowSerializer(many=True)
    unified = serializers.CharField(allow_blank=True)
    coarse = serializers.BooleanField(
        help_text="Too many lines differ to compare them one by one (VERSION_DIFF_MAX_LINES): "
        "the lines shared at the start and the end are kept and everything between is one "
        "replaced block."
    )


class ValueDiffSerializer(serializers.Serializer):
    name = serializers.CharField()
    change = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


class VersionDiffApi(APIView):
    """``GET /prompts/{key}/versions/{n}/diff?against=m``: what changed from m to n."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionDiff"

        prompt = serializers.CharField()
        before_number = serializers.IntegerField()
        after_number = serializers.IntegerField()
        templates = SectionDiffSerializer(many=True)
        variables = ValueDiffSerializer(many=True)
        model = ValueDiffSerializer(many=True)

    class QuerySerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionDiffQuery"

        against = serializers.IntegerField(min_value=1)

    @extend_schema(
        operation_id="versions_diff", parameters=[QuerySerializer], responses=OutputSerializer
    )
    def get(self, request: Request, key: str, number: int) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        prompt = prompt_get(key=key)
        diff = version_diff(
            before=version_get(prompt=prompt, number=query.validated_data["against"]),
            after=version_get(prompt=prompt, number=number),
        )
        return Response(self.OutputSerializer(diff).data)


class ToolCallFunctionSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField()


class HistoryToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = ToolCallFunctionSerializer()


class MessageSerializer(serializers.Serializer):
    """A chat message: the prompt's own, or a history's as sent (a tool message keeps the id of
    the call it answers, an assistant message the calls it made; its content is then null)."""

    role = serializers.ChoiceField(choices=["system", "user", "assistant", "tool"])
    content = serializers.CharField(allow_null=True, allow_blank=True)
    tool_call_id = serializers.CharField(required=False)
    tool_calls = HistoryToolCallSerializer(many=True, required=False)


class VersionRenderApi(APIView):
    """``POST /prompts/{key}/versions/{n}/render``: previews a version (drafts included)."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionRenderInput"

        locale = StrictCharField(
            required=False, allow_null=True, default=None, max_length=35, pattern=LOCALE_PATTERN
        )
        variables = serializers.DictField(required=False, default=dict)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "VersionRender"

        prompt = serializers.CharField()
        version = serializers.IntegerField()
        locale = serializers.CharField()
        requested_locale = serializers.CharField()
        sections = SectionsSerializer()
        rendered = SectionsSerializer()
        messages = MessageSerializer(many=True)
        request = serializers.DictField(
            help_text="The keyword arguments of `chat.completions.create(**request)`: model, "
            "messages, parameters, tools, tool_choice, parallel_tool_calls, response_format."
        )
        variables = serializers.DictField()

    @extend_schema(
        operation_id="versions_render", request=InputSerializer, responses=OutputSerializer
    )
    def post(self, request: Request, key: str, number: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = version_get(prompt=prompt_get(key=key), number=number)
        return Response(version_render_answer(version, **data.validated_data))


def version_render_answer(
    version: PromptVersion, *, locale: str | None, variables: dict[str, Any]
) -> dict[str, Any]:
    """A version rendered, as ``VersionRenderApi`` answers it (and the MCP server's
    ``render_version``)."""
    result = version_render(version=version, locale=locale, variables=variables)
    content = version_content(version)
    return VersionRenderApi.OutputSerializer(
        {
            "prompt": version.prompt.key,
            "version": version.number,
            "locale": result.locale,
            "requested_locale": result.requested_locale,
            "sections": result.sections.as_dict(),
            "rendered": result.rendered.as_dict(),
            "messages": result.messages,
            "request": model_request(content.model.as_dict(), result.messages),
            "variables": result.variables,
        }
    ).data
