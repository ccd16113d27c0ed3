"""Every tool of the MCP server, and which of them a key sees and may call: those of the scopes
it carries (a key without ``prompts:write`` is not shown the write tools, and is refused one it
calls anyway, as the API refuses it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..models import ApiKey
from . import evaluations, prompts, releases
from .tools import Tool, ToolAnswer, tool_run

TOOLS: dict[str, Tool] = {
    tool.name: tool for tool in (*prompts.TOOLS, *releases.TOOLS, *evaluations.TOOLS)
}


class UnknownTool(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"There is no tool {name!r}; tools/list names the tools of your key.")


def tools_for(api_key: ApiKey) -> list[Tool]:
    """The tools ``api_key``'s scopes allow, in the catalog's order."""
    return [tool for tool in TOOLS.values() if api_key.has_scope(tool.scope)]


def tool_call(api_key: ApiKey, name: str, arguments: Mapping[str, Any]) -> ToolAnswer:
    tool = TOOLS.get(name)
    if tool is None:
        raise UnknownTool(name)
    return tool_run(tool, api_key=api_key, arguments=arguments)
