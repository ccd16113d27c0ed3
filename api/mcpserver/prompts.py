"""Tools over prompts and versions: find, read, render and compare them (``prompts:read``);
open, edit and commit drafts (``prompts:write``). Each calls what its API view calls."""

from __future__ import annotations

from typing import Any

from registry.selectors import prompt_get, prompt_list, version_content, version_diff, version_get
from registry.services import version_commit, version_create, version_draft_update

from ..models import Scope
from ..prompts import PromptCollectionApi, PromptOutputSerializer
from ..serializers import VersionDetailSerializer
from ..versions import (
    VersionCollectionApi,
    VersionCommitApi,
    VersionDetailApi,
    VersionDiffApi,
    VersionRenderApi,
    version_render_answer,
)
from .tools import PAGE_NOTES, Tool, ToolCall, page_of

KEY = "The prompt's key, e.g. `support.refund-reply` (`list_prompts` lists them)."
NUMBER = (
    "The version's number, e.g. 3 (`list_prompts` gives each prompt's `latest_version` and "
    "`draft_version`)."
)
DRAFT_NUMBER = "The draft's number: the prompt's `draft_version` in `list_prompts`."
# A version's content as a write sends it: the shape `get_version` answers, part for part.
CONTENT = {
    "templates": "By locale (BCP 47: `en`, `fr`...), the sections `system`, `context`, "
    "`instruction` and `format`, each Jinja2 text where `{{ name }}` is a declared variable; "
    "the prompt's default locale among them.",
    "model": "The model binding: `provider` (a configured provider's name, e.g. `local`), "
    "`model`, `parameters` (temperature, max_tokens...), and optionally `response_schema`, "
    "`tools`, `tool_choice` and `fallbacks`.",
    "variables": "The declared variables, each `{name, type, required, default, description}` "
    "(type: string, integer, number, boolean, list, object or messages); every variable a "
    "template uses must be declared.",
    "message": "What changed and why; a commit needs one.",
}


def _valid(serializer_class, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` read by an API view's input serializer (its strict fields, its defaults)."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _version(call: ToolCall):
    return version_get(
        prompt=prompt_get(key=call.arguments["key"]), number=call.arguments["number"]
    )


def _shown(call: ToolCall, number: int) -> dict[str, Any]:
    version = version_get(prompt=prompt_get(key=call.arguments["key"]), number=number)
    return VersionDetailSerializer(version).data


def list_prompts(call: ToolCall) -> dict[str, Any]:
    query = _valid(
        PromptCollectionApi.QuerySerializer,
        {name: call.arguments[name] for name in ("search", "tag") if name in call.arguments},
    )
    return page_of(call, prompt_list(**query), PromptOutputSerializer)


def get_version(call: ToolCall) -> dict[str, Any]:
    return VersionDetailSerializer(_version(call)).data


def render_version(call: ToolCall) -> dict[str, Any]:
    values = _valid(VersionRenderApi.InputSerializer, call.body("versions_render"))
    return version_render_answer(_version(call), **values)


def diff_versions(call: ToolCall) -> dict[str, Any]:
    prompt = prompt_get(key=call.arguments["key"])
    diff = version_diff(
        before=version_get(prompt=prompt, number=call.arguments["against"]),
        after=version_get(prompt=prompt, number=call.arguments["number"]),
    )
    return VersionDiffApi.OutputSerializer(diff).data


def create_draft(call: ToolCall) -> dict[str, Any]:
    data = VersionCollectionApi.InputSerializer(data=call.body("versions_create"))
    data.is_valid(raise_exception=True)
    version = version_create(
        prompt=prompt_get(key=call.arguments["key"]),
        actor=call.actor,
        content=data.content(None),
        message=data.validated_data["message"],
        commit=data.validated_data["commit"],
    )
    return _shown(call, version.number)


def update_draft(call: ToolCall) -> dict[str, Any]:
    version = _version(call)
    data = VersionDetailApi.InputSerializer(data=call.body("versions_update"))
    data.is_valid(raise_exception=True)
    version_draft_update(
        version=version,
        actor=call.actor,
        content=data.content(version_content(version)),
        message=data.validated_data.get("message"),
    )
    return _shown(call, version.number)


def commit_draft(call: ToolCall) -> dict[str, Any]:
    values = _valid(VersionCommitApi.InputSerializer, call.body("versions_commit"))
    version = version_commit(version=_version(call), actor=call.actor, **values)
    return _shown(call, version.number)


TOOLS = (
    Tool(
        name="list_prompts",
        title="List prompts",
        scope=Scope.PROMPTS_READ,
        operation="prompts_list",
        read_only=True,
        run=list_prompts,
        description=(
            "Lists the registry's prompts, by key, one page at a time: each with its "
            "description, tags, default locale, whether it is a snippet, its latest committed "
            "version (`latest_version`) and its open draft (`draft_version`, null when none). "
            "Use it first, to find a prompt's key and version numbers; `search` matches part of "
            "a key, a description or a tag, `tag` keeps one tag's prompts."
        ),
        notes={
            "search": "Part of a key, a description or a tag, e.g. `refund`; any case.",
            "tag": "Only the prompts with this tag, e.g. `support`.",
            **PAGE_NOTES,
        },
        examples=({}, {"search": "refund"}, {"tag": "support", "page": 2, "page_size": 20}),
    ),
    Tool(
        name="get_version",
        title="Read a version",
        scope=Scope.PROMPTS_READ,
        operation="versions_retrieve",
        read_only=True,
        run=get_version,
        description=(
            "Reads one version of a prompt, committed or draft: its templates per locale (the "
            "sections system, context, instruction and format, as Jinja2 text), its declared "
            "variables (name, type, required, default), its model binding (provider, model, "
            "parameters, response schema, tools, fallbacks), its status, commit message and "
            "author, each locale's translation state, and warnings about its content. Use it "
            "before editing a prompt or to see exactly what a version says; `render_version` "
            "shows it filled in."
        ),
        notes={"key": KEY, "number": NUMBER},
        examples=({"key": "support.refund-reply", "number": 3},),
    ),
    Tool(
        name="render_version",
        title="Render a version",
        scope=Scope.PROMPTS_READ,
        operation="versions_render",
        read_only=True,
        run=render_version,
        description=(
            "Renders a version (a draft too) with variables, as the registry would serve it: "
            "the rendered sections, the chat `messages` (system, then user), and `request`, the "
            "arguments of an OpenAI `chat.completions.create(**request)` call. Nothing is sent "
            "to a model. The variables are checked against the version's declared ones first: "
            "a missing, unknown or mistyped one is refused with every problem listed "
            "(`invalid-variables`). A locale falls back (`fr-CA` to `fr` to the default); the "
            "answer says which was used. To render what an environment serves, read its stable "
            "version with `get_release` first."
        ),
        notes={
            "key": KEY,
            "number": NUMBER,
            "locale": "A BCP 47 tag, e.g. `fr-CA`; default: the prompt's default locale.",
            "variables": "The values of the version's declared variables, by name "
            '(`get_version` lists them), e.g. {"customer_name": "Ada"}.',
        },
        examples=(
            {
                "key": "support.refund-reply",
                "number": 3,
                "locale": "fr-CA",
                "variables": {"customer_name": "Zoé", "order_id": "A-17", "refund_amount": 12.5},
            },
        ),
    ),
    Tool(
        name="diff_versions",
        title="Compare two versions",
        scope=Scope.PROMPTS_READ,
        operation="versions_diff",
        read_only=True,
        run=diff_versions,
        description=(
            "What changed from version `against` to version `number` of one prompt: each "
            "template section per locale (a unified diff and line rows), the declared variables "
            "and the model binding, each with its change (added, removed, changed). Use it to "
            "review a draft before committing it, or to explain what a release would change."
        ),
        notes={
            "key": KEY,
            "number": "The newer version's number (the `after` side), e.g. 3.",
            "against": "The older version's number (the `before` side), e.g. 2.",
        },
        examples=({"key": "support.refund-reply", "number": 3, "against": 2},),
    ),
    Tool(
        name="create_draft",
        title="Open a draft",
        scope=Scope.PROMPTS_WRITE,
        operation="versions_create",
        read_only=False,
        run=create_draft,
        description=(
            "Opens a new draft version of a prompt with its whole content: `templates` (by "
            "locale, the four sections), `model` (the binding) and `variables` (the declared "
            "ones). A prompt has at most one open draft (`draft-exists` names it: edit it with "
            "`update_draft`). Easiest from an existing version: read it with `get_version`, "
            "change what you need and send back its `templates`, `model` and `variables`. The "
            "content is checked (templates compile, variables used are declared, the provider "
            "is configured); every problem comes back at once with a pointer. With "
            "`commit: true` it is committed in the same step (give a `message`). A draft serves "
            "no one until it is committed and released."
        ),
        notes={
            "key": KEY,
            **CONTENT,
            "commit": "Commit at once (default false: it stays a draft to review and render).",
        },
        examples=(
            {
                "key": "support.refund-reply",
                "message": "Shorter instruction",
                "variables": [
                    {"name": "customer_name", "type": "string", "required": True},
                    {"name": "order_id", "type": "string", "required": True},
                    {"name": "refund_amount", "type": "number", "required": True},
                ],
                "model": {"provider": "local", "model": "echo-1", "parameters": {}},
                "templates": {
                    "en": {
                        "system": "You are a support agent.",
                        "context": "Order {{ order_id }}: {{ refund_amount }} EUR refunded.",
                        "instruction": "Tell {{ customer_name }} in one sentence.",
                    }
                },
            },
        ),
    ),
    Tool(
        name="update_draft",
        title="Edit a draft",
        scope=Scope.PROMPTS_WRITE,
        operation="versions_update",
        read_only=False,
        run=update_draft,
        description=(
            "Changes an open draft: each of `templates`, `model`, `variables` and `message` "
            "that you give replaces that part whole (send every locale you keep in "
            "`templates`); what you leave out stays. A committed version never changes "
            "(`version-immutable`): open a draft instead. Checked as `create_draft` is."
        ),
        notes={"key": KEY, "number": DRAFT_NUMBER, **CONTENT},
        examples=(
            {
                "key": "support.refund-reply",
                "number": 4,
                "message": "Mention the card",
                "templates": {
                    "en": {
                        "system": "You are a support agent.",
                        "instruction": "Tell {{ customer_name }} the refund is on its card.",
                    }
                },
            },
        ),
    ),
    Tool(
        name="commit_draft",
        title="Commit a draft",
        scope=Scope.PROMPTS_WRITE,
        operation="versions_commit",
        read_only=False,
        run=commit_draft,
        description=(
            "Commits an open draft: it becomes an immutable version that can be released and "
            "evaluated. Its content is checked again, and a commit needs a message (the "
            "draft's, or `message`). Render and diff it first; releasing it is a separate step "
            "(`propose_release_change`)."
        ),
        notes={"key": KEY, "number": DRAFT_NUMBER, "message": "Replaces the draft's message."},
        examples=({"key": "support.refund-reply", "number": 4, "message": "Shorter reply"},),
    ),
)
