"""JSON Schemas written by authors: checked before they are saved, validated without any fetch.

Authors write JSON Schemas in two places: a model binding's response schema (checked here by
``registry.content``, used by ``runs.providers``) and a ``json_schema`` scorer's expectation
(``evaluations.scoring.scorers``). Both are user content, and jsonschema's defaults would let them
make the server act (DESIGN "One guarded way out": nothing fetches a URL found in user content):

- A ``$ref`` (or ``$dynamicRef``) to ``file:///etc/passwd`` or ``http://169.254.169.254/...`` makes
  jsonschema fetch it with ``urllib`` when it validates, and the fetched text can surface in the
  validation error that reaches a 502 detail and a call record.
- A ``pattern`` such as ``(a+)+$`` runs Python's ``re`` on a model's answer for minutes.
- A schema of a million nodes, or refs that fan out (each definition using the previous one
  twice), costs more to check an answer against than the model took to write it.

So, two halves:

1. ``schema_problems(schema)`` at save time: size and depth within bounds, valid JSON Schema
   2020-12, every ``$ref``/``$dynamicRef`` a ``#`` reference that resolves inside the document, no
   ``$id`` (it would move the base that ``#`` references resolve against, and a schema here is one
   document), every regex safe (``registry.regexes``), and the expansion of its references bounded.
   Each problem carries the JSON Pointer of the offending value.
2. ``schema_validator(schema)`` at run time, for schemas stored before these rules or written
   around them: references resolve through a ``referencing.Registry`` whose ``retrieve`` refuses
   everything, an unresolvable (or endlessly looping) reference is a validation error instead of
   an exception, and a ``pattern`` is never matched against a text longer than
   ``MAX_REGEX_INPUT_CHARS``.

The walk for 1. looks at every object in the document, not only at schema positions: a ``#``
pointer can reach any value (``#/const/x``) and validation then treats it as a schema, so a
``$ref`` inside ``const`` or ``examples`` is refused too. Pure: no models, no settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError

from .errors import Problem
from .regexes import MAX_REGEX_CHARS, MAX_REGEX_INPUT_CHARS, regex_problem

MAX_SCHEMA_CHARS = 100_000  # as compact JSON; response schemas in practice are a few KB
MAX_SCHEMA_DEPTH = 32  # nested objects and arrays
# Objects and arrays in the document: checking a schema against the metaschema costs about a
# millisecond per subschema, so this bounds the check itself to about a second.
MAX_SCHEMA_NODES = 1_000
# How many schema nodes checking one value may visit when every reference is replaced by what it
# points at (a recursive reference counts once: its cost is bounded by the value's own depth).
MAX_SCHEMA_EXPANDED_NODES = 10_000

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef")
_NOT_FETCHED = (
    "only references inside the schema ('#/$defs/name' or '#anchor') are followed, "
    "never a file or a URL"
)


def _pointer_token(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _nodes(value: Any, pointer: str = "") -> Iterator[tuple[str, Any, int]]:
    """Every object and array in ``value`` with its pointer and depth, in document order and
    iteratively (a deep document must not overflow the stack before its depth is refused)."""
    stack = [(pointer, value, 1)]
    while stack:
        at, node, depth = stack.pop()
        yield at, node, depth
        if depth > MAX_SCHEMA_DEPTH:
            continue  # refused by the caller; no need to go further down
        if isinstance(node, Mapping):
            children = [(f"{at}/{_pointer_token(str(k))}", v) for k, v in node.items()]
        elif isinstance(node, list):
            children = [(f"{at}/{i}", v) for i, v in enumerate(node)]
        else:
            continue
        stack.extend(
            (child_at, child, depth + 1)
            for child_at, child in reversed(children)
            if isinstance(child, Mapping | list)
        )


def schema_problems(schema: Any, *, pointer: str = "") -> list[Problem]:
    """Every reason not to save ``schema``, each at its pointer (under ``pointer``).

    1. A JSON object within ``MAX_SCHEMA_CHARS``, ``MAX_SCHEMA_DEPTH`` and ``MAX_SCHEMA_NODES``
       (else nothing more is checked: the rest would spend what the bounds are there to save).
    2. Valid against the JSON Schema 2020-12 metaschema.
    3. No ``$id``; every ``$ref``/``$dynamicRef`` starts with ``#`` and resolves in the document.
    4. Every ``pattern`` and ``patternProperties`` key is a regex ``registry.regexes`` accepts.
    5. The references expand to at most ``MAX_SCHEMA_EXPANDED_NODES`` nodes.
    """
    if not isinstance(schema, Mapping):
        return [Problem("invalid_json_schema", "A JSON Schema must be an object.", pointer)]
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return [Problem("invalid_json_schema", "A JSON Schema must be JSON.", pointer)]
    if size > MAX_SCHEMA_CHARS:
        return [
            Problem(
                "schema_too_large",
                f"The schema has {size} characters as JSON; at most {MAX_SCHEMA_CHARS}.",
                pointer,
            )
        ]
    problems: list[Problem] = []
    nodes = list(_nodes(schema))
    deepest = max(nodes, key=lambda n: n[2])
    if deepest[2] > MAX_SCHEMA_DEPTH:
        return [
            Problem(
                "schema_too_deep",
                f"The schema nests objects and arrays more than {MAX_SCHEMA_DEPTH} levels deep.",
                pointer + deepest[0],
            )
        ]
    if len(nodes) > MAX_SCHEMA_NODES:
        return [
            Problem(
                "schema_too_large",
                f"The schema has {len(nodes)} objects and arrays; at most {MAX_SCHEMA_NODES}.",
                pointer,
            )
        ]
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "".join(f"/{_pointer_token(str(p))}" for p in exc.absolute_path)
        problems.append(
            Problem(
                "invalid_json_schema",
                f"Not valid JSON Schema (2020-12): {exc.message}",
                pointer + at,
            )
        )
    references: list[tuple[str, str]] = []
    for at, node, _ in nodes:
        if not isinstance(node, Mapping):
            continue
        problems += _node_problems(node, pointer + at, references)
    if problems:
        return problems
    return _references_problems(schema, references, pointer)


def _node_problems(
    node: Mapping[str, Any], at: str, references: list[tuple[str, str]]
) -> list[Problem]:
    problems: list[Problem] = []
    if isinstance(node.get("$id"), str):
        problems.append(
            Problem(
                "schema_id_refused",
                "Remove '$id': a schema here is one document, and an '$id' would change what "
                "its '#' references point at.",
                f"{at}/$id",
            )
        )
    for keyword in REFERENCE_KEYWORDS:
        ref = node.get(keyword)
        if not isinstance(ref, str):
            continue
        if ref.startswith("#"):
            references.append((f"{at}/{_pointer_token(keyword)}", ref))
        else:
            problems.append(
                Problem(
                    "schema_reference_refused",
                    f"The reference {ref[:200]!r} leaves the schema: {_NOT_FETCHED}.",
                    f"{at}/{_pointer_token(keyword)}",
                )
            )
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        problems += _regex_problems(pattern, f"{at}/pattern")
    pattern_properties = node.get("patternProperties")
    if isinstance(pattern_properties, Mapping):
        for key in pattern_properties:
            at_key = f"{at}/patternProperties/{_pointer_token(str(key))}"
            problems += _regex_problems(str(key), at_key)
    return problems


def _regex_problems(pattern: str, at: str) -> list[Problem]:
    if len(pattern) > MAX_REGEX_CHARS:
        return [
            Problem("invalid_regex", f"A pattern has at most {MAX_REGEX_CHARS} characters.", at)
        ]
    # jsonschema matches with re.search: unanchored unless the pattern itself starts with ^.
    code, detail = regex_problem(pattern, anchored=False)
    return [Problem(code, detail, at)] if code else []


def _references_problems(
    schema: Mapping[str, Any], references: list[tuple[str, str]], pointer: str
) -> list[Problem]:
    """Every '#' reference resolves, and together they expand to a bounded number of nodes."""
    resolver = _registry(schema).resolver()
    targets: dict[str, Any] = {}
    problems: list[Problem] = []
    for at, ref in references:
        try:
            targets[ref] = resolver.lookup(ref).contents
        except referencing.exceptions.Unresolvable:
            problems.append(
                Problem(
                    "schema_reference_unresolvable",
                    f"The reference {ref[:200]!r} points at nothing in the schema.",
                    at,
                )
            )
    if problems:
        return problems
    try:
        expanded = _expanded_nodes(schema, targets)
    except RecursionError:  # a chain of references thousands long: checking a value recurses too
        expanded = MAX_SCHEMA_EXPANDED_NODES + 1
    if expanded > MAX_SCHEMA_EXPANDED_NODES:
        return [
            Problem(
                "schema_too_large",
                f"With its references expanded the schema has more than "
                f"{MAX_SCHEMA_EXPANDED_NODES} nodes (a definition used twice by the next one, "
                "again and again, doubles each time); use each definition fewer times.",
                pointer,
            )
        ]
    return []


def _expanded_nodes(schema: Mapping[str, Any], targets: Mapping[str, Any]) -> int:
    """How many nodes the schema has with every reference replaced by its target, memoized per
    target; a reference back into a target being expanded counts 1 (recursion that a value's own
    depth bounds). Stops counting past the limit."""
    memo: dict[int, int] = {}
    expanding: set[int] = set()

    def cost(node: Any) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in expanding:
            return 1
        expanding.add(key)
        total = 1
        children = node.values() if isinstance(node, Mapping) else node
        for child in children:
            if isinstance(child, Mapping | list):
                total += cost(child)
            if total > MAX_SCHEMA_EXPANDED_NODES:
                break
        if isinstance(node, Mapping):
            for keyword in REFERENCE_KEYWORDS:
                ref = node.get(keyword)
                if isinstance(ref, str) and isinstance(targets.get(ref), Mapping | list):
                    total += cost(targets[ref])
        expanding.discard(key)
        memo[key] = total
        return total

    return cost(schema)


# --- validating ----------------------------------------------------------------------------------


def _refuse_retrieval(uri: str) -> referencing.Resource[Any]:
    # Called for any reference that is not inside the document: never fetch it.
    raise referencing.exceptions.NoSuchResource(ref=uri)


def _registry(schema: Mapping[str, Any]) -> referencing.Registry[Any]:
    resource = referencing.jsonschema.DRAFT202012.create_resource(schema)
    return referencing.Registry(retrieve=_refuse_retrieval).with_resource("", resource)


_BASE = jsonschema.Draft202012Validator


def _bounded_reference(keyword: str):
    followed = _BASE.VALIDATORS[keyword]

    def reference(validator, ref, instance, schema):
        try:
            yield from followed(validator, ref, instance, schema)
        except referencing.exceptions.Unresolvable:
            yield ValidationError(
                f"the schema's reference {ref[:200]!r} cannot be followed: {_NOT_FETCHED}"
            )
        except RecursionError:
            yield ValidationError(f"the schema's reference {ref[:200]!r} loops without end")

    return reference


def _bounded_pattern(validator, pattern, instance, schema):
    if isinstance(instance, str) and len(instance) > MAX_REGEX_INPUT_CHARS:
        yield ValidationError(
            f"a text of {len(instance)} characters is longer than the {MAX_REGEX_INPUT_CHARS} "
            "a pattern is matched against"
        )
        return
    yield from _BASE.VALIDATORS["pattern"](validator, pattern, instance, schema)


def _bounded_names(keyword: str):
    """``keyword``'s validator, refusing first an object with a property name too long to match a
    pattern against: ``patternProperties`` matches each name, and ``additionalProperties`` and
    ``unevaluatedProperties`` match them against the sibling ``patternProperties`` too."""

    def validate(validator, value, instance, schema):
        if isinstance(instance, Mapping):
            long = next((k for k in instance if len(k) > MAX_REGEX_INPUT_CHARS), None)
            if long is not None:
                yield ValidationError(
                    f"a property name of {len(long)} characters is longer than the "
                    f"{MAX_REGEX_INPUT_CHARS} a pattern is matched against"
                )
                return
        yield from _BASE.VALIDATORS[keyword](validator, value, instance, schema)

    return validate


SafeValidator = jsonschema.validators.extend(
    _BASE,
    {
        "$ref": _bounded_reference("$ref"),
        "$dynamicRef": _bounded_reference("$dynamicRef"),
        "pattern": _bounded_pattern,
        **{
            keyword: _bounded_names(keyword)
            for keyword in ("patternProperties", "additionalProperties", "unevaluatedProperties")
        },
    },
)


def schema_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A JSON Schema 2020-12 validator for ``schema`` that never fetches anything (see above).

    Its ``iter_errors`` never raises for a reference it cannot follow: it reports it as an error,
    so an answer checked against a broken stored schema fails as invalid, saying why."""
    return SafeValidator(schema, registry=_registry(schema))
