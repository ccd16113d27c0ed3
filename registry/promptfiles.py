"""One prompt file, ``<key>.yaml``: written from a version, and read back as a checked form.

A file comes from a directory (``manage.py prompts import``) or from the body of an API request
(``POST /api/v1/prompt-files/import``, which the ``promptregistry push`` command sends): either
way it is a name and a text, read bounded (``PROMPT_FILE_MAX_BYTES``) before it is parsed, so
both are checked by the same code, problem for problem and line for line. What a file's content
means for the registry (a new version, a draft, nothing) is ``registry.sync``'s business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery

from .content import content_shape_check
from .errors import Problem
from .models import Prompt, PromptVersion
from .selectors import version_content
from .services import prompt_fields_check
from .yamlfiles import AliasRefused, FileTooLarge, LiteralDumper, NoAliasLoader, NotAFile, read_text

FILE_SUFFIX = ".yaml"
PROMPT_FIELDS = ("key", "description", "default_locale", "tags")
CONTENT_FIELDS = ("variables", "model", "templates")
# What was exported, for the reader and the stale-file check; never content.
VERSION_FIELDS = ("version", "content_hash")
KNOWN_FIELDS = {*PROMPT_FIELDS, *CONTENT_FIELDS, *VERSION_FIELDS, "message", "snippet"}

SHAPES: dict[str, type] = {
    "key": str,
    "description": str,
    "default_locale": str,
    "tags": list,
    "snippet": bool,
    "message": str,
    "variables": list,
    "model": dict,
    "templates": dict,
}


@dataclass(frozen=True, slots=True)
class PromptFile:
    """A file as it was read: its path (a bare name for a file sent over the API) and its text,
    or, when it could not be read, why (``text`` is then None)."""

    path: Path
    text: str | None
    unreadable: Problem | None = None


def prompt_document(
    prompt: Prompt, version: PromptVersion, *, version_fields: bool = True
) -> dict[str, Any]:
    """A prompt's file. Includes of snippets stay in the templates as written
    (``{{ snippet("brand.voice", version=3) }}``); a snippet's own file says ``snippet: true``.
    Without ``version_fields``, the file leaves out ``version`` and ``content_hash``: a file kept
    as the source of truth is then never refused as exported from an older version."""
    content = version_content(version)
    stamp = {"version": version.number, "content_hash": version.content_hash}
    return {
        "key": prompt.key,
        "description": prompt.description,
        "default_locale": prompt.default_locale,
        "tags": list(prompt.tags),
        **({"snippet": True} if prompt.is_snippet else {}),
        **(stamp if version_fields else {}),
        "message": version.message,
        **content.canonical(),
    }


def prompt_file_text(prompt: Prompt, version: PromptVersion, *, version_fields: bool = True) -> str:
    """The file's text: block scalars for multi-line templates, never an anchor."""
    return yaml.dump(
        prompt_document(prompt, version, version_fields=version_fields),
        Dumper=LiteralDumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
    )


def prompt_file_name(key: str) -> str:
    return f"{key}{FILE_SUFFIX}"


def prompt_files_read(*, directory: Path) -> list[PromptFile]:
    """Every ``*.yaml`` file of the directory, in name order, each read bounded."""
    files = []
    for path in sorted(directory.glob(f"*{FILE_SUFFIX}")):
        try:
            files.append(PromptFile(path, read_text(path)))
        except (OSError, UnicodeDecodeError, NotAFile) as exc:
            files.append(
                PromptFile(path, None, Problem("unreadable", f"Cannot read the file: {exc}"))
            )
        except FileTooLarge as exc:
            files.append(PromptFile(path, None, Problem("file_too_large", str(exc))))
    return files


def prompt_file_from_text(name: str, text: str) -> PromptFile:
    """A file sent as text (its name is a bare file name), held to the same size limit as a file
    read from disk, counted in UTF-8 bytes."""
    limit = settings.PROMPT_FILE_MAX_BYTES
    if len(text) > limit or len(text.encode("utf-8")) > limit:
        return PromptFile(Path(name), None, Problem("file_too_large", str(FileTooLarge(limit))))
    return PromptFile(Path(name), text.replace("\r\n", "\n").replace("\r", "\n"))


def _yaml_error(exc: yaml.YAMLError) -> Problem:
    """One line saying what is wrong and where: the path comes first in the command's output."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    refused = isinstance(exc, AliasRefused)
    detail = ("Not allowed in a prompt file: " if refused else "Not valid YAML: ") + what
    detail += f" ({context})" if context else ""
    if mark is not None:
        detail += f", column {mark.column + 1}"
    return Problem(
        "yaml_alias" if refused else "invalid_yaml",
        detail,
        line=mark.line + 1 if mark is not None else None,
    )


def _not_json(value: Any, pointer: str) -> list[Problem]:
    """YAML values JSON cannot hold (dates, binary, NaN, non-text keys): the database stores JSON."""
    if isinstance(value, dict):
        problems = []
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(
                    Problem("wrong_type", f"The key {key!r} must be text.", f"{pointer}/{key}")
                )
            problems += _not_json(item, f"{pointer}/{key}")
        return problems
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _not_json(item, f"{pointer}/{i}")]
    if value is None or isinstance(value, str | bool | int):
        return []
    if isinstance(value, float) and math.isfinite(value):
        return []
    return [
        Problem(
            "wrong_type",
            f"{value!r} is not a JSON value (text, number, true/false, null, list or mapping); "
            "quote it to make it text.",
            pointer,
        )
    ]


def _node_line(root: yaml.Node | None, pointer: str, section_line: int | None) -> int | None:
    """The line of the file a JSON Pointer leads to; for a literal block (``|``) holding a
    template, the line of the template's own ``section_line`` within it."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for raw in [t for t in pointer.split("/")[1:] if t]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, yaml.MappingNode):
            pair = next((p for p in node.value if str(p[0].value) == token), None)
            if pair is None:
                return line
            node, line = pair[1], pair[0].start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and token.isdigit() and int(token) < len(node.value)
        ):
            node = node.value[int(token)]
            line = node.start_mark.line + 1
        else:
            return line
    if isinstance(node, yaml.ScalarNode) and node.style == "|" and section_line is not None:
        return node.start_mark.line + 1 + section_line
    return line


def located(problems: list[Problem], root: yaml.Node | None) -> list[Problem]:
    """The problems with ``line`` a line of the file (a template problem's own line is within its
    section, and its detail says so)."""
    return [
        replace(p, line=_node_line(root, p.pointer, p.line) if p.pointer else p.line)
        for p in problems
    ]


def prompt_file_parse(
    file: PromptFile,
) -> tuple[dict[str, Any] | None, yaml.Node | None, list[Problem]]:
    """The file's document and its node tree (for lines), with the problems of its form.

    The document is None when its form stops the check there (unreadable, not YAML, a missing or
    mistyped field, content of the wrong shape). Otherwise its content is checked next, and an
    unknown field or a wrong file name is reported along with whatever that check finds.
    """
    if file.text is None:
        return None, None, [file.unreadable or Problem("unreadable", "Cannot read the file.")]
    try:
        loader = NoAliasLoader(file.text)
        try:
            # The node tree keeps each value's line; the document is built from it.
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        return None, None, [_yaml_error(exc)]
    if not isinstance(data, dict):
        return None, root, [Problem("invalid_document", "The file must hold a mapping of fields.")]
    problems = [
        Problem("unknown_field", f"Unknown field {name!r}.", f"/{name}")
        for name in data
        if name not in KNOWN_FIELDS
    ]
    if isinstance(data.get("key"), str) and file.path.name != prompt_file_name(data["key"]):
        problems.append(
            Problem(
                "wrong_file_name",
                f"A file for {data['key']!r} must be named {data['key']}.yaml.",
                "/key",
            )
        )
    blocking = [
        Problem("missing_field", f"The field {name!r} is required.", f"/{name}")
        for name in ("key", "model", "templates")
        if name not in data
    ]
    blocking += [
        Problem("wrong_type", f"{name!r} must be a {kind.__name__}.", f"/{name}")
        for name, kind in SHAPES.items()
        if name in data and not isinstance(data[name], kind)
    ]
    if not blocking:
        blocking = content_shape_check(data) + _not_json(data, "")
    if blocking:
        return None, root, problems + blocking
    problems += prompt_fields_check(
        key=data["key"],
        description=data.get("description"),
        default_locale=data.get("default_locale"),
        tags=data.get("tags"),
    )
    return data, root, problems


def prompts_export(*, directory: Path) -> list[Path]:
    """Writes one file per prompt with a committed version; returns the paths written.

    Reads each prompt's latest committed version and its rows in three queries, however many
    prompts and versions there are.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for version in prompt_file_versions(latest_committed_versions()):
        prompt = version.prompt
        path = directory / prompt_file_name(prompt.key)
        # Written aside, then renamed: a reader (git, an editor) never sees half a file.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(prompt_file_text(prompt, version), encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def latest_committed_versions() -> QuerySet[PromptVersion]:
    """Each prompt's latest committed version."""
    latest_number = (
        PromptVersion.objects.filter(
            prompt=OuterRef("prompt"), status=PromptVersion.Status.COMMITTED
        )
        .order_by("-number")
        .values("number")[:1]
    )
    return PromptVersion.objects.filter(
        status=PromptVersion.Status.COMMITTED, number=Subquery(latest_number)
    )


def prompt_file_versions(
    versions: QuerySet[PromptVersion], *, tag: str = ""
) -> QuerySet[PromptVersion]:
    """``versions`` (of the prompts with ``tag``, if given) by key, with the rows their files
    need prefetched: three queries however many there are."""
    if tag:
        # As prompt_list matches a tag: the quoted element in the list's JSON text.
        versions = versions.filter(prompt__tags__icontains=f'"{tag}"')
    return (
        versions.select_related("prompt")
        .prefetch_related("variables", "templates")
        .order_by("prompt__key")
    )
