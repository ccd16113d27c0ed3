"""YAML files that people write: read bounded and without aliases, written for diffs in git.

Prompt files come from repositories that many people (and their CI) can write to, so reading one
must cost what its size says. YAML aliases break that: ten nested levels of ``&a [*b, *b, ...]``
make a few hundred bytes that every walk over the document (validation, hashing, storing) sees as
billions of nodes. PyYAML shares an alias's node instead of copying it, but everything after the
parser walks the shared structure as a tree. So the loader refuses anchors and aliases outright
(a prompt file has no use for them), and a file is read up to a size limit before it is parsed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings


class FileTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"The file is larger than {limit:,} bytes (PROMPT_FILE_MAX_BYTES).")


class NotAFile(Exception):
    """A directory, a FIFO (whose open would block), a device: never read."""


class AliasRefused(yaml.MarkedYAMLError):
    """An anchor (``&name``) or an alias (``*name``, ``<<: *name``) in a file read by
    ``NoAliasLoader``."""


class NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors and aliases where the parser meets them, before any
    node is built from them."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise AliasRefused(
                problem=f"the alias *{event.anchor} is not allowed; write the value out in full",
                problem_mark=event.start_mark,
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise AliasRefused(
                problem=f"the anchor &{anchor} is not allowed (aliases are refused); remove it",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def read_text(path: Path) -> str:
    """The file's UTF-8 text, newlines made ``\\n`` (as ``Path.read_text`` does), reading at most
    ``PROMPT_FILE_MAX_BYTES`` + 1 bytes. Raises ``NotAFile``, ``FileTooLarge``, ``OSError`` and
    ``UnicodeDecodeError``."""
    if not path.is_file():
        raise NotAFile(f"{path.name} is not a regular file.")
    limit = settings.PROMPT_FILE_MAX_BYTES
    with path.open("rb") as file:
        raw = file.read(limit + 1)
    if len(raw) > limit:
        raise FileTooLarge(limit)
    return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


class LiteralDumper(yaml.SafeDumper):
    """Multi-line template text as YAML block scalars, so diffs in git read like the prompt; never
    an anchor, even for a value that appears twice, since the import refuses them."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


LiteralDumper.add_representer(str, _str_representer)
