"""What a template may not do, found without running it: the static half of the sandbox.

The server refuses such a template when an author saves it, with its line, and the SDK refuses it
before rendering, with the same problem; both call ``forbidden_usage`` here, so they refuse the
same templates (the run-time half is ``promptregistry.core.sandbox``). Pure module.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import nodes

from .sandbox import ENVIRONMENT

# Attribute names refused statically besides those starting with "_": the ways from a value to
# code and frames. The sandbox refuses most at run time; refusing them when saving gives the
# author a line number instead of a failed render.
_INTROSPECTION_NAMES = frozenset(
    {
        "mro",
        "func_globals",
        "func_code",
        "func_closure",
        "func_defaults",
        "func_dict",
        "im_func",
        "im_self",
        "im_class",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
    }
)
# Methods the immutable sandbox refuses to call on lists, dicts, sets and deques. Values reaching
# a template are JSON data, whose members are never callable, so calling one of these names is
# always an attempt to change a value.
_MUTATING_METHODS = frozenset(
    {
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "popleft",
        "remove",
        "reverse",
        "sort",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
        "appendleft",
        "extendleft",
        "rotate",
    }
)
# Filters taking an attribute name (or dotted path): the positional index of that argument after
# the filtered value. Every filter's ``attribute=`` keyword is checked as well.
_ATTRIBUTE_ARGUMENTS = {
    "attr": 0,
    "selectattr": 0,
    "rejectattr": 0,
    "groupby": 0,
    "sum": 0,
    "sort": 2,
    "unique": 1,
    "min": 1,
    "max": 1,
}


SNIPPET_GLOBAL = "snippet"


@dataclass(frozen=True, slots=True)
class SnippetCall:
    """A ``snippet("brand.voice")`` (``version`` None: it follows the snippet's stable release)
    or ``snippet("brand.voice", version=3)`` (pinned) in a section, at ``line``."""

    key: str
    version: int | None
    line: int


@dataclass(frozen=True, slots=True)
class Issue:
    """A problem found in a section's text, before its pointer and locale are known."""

    code: str
    message: str
    line: int | None


def _forbidden_name(name: object) -> bool:
    return isinstance(name, str) and (name.startswith("_") or name in _INTROSPECTION_NAMES)


def _forbidden_path(path: object) -> str | None:
    """The forbidden part of an attribute path (``"a.__class__"``, ``"x[_y]"``), if any."""
    if not isinstance(path, str):
        return None
    for part in re.split(r"[.\[\]]", path):
        if _forbidden_name(part):
            return part
    return None


def _format_fields(fmt: str) -> Iterator[str]:
    """Field names of a ``str.format`` string, nested ones (``{0:{1.x}}``) included."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return
    for _literal, field, spec, _conversion in parsed:
        if field:
            yield field
        if spec and "{" in spec:
            yield from _format_fields(spec)


def _const_str(node: nodes.Node | None) -> str | None:
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        return node.value
    return None


def _snippet_call(node: nodes.Call) -> SnippetCall | None:
    """The literal key and version of a call to ``snippet``, or None when they are not literals
    (a key computed at render time could not be checked when the version is committed)."""
    if len(node.args) != 1 or node.dyn_args is not None or node.dyn_kwargs is not None:
        return None
    key = _const_str(node.args[0])
    if not key:
        return None
    version: int | None = None
    for keyword in node.kwargs:
        value = keyword.value.value if isinstance(keyword.value, nodes.Const) else None
        if keyword.key != "version" or type(value) is not int or value < 1:
            return None
        version = value
    return SnippetCall(key, version, node.lineno)


def snippet_calls(ast: nodes.Template) -> tuple[list[SnippetCall], list[Issue]]:
    """Every include of the template, and the uses of ``snippet`` that are not one.

    An include is ``snippet("key")`` or ``snippet("key", version=N)`` with literals only: the
    commit checks every key, version and locale, so what a template includes is known without
    running it. Any other use of the name (a computed key, ``snippet`` passed around, assigned
    or called with other arguments) is refused."""
    calls: list[SnippetCall] = []
    issues: list[Issue] = []
    callees: set[int] = set()
    for node in ast.find_all(nodes.Call):
        if isinstance(node.node, nodes.Name) and node.node.name == SNIPPET_GLOBAL:
            callees.add(id(node.node))
            call = _snippet_call(node)
            if call is None:
                issues.append(
                    Issue(
                        "template_forbidden",
                        'Include a snippet by its literal key: snippet("brand.voice") or '
                        'snippet("brand.voice", version=3).',
                        node.lineno,
                    )
                )
            else:
                calls.append(call)
    for name in ast.find_all(nodes.Name):
        if name.name == SNIPPET_GLOBAL and id(name) not in callees:
            issues.append(
                Issue(
                    "template_forbidden",
                    "'snippet' only includes a snippet: call it as snippet(\"brand.voice\").",
                    name.lineno,
                )
            )
    return calls, issues


def forbidden_usage(ast: nodes.Template) -> list[Issue]:
    """What the template would do that the sandbox refuses (or that can never work), by line.

    Walks the AST without running anything:

    1. attribute access (``x.__class__``, ``x.mro``) and constant item access
       (``x['__class__']``) to a name starting with ``_`` or an introspection name;
    2. the same names as constant attribute arguments of filters (``|attr('__class__')``,
       ``|map(attribute='__class__')``, ``|map('attr', '__class__')``, ``|selectattr('_x')``);
    3. fields of constant ``str.format`` strings (``'{0.__class__}'.format(x)``);
    4. calls to methods that mutate (``items.append(x)``);
    5. ``include``, ``import`` and ``extends``: there is no loader, a section stands alone;
    6. unknown filters and tests, which Jinja only reports at render time inside an ``if``;
    7. ``snippet`` used otherwise than to include a snippet by its literal key (``snippet_calls``).
    """
    issues: list[Issue] = list(snippet_calls(ast)[1])

    def refuse(node: nodes.Node, message: str, code: str = "template_forbidden") -> None:
        issues.append(Issue(code, message, node.lineno))

    for node in ast.find_all(
        (
            nodes.Getattr,
            nodes.Getitem,
            nodes.Filter,
            nodes.Test,
            nodes.Call,
            nodes.Extends,
            nodes.Include,
            nodes.Import,
            nodes.FromImport,
        )
    ):
        if isinstance(node, nodes.Getattr) and _forbidden_name(node.attr):
            refuse(node, f"Templates cannot reach the attribute '{node.attr}'.")
        elif isinstance(node, nodes.Getitem) and _forbidden_name(_const_str(node.arg)):
            refuse(node, f"Templates cannot reach the item '{_const_str(node.arg)}'.")
        elif isinstance(node, nodes.Filter | nodes.Test):
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            known = ENVIRONMENT.filters if isinstance(node, nodes.Filter) else ENVIRONMENT.tests
            if node.name not in known:
                refuse(node, f"There is no {kind} named '{node.name}'.", "template_syntax")
                continue
            candidates = [kw.value for kw in node.kwargs if kw.key == "attribute"]
            index = _ATTRIBUTE_ARGUMENTS.get(node.name) if kind == "filter" else None
            if index is not None and len(node.args) > index:
                candidates.append(node.args[index])
            if node.name == "map" and _const_str(node.args[0] if node.args else None) == "attr":
                candidates.extend(node.args[1:2])
            for candidate in candidates:
                part = _forbidden_path(_const_str(candidate))
                if part is not None:
                    refuse(node, f"Templates cannot reach the attribute '{part}'.")
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            method = node.node.attr
            if method in _MUTATING_METHODS:
                refuse(node, f"Templates cannot change values; '{method}()' is not allowed.")
            fmt = _const_str(node.node.node)
            if method in {"format", "format_map"} and fmt is not None:
                for field in _format_fields(fmt):
                    part = _forbidden_path(field)
                    if part is not None:
                        refuse(node, f"Templates cannot reach the attribute '{part}'.")
        elif isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            refuse(node, "Sections stand alone: include, import and extends are not available.")
    return issues
