"""Prompts as files over the API: the files ``manage.py prompts export`` writes, and an import that
plans before it applies (``registry.sync``), for prompt repositories' CI (the ``promptregistry``
command's ``pull``, ``push`` and ``diff``).

- ``GET /prompt-files`` (``prompts:read``): each prompt's file, byte for byte what the export
  writes, for the latest committed versions or those an environment serves as stable.
- ``POST /prompt-files/plan`` (``prompts:read``): what importing the files would do, file by
  file; nothing is written.
- ``POST /prompt-files/import`` (``prompts:write``): the same plan, applied in the transaction
  that made it: every file lands, or none does.

A bad file makes both answer ``400 invalid-prompt-files`` listing every problem of every bad file
with its file name (``file``) and, where it can be found, its line.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from registry.promptfiles import (
    latest_committed_versions,
    prompt_file_from_text,
    prompt_file_name,
    prompt_file_text,
    prompt_file_versions,
)
from registry.sync import Action, VersionChange, prompt_files_import, prompt_files_plan
from releases.selectors import environment_get, environment_stable_versions

from .models import Scope
from .pagination import Pagination
from .permissions import HasScope, ensure_environment_allowed
from .serializers import (
    ENVIRONMENT_MAX_CHARS,
    ENVIRONMENT_PATTERN,
    TAG_MAX_CHARS,
    TAG_PATTERN,
    StrictBooleanField,
    StrictCharField,
)

# One request imports a repository's prompts; the body is bounded by DATA_UPLOAD_MAX_MEMORY_SIZE
# too, and each file's text by PROMPT_FILE_MAX_BYTES.
MAX_FILES = 1000
FILE_NAME_MAX_CHARS = 200
# A bare file name: the import never touches a file system, and a name is matched against the
# file's key (``<key>.yaml``) like a file read from a directory.
FILE_NAME_PATTERN = r"^[^/\\]+\.yaml(?!\n)$"


def _matching(pattern: str, **kwargs) -> StrictCharField:
    """A string the schema publishes with ``pattern`` and the server holds to it."""
    return StrictCharField(pattern=pattern, validators=[RegexValidator(pattern)], **kwargs)


class PromptFileSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="`<key>.yaml`")
    key = serializers.CharField()
    version = serializers.IntegerField(help_text="The version the file holds.")
    content_hash = serializers.CharField()
    text = serializers.CharField(
        help_text="The file's text, as `manage.py prompts export` writes it."
    )

    class Meta:
        ref_name = "PromptFile"


class PromptFileListApi(APIView):
    """``GET /prompt-files?environment=&tag=&version_fields=``: each prompt's file."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]
    pagination_class = Pagination

    class QuerySerializer(serializers.Serializer):
        environment = _matching(
            ENVIRONMENT_PATTERN,
            required=False,
            max_length=ENVIRONMENT_MAX_CHARS,
            help_text="The versions this environment serves as stable; without it, each prompt's "
            "latest committed version.",
        )
        tag = _matching(
            TAG_PATTERN,
            required=False,
            max_length=TAG_MAX_CHARS,
            help_text="Only prompts with this tag.",
        )
        version_fields = serializers.BooleanField(
            required=False,
            default=True,
            help_text="false: leave out `version` and `content_hash`, for files kept as the "
            "source of truth (never refused as exported from an older version).",
        )

        class Meta:
            ref_name = "PromptFileListQuery"

    @extend_schema(
        operation_id="prompt_files_list",
        parameters=[QuerySerializer],
        responses=PromptFileSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        values = query.validated_data
        if environment := values.get("environment"):
            ensure_environment_allowed(request, environment)
            versions = environment_stable_versions(environment=environment_get(name=environment))
        else:
            versions = latest_committed_versions()
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            prompt_file_versions(versions, tag=values.get("tag", "")), request, view=self
        )
        files = [
            {
                "name": prompt_file_name(version.prompt.key),
                "key": version.prompt.key,
                "version": version.number,
                "content_hash": version.content_hash,
                "text": prompt_file_text(
                    version.prompt, version, version_fields=values["version_fields"]
                ),
            }
            for version in page
        ]
        return paginator.get_paginated_response(PromptFileSerializer(files, many=True).data)


class _FileInput(serializers.Serializer):
    name = _matching(
        FILE_NAME_PATTERN,
        max_length=FILE_NAME_MAX_CHARS,
        trim_whitespace=False,
        help_text="The file's name, `<key>.yaml`.",
    )
    text = StrictCharField(
        trim_whitespace=False,
        allow_blank=True,
        help_text="The file's text (at most PROMPT_FILE_MAX_BYTES bytes in UTF-8).",
    )

    class Meta:
        ref_name = "PromptFileInput"


class _ImportInput(serializers.Serializer):
    files = serializers.ListField(child=_FileInput(), min_length=1, max_length=MAX_FILES)
    commit = StrictBooleanField(
        required=False,
        default=False,
        help_text="Commit each changed file's content as a version; false: open (or replace) "
        "the key's own drafts instead.",
    )

    class Meta:
        ref_name = "PromptFilesInput"

    def validate_files(self, files: list[dict]) -> list[dict]:
        seen: set[str] = set()
        for index, file in enumerate(files):
            if file["name"] in seen:
                raise serializers.ValidationError(
                    {str(index): {"name": [f"{file['name']} is sent twice."]}},
                    code="duplicate_file",
                )
            seen.add(file["name"])
        return files


class PlanItemSerializer(serializers.Serializer):
    name = serializers.CharField(source="path.name")
    key = serializers.CharField()
    action = serializers.ChoiceField(choices=[(a.value, a.value) for a in Action])
    version_change = serializers.ChoiceField(
        source="change",
        choices=[(c.value, c.value) for c in VersionChange],
        help_text="What happens to the prompt's versions: none, commit (a new version), "
        "open_draft, replace_draft (the key's own draft), commit_draft, replace_and_commit_draft.",
    )
    version = serializers.IntegerField(
        allow_null=True, help_text="The version that holds the file's content once imported."
    )
    committed = serializers.BooleanField(help_text="false: `version` is a draft.")
    from_version = serializers.IntegerField(
        allow_null=True, help_text="The latest committed version before the import."
    )
    prompt_changes = serializers.ListField(
        child=serializers.CharField(), help_text="description, tags, snippet"
    )
    summary = serializers.CharField(
        source="describe", help_text="One line, as the command says it."
    )

    class Meta:
        ref_name = "PromptFilePlanItem"


class PlanSerializer(serializers.Serializer):
    applied = serializers.BooleanField(help_text="Whether the files were imported.")
    commit = serializers.BooleanField()
    changes = serializers.IntegerField(help_text="Files whose import changes something.")
    files = PlanItemSerializer(many=True)

    class Meta:
        ref_name = "PromptFilePlan"


def _planned(request: Request, *, apply: bool) -> Response:
    """Parse the files, call the plan (or the import) service, present the plan."""
    data = _ImportInput(data=request.data)
    data.is_valid(raise_exception=True)
    commit = data.validated_data["commit"]
    files = [prompt_file_from_text(f["name"], f["text"]) for f in data.validated_data["files"]]
    service = prompt_files_import if apply else prompt_files_plan
    plan = service(files=files, actor=request.user.actor, commit=commit)
    changes = sum(item.action is not Action.UNCHANGED for item in plan)
    body = {"applied": apply, "commit": commit, "changes": changes, "files": plan}
    return Response(PlanSerializer(body).data)


class PromptFilePlanApi(APIView):
    """``POST /prompt-files/plan``: what importing the files would do; nothing is written."""

    permission_classes = [HasScope(Scope.PROMPTS_READ)]

    @extend_schema(operation_id="prompt_files_plan", request=_ImportInput, responses=PlanSerializer)
    def post(self, request: Request) -> Response:
        return _planned(request, apply=False)


class PromptFileImportApi(APIView):
    """``POST /prompt-files/import``: plans and applies in one transaction, all or nothing."""

    permission_classes = [HasScope(Scope.PROMPTS_WRITE)]

    @extend_schema(
        operation_id="prompt_files_import", request=_ImportInput, responses=PlanSerializer
    )
    def post(self, request: Request) -> Response:
        return _planned(request, apply=True)
