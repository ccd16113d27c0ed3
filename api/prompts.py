"""Prompts: list, create, read, update (the authoring path, STYLE R11)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.selectors import prompt_get, prompt_list
from registry.services import MAX_TAGS, prompt_create, prompt_update

from .authentication import KeyPrincipal
from .models import Scope
from .pagination import Pagination
from .permissions import scope_by_method
from .serializers import (
    KEY_MAX_CHARS,
    KEY_PATTERN,
    LOCALE_PATTERN,
    TAG_MAX_CHARS,
    TAG_PATTERN,
    StrictBooleanField,
    StrictCharField,
)


class PromptOutputSerializer(serializers.Serializer):
    key = serializers.CharField()
    description = serializers.CharField()
    default_locale = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    snippet = serializers.BooleanField(
        source="is_snippet", help_text='Other prompts include it with {{ snippet("key") }}.'
    )
    latest_version = serializers.IntegerField(allow_null=True, source="latest_number")
    draft_version = serializers.IntegerField(allow_null=True, source="draft_number")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


def _annotated(key: str):
    return prompt_list().get(pk=prompt_get(key=key).pk)


class PromptCollectionApi(APIView):
    """``GET /prompts`` lists prompts; ``POST /prompts`` creates one."""

    # Read by drf-spectacular too: the list is documented as the paginated object it is.
    pagination_class = Pagination

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PromptCreateInput"

        # Identifiers are not trimmed: "support.x\n" is refused with a pointer at the key, never
        # stored as another key than the one the client sent and will ask for.
        key = StrictCharField(max_length=KEY_MAX_CHARS, trim_whitespace=False, pattern=KEY_PATTERN)
        description = StrictCharField(required=False, allow_blank=True, default="")
        default_locale = StrictCharField(
            required=False, default="en", max_length=35, pattern=LOCALE_PATTERN
        )
        tags = serializers.ListField(
            child=StrictCharField(
                trim_whitespace=False, max_length=TAG_MAX_CHARS, pattern=TAG_PATTERN
            ),
            required=False,
            default=list,
            max_length=MAX_TAGS,
        )
        snippet = StrictBooleanField(
            required=False,
            default=False,
            source="is_snippet",
            help_text="A snippet: a shared block other prompts include; it declares no variables.",
        )

    class QuerySerializer(serializers.Serializer):
        class Meta:
            ref_name = "PromptListQuery"

        # CharField refuses NUL characters, which PostgreSQL cannot compare text with.
        search = StrictCharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=200,
            help_text="Part of the key, the description or a tag.",
        )
        tag = StrictCharField(
            required=False,
            allow_blank=True,
            default="",
            max_length=50,
            help_text="Only prompts with this tag.",
        )

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.PROMPTS_WRITE)

    @extend_schema(
        operation_id="prompts_list",
        parameters=[QuerySerializer],
        responses=PromptOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        prompts = prompt_list(**query.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(prompts, request, view=self)
        return paginator.get_paginated_response(PromptOutputSerializer(page, many=True).data)

    @extend_schema(
        operation_id="prompts_create",
        request=InputSerializer,
        responses={201: PromptOutputSerializer},
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        principal: KeyPrincipal = request.user
        prompt = prompt_create(actor=principal.actor, **data.validated_data)
        return Response(
            PromptOutputSerializer(_annotated(prompt.key)).data, status=status.HTTP_201_CREATED
        )


class PromptDetailApi(APIView):
    """``GET /prompts/{key}`` reads a prompt; ``PATCH`` changes its description, tags and
    whether it is a snippet."""

    class InputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "PromptUpdateInput"

        description = StrictCharField(required=False, allow_blank=True)
        tags = serializers.ListField(
            child=StrictCharField(
                trim_whitespace=False, max_length=TAG_MAX_CHARS, pattern=TAG_PATTERN
            ),
            required=False,
            max_length=MAX_TAGS,
        )
        snippet = StrictBooleanField(
            required=False,
            source="is_snippet",
            help_text="Mark it a snippet (refused if a version declares variables) or unmark it "
            "(refused while versions include it).",
        )

    def get_permissions(self):
        return scope_by_method(self.request, read=Scope.PROMPTS_READ, write=Scope.PROMPTS_WRITE)

    @extend_schema(operation_id="prompts_retrieve", responses=PromptOutputSerializer)
    def get(self, request: Request, key: str) -> Response:
        return Response(PromptOutputSerializer(_annotated(key)).data)

    @extend_schema(
        operation_id="prompts_update", request=InputSerializer, responses=PromptOutputSerializer
    )
    def patch(self, request: Request, key: str) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        prompt_update(prompt=prompt_get(key=key), actor=request.user.actor, **data.validated_data)
        return Response(PromptOutputSerializer(_annotated(key)).data)
