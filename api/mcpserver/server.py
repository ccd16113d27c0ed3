"""The MCP server itself (the ``mcp`` package's low-level ``Server``): ``tools/list`` and
``tools/call`` for the key the HTTP request authenticated (``api.mcpserver.view`` puts it in the
request's ASGI scope). The tools are sync Django code: they run on the request's own thread
(``sync_to_async``, thread-sensitive), with its database connection."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mcp_types as types
from asgiref.sync import sync_to_async
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from ..models import ApiKey
from .catalog import UnknownTool, tool_call, tools_for
from .tools import Tool, ToolAnswer

INSTRUCTIONS = """\
The Prompt Registry holds versioned, localized LLM prompts and what each environment serves.
A prompt has a key (support.refund-reply) and numbered versions: drafts, then committed versions
that never change. A release says which version an environment (development, staging,
production) serves: a stable version, maybe a canary, an experiment or a shadow.
Start with list_prompts, then get_version / render_version / diff_versions to read a prompt,
and get_release / get_release_history for what an environment serves. The tools you see are
those your API key's scopes allow. A refused call answers a problem document (type, detail,
and for bad input an `errors` list with a JSON pointer for each problem): fix what it names and
call again. Release changes affect live traffic: read the release first and say what you will
change before calling propose_release_change."""


def _version() -> str:
    try:
        return version("prompt-registry")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return ""


def caller(ctx: ServerRequestContext[Any, Any]) -> ApiKey:
    """The key the HTTP request was authenticated with (``api.mcpserver.view``)."""
    api_key = ctx.request.scope["state"]["api_key"] if ctx.request is not None else None
    if not isinstance(api_key, ApiKey):  # only the view serves this server: a bug if reached
        raise MCPError(types.INTERNAL_ERROR, "The request carries no authenticated API key.")
    return api_key


def tool_listing(tool: Tool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        title=tool.title,
        description=tool.description,
        input_schema=tool.input_schema(),
        annotations=types.ToolAnnotations(
            title=tool.title,
            read_only_hint=tool.read_only,
            destructive_hint=tool.destructive,
            open_world_hint=False,
        ),
    )


def tools_listed(api_key: ApiKey) -> list[types.Tool]:
    return [tool_listing(tool) for tool in tools_for(api_key)]


async def list_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    # Sync: the schemas are built from the API's published schema, once per process.
    listed = await sync_to_async(tools_listed)(caller(ctx))
    return types.ListToolsResult(tools=listed)


async def call_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    api_key = caller(ctx)
    try:
        answer: ToolAnswer = await sync_to_async(tool_call)(
            api_key, params.name, params.arguments or {}
        )
    except UnknownTool as exc:
        # Not a tool's refusal but a call to no tool: a protocol error, as MCP asks.
        raise MCPError(types.INVALID_PARAMS, str(exc)) from exc
    return types.CallToolResult(
        content=[types.TextContent(text=answer.text)],
        structured_content=answer.content,
        is_error=answer.refused,
    )


server: Server[Any] = Server(
    "prompt-registry",
    version=_version(),
    title="Prompt Registry",
    instructions=INSTRUCTIONS,
    on_list_tools=list_tools,
    on_call_tool=call_tool,
)
