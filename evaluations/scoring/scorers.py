"""Scorers: does a model's answer meet a dataset case's expectation?

An expectation is the case's JSON, naming its scorer and that scorer's parameters, e.g.
``{"scorer": "contains", "value": "refund", "case_sensitive": false}``. Two entry points:

- ``scorer_check(expectation)`` lists every problem with an expectation's shape (unknown scorer,
  missing or ill-typed parameters, unknown fields, an invalid or unsafe regex, an invalid JSON
  Schema, a malformed JSON Pointer) as ``registry.errors.Problem``s whose pointers are relative to
  the expectation (pass ``pointer="/cases/3/expectation"`` to place them in a larger document).
  Dataset imports call it, so a bad case is refused before any run.
- ``score(output, expectation, *, judge=None, inputs=None, guardrails=None)`` returns a
  ``Score``. It checks the expectation again first (a hostile regex never runs, even from an
  unchecked case) and never raises for a bad output or a failed judge: either is a failed
  ``Score`` that says why. An ``llm_judge`` expectation needs a ``judge`` (a ``Judge``), a
  ``guardrails`` one the run's record of the guardrail checks that fired; without it, it fails,
  saying so. A run a guardrail refused fails every other kind.

The kinds: ``exact``, ``contains``, ``regex``, ``json_schema``, ``json_field``, ``numeric``,
``similarity`` (pure functions of output and expectation), ``guardrails`` (what the guardrails
did, not the output: ``evaluations.scoring.guardrail_scorer``) and ``llm_judge`` (asks a rubric
prompt released in the registry: ``evaluations.scoring.judge.registry_judge``; this module holds
only its contract, ``JudgeRequest``, ``JudgeFailed`` and ``rubric_check``).

Regexes and catastrophic backtracking: a ``regex`` pattern, and any ``pattern`` in a
``json_schema`` scorer's schema, must pass ``registry.regexes.regex_problem`` (see its docstring),
and only outputs of at most ``MAX_REGEX_INPUT_CHARS`` characters are matched (a longer one fails,
saying so). A ``json_schema`` scorer's schema follows ``registry.json_schemas``: only references
inside it, never a file or a URL.

Dependencies: ``registry.errors``/``content``/``regexes``/``json_schemas``/``guardrails`` and
``runs.comparison`` (pure). The judge that asks the registry, which needs the releases and runs
apps, is ``evaluations.scoring.judge``: this module never imports it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import jsonschema

from registry.content import pointer_token
from registry.errors import Problem
from registry.json_schemas import schema_problems, schema_validator
from registry.regexes import MAX_REGEX_CHARS, MAX_REGEX_INPUT_CHARS, regex_problem
from runs.comparison import normalize_text, similarity

from . import guardrail_scorer
from .guardrail_scorer import guardrails_expectation_problems

logger = logging.getLogger(__name__)

MAX_CONTAINS_VALUES = 100
MAX_TEXT_CHARS = 10_000  # an expected value longer than this is a mistake, not a test
SHOWN_CHARS = 80  # values quoted in a Score's detail are cut to this


@dataclass(frozen=True, slots=True)
class Score:
    passed: bool
    score: float  # 0 (nothing right) to 1 (fully meets the expectation)
    detail: str  # why, for the person reading the report


def _fail(detail: str) -> Score:
    return Score(passed=False, score=0.0, detail=detail)


def _binary(passed: bool, detail: str) -> Score:
    return Score(passed=passed, score=1.0 if passed else 0.0, detail=detail)


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
    return repr(text) if isinstance(value, str) else text


def _is_number(value: Any) -> bool:
    # JSON's numbers: true is not 1, and NaN or infinity are not numbers at all.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # a huge int overflows isfinite


# --- checking an expectation ---------------------------------------------------------------------


class _Reader:
    """Reads an expectation's fields, collecting a Problem for each one that is wrong."""

    def __init__(self, data: Mapping[str, Any], pointer: str) -> None:
        self.data, self.pointer, self.problems = data, pointer, []

    def at(self, name: str) -> str:
        return f"{self.pointer}/{pointer_token(name)}"

    def refuse(self, name: str, code: str, detail: str) -> None:
        self.problems.append(Problem(code, detail, self.at(name)))

    def missing(self, name: str, required: bool) -> bool:
        if name in self.data:
            return False
        if required:
            self.refuse(name, "missing_field", f"The field {name!r} is required.")
        return True

    def text(self, name: str, *, required: bool = True, empty: bool = False) -> str | None:
        if self.missing(name, required):
            return None
        value = self.data[name]
        if not isinstance(value, str) or (not empty and not value):
            self.refuse(
                name, "wrong_type", f"{name!r} must be {'' if empty else 'non-empty '}text."
            )
        elif len(value) > MAX_TEXT_CHARS:
            self.refuse(name, "invalid_value", f"{name!r} is longer than {MAX_TEXT_CHARS} chars.")
        else:
            return value
        return None

    def flag(self, name: str) -> None:
        if not self.missing(name, False) and not isinstance(self.data[name], bool):
            self.refuse(name, "wrong_type", f"{name!r} must be true or false.")

    def number(
        self, name: str, *, required: bool, lo: float | None = None, hi: float | None = None
    ):
        if self.missing(name, required):
            return
        value = self.data[name]
        if not _is_number(value):
            self.refuse(name, "wrong_type", f"{name!r} must be a number.")
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            self.refuse(name, "invalid_value", f"{name!r} must be {bounds}, not {value}.")

    def pointer_field(self, name: str, *, required: bool) -> None:
        text = self.text(name, required=required, empty=True)
        if text is not None and not _pointer_valid(text):
            self.refuse(
                name,
                "invalid_pointer",
                "Write a JSON Pointer (RFC 6901): empty for the whole output, or '/'-separated "
                "names with '~0' for '~' and '~1' for '/'.",
            )


def _check_exact(r: _Reader) -> None:
    r.text("value", empty=True)
    r.flag("case_sensitive")
    r.flag("normalize_whitespace")


def _check_contains(r: _Reader) -> None:
    r.flag("case_sensitive")
    r.flag("normalize_whitespace")
    if not r.missing("match", False) and r.data["match"] not in ("any", "all"):
        r.refuse("match", "invalid_value", "'match' must be 'any' or 'all'.")
    if ("value" in r.data) == ("values" in r.data):
        r.refuse("value", "missing_field", "Give either 'value' (one text) or 'values' (a list).")
        return
    if "value" in r.data:
        r.text("value")
        return
    values = r.data["values"]
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_CONTAINS_VALUES:
        detail = f"'values' must be a list of 1 to {MAX_CONTAINS_VALUES} texts."
        r.refuse("values", "wrong_type", detail)
        return
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
            r.problems.append(
                Problem("wrong_type", "Each value must be non-empty text.", f"{r.at('values')}/{i}")
            )


def _check_regex(r: _Reader) -> None:
    r.flag("case_sensitive")
    r.flag("full_match")
    pattern = r.text("pattern")
    if pattern is None:
        return
    if len(pattern) > MAX_REGEX_CHARS:
        r.refuse("pattern", "invalid_regex", f"A pattern has at most {MAX_REGEX_CHARS} characters.")
        return
    anchored = r.data.get("full_match") is True
    code, detail = regex_problem(pattern, anchored=anchored)
    if code:
        r.refuse("pattern", code, detail)


def _check_json_schema(r: _Reader) -> None:
    if r.missing("schema", True):
        return
    schema = r.data["schema"]
    if not isinstance(schema, Mapping):
        r.refuse("schema", "wrong_type", "'schema' must be a JSON Schema object.")
        return
    r.problems += _schema_problems(json.dumps(schema, sort_keys=True), r.at("schema"))


def _check_json_field(r: _Reader) -> None:
    r.pointer_field("pointer", required=True)
    r.missing("value", True)  # any JSON value, null included


def _check_numeric(r: _Reader) -> None:
    r.number("value", required=True)
    r.pointer_field("pointer", required=False)
    r.number("abs_tol", required=False, lo=0)
    r.number("rel_tol", required=False, lo=0)


def _check_similarity(r: _Reader) -> None:
    r.text("value")
    r.number("threshold", required=True, lo=0, hi=1)


def _check_llm_judge(r: _Reader) -> None:
    r.text("prompt")
    r.text("environment")
    r.text("locale", required=False)
    r.number("pass_threshold", required=False, lo=0, hi=1)
    # 'expected' is any JSON value: text goes to the rubric as it is, anything else as JSON.


def _check_guardrails(r: _Reader) -> None:
    for name, code, detail in guardrails_expectation_problems(r.data):
        r.refuse(name, code, detail)


# scorer -> (its fields besides "scorer", the check of its parameters)
_CHECKS: dict[str, tuple[frozenset[str], Callable[[_Reader], None]]] = {
    "exact": (frozenset({"value", "case_sensitive", "normalize_whitespace"}), _check_exact),
    "contains": (
        frozenset({"value", "values", "match", "case_sensitive", "normalize_whitespace"}),
        _check_contains,
    ),
    "regex": (frozenset({"pattern", "case_sensitive", "full_match"}), _check_regex),
    "json_schema": (frozenset({"schema"}), _check_json_schema),
    "json_field": (frozenset({"pointer", "value"}), _check_json_field),
    "numeric": (frozenset({"value", "pointer", "abs_tol", "rel_tol"}), _check_numeric),
    "similarity": (frozenset({"value", "threshold"}), _check_similarity),
    "llm_judge": (
        frozenset({"prompt", "environment", "locale", "pass_threshold", "expected"}),
        _check_llm_judge,
    ),
    "guardrails": (guardrail_scorer.FIELDS, _check_guardrails),
}
SCORERS = tuple(_CHECKS)


def scorer_check(expectation: Any, *, pointer: str = "") -> list[Problem]:
    """Every problem with an expectation's shape, each at its JSON Pointer (see the docstring)."""
    if not isinstance(expectation, Mapping):
        return [Problem("wrong_type", "An expectation must be a JSON object.", pointer)]
    r = _Reader(expectation, pointer)
    if r.missing("scorer", True):
        return r.problems
    kind = expectation["scorer"]
    if not isinstance(kind, str) or kind not in _CHECKS:
        r.refuse(
            "scorer", "unknown_scorer", f"Unknown scorer; the scorers are {', '.join(SCORERS)}."
        )
        return r.problems
    fields, check = _CHECKS[kind]
    for name in expectation:
        if name != "scorer" and name not in fields:
            known = ", ".join(sorted(fields))
            r.refuse(name, "unknown_field", f"Unknown field for {kind}; its fields are {known}.")
    check(r)
    return r.problems


@functools.lru_cache(maxsize=512)
def _compiled(pattern: str, flags: int) -> re.Pattern[str]:
    return re.compile(pattern, flags)


# --- JSON helpers ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _schema_problems(schema_text: str, pointer: str) -> tuple[Problem, ...]:
    # Cached: ``score`` checks its expectation again for every case of a run.
    return tuple(schema_problems(json.loads(schema_text), pointer=pointer))


@functools.lru_cache(maxsize=256)
def _validator(schema_text: str) -> jsonschema.protocols.Validator:
    return schema_validator(json.loads(schema_text))


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse(output: str) -> tuple[Any, str]:
    """(value, "") when the output is strict JSON (no NaN or Infinity), else (None, why not)."""
    try:
        return json.loads(output, parse_constant=_refuse_constant), ""
    except json.JSONDecodeError as exc:
        return None, f"the output is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except (ValueError, RecursionError) as exc:  # a refused constant, a huge integer, deep nesting
        return None, f"the output is not JSON: {exc}"


_POINTER = re.compile(r"(/([^~/]|~[01])*)*")


def _pointer_valid(pointer: str) -> bool:
    return _POINTER.fullmatch(pointer) is not None


_ABSENT = object()


def _pointer_get(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` (RFC 6901), or ``_ABSENT``."""
    value = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and re.fullmatch(r"0|[1-9][0-9]*", token):
            if int(token) >= len(value):
                return _ABSENT
            value = value[int(token)]
        else:
            return _ABSENT
    return value


def _decimal(value: int | float) -> Fraction:
    """A JSON number as the decimal it was written as: ``repr`` of a float parsed from ``19.99``
    is ``19.99``, so 19.99 is 0.01 from 20 exactly, not 0.0100000000000015 as binary floats say."""
    return Fraction(value) if isinstance(value, int) else Fraction(repr(value))


def _shown_number(value: Fraction) -> str:
    try:
        return f"{float(value):g}"
    except OverflowError:  # an integer too large for a float: still compared exactly
        return "more than 1e308"


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (1 == 1.0, exactly, however large), never true == 1."""
    if _is_number(a) and _is_number(b):
        return _decimal(a) == _decimal(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_json_equal, a, b))
    return type(a) is type(b) and a == b


# --- the pure scorers -----------------------------------------------------------------------------


def _text(value: str, e: Mapping[str, Any]) -> str:
    if e.get("normalize_whitespace", False):
        value = normalize_text(value)
    return value if e.get("case_sensitive", True) else value.casefold()


def _exact(output: str, e: Mapping[str, Any]) -> Score:
    if _text(output, e) == _text(e["value"], e):
        return _binary(True, "The output equals the expected text.")
    return _binary(False, f"Expected {_shown(e['value'])}, got {_shown(output)}.")


def _contains(output: str, e: Mapping[str, Any]) -> Score:
    values = [e["value"]] if "value" in e else list(e["values"])
    text = _text(output, e)
    missing = [v for v in values if _text(v, e) not in text]
    if e.get("match", "all") == "any":
        passed = len(missing) < len(values)
        found = [v for v in values if v not in missing]
        detail = f"Found {_shown(found[0])}." if passed else "None of the values is in the output."
        return _binary(passed, detail)
    fraction = (len(values) - len(missing)) / len(values)
    if not missing:
        return Score(True, 1.0, "Every value is in the output.")
    shown = ", ".join(_shown(v) for v in missing[:5]) + (" …" if len(missing) > 5 else "")
    return Score(False, fraction, f"Missing {len(missing)} of {len(values)}: {shown}.")


def _regex(output: str, e: Mapping[str, Any]) -> Score:
    if len(output) > MAX_REGEX_INPUT_CHARS:
        return _fail(
            f"The output has {len(output)} characters; the regex scorer reads at most "
            f"{MAX_REGEX_INPUT_CHARS}."
        )
    flags = 0 if e.get("case_sensitive", True) else re.IGNORECASE
    pattern = _compiled(e["pattern"], flags)
    found = pattern.fullmatch(output) if e.get("full_match", False) else pattern.search(output)
    if found is None:
        return _binary(False, f"No match for {_shown(e['pattern'])}.")
    return _binary(True, f"Matched {_shown(found.group())} at {found.start()}.")


def _json_schema(output: str, e: Mapping[str, Any]) -> Score:
    value, error = _parse(output)
    if error:
        return _fail(f"Invalid: {error}.")
    validator = _validator(json.dumps(e["schema"], sort_keys=True))
    best = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if best is None:
        return _binary(True, "The output is valid against the schema.")
    at = "".join(f"/{pointer_token(p)}" for p in best.absolute_path) or "the root"
    return _binary(False, f"Invalid at {at}: {best.message}")


def _json_field(output: str, e: Mapping[str, Any]) -> Score:
    document, error = _parse(output)
    if error:
        return _fail(f"Cannot read {e['pointer'] or 'the output'}: {error}.")
    value = _pointer_get(document, e["pointer"])
    where = e["pointer"] or "the root"
    if value is _ABSENT:
        return _fail(f"The output has no value at {where}.")
    if _json_equal(value, e["value"]):
        return _binary(True, f"The value at {where} is {_shown(value)}.")
    return _binary(False, f"At {where}: expected {_shown(e['value'])}, got {_shown(value)}.")


def _numeric(output: str, e: Mapping[str, Any]) -> Score:
    document, error = _parse(output.strip())
    where = e.get("pointer") or ""
    if error:
        return _fail(f"No number: {error}.")
    value = _pointer_get(document, where)
    if not _is_number(value):
        found = "nothing" if value is _ABSENT else _shown(value)
        return _fail(f"Expected a number at {where or 'the root'}, found {found}.")
    # Exact decimals: a huge integer neither overflows nor rounds, and a tolerance means what the
    # author wrote.
    actual, expected = _decimal(value), _decimal(e["value"])
    allowed = max(_decimal(e.get("abs_tol", 0)), _decimal(e.get("rel_tol", 0)) * abs(expected))
    off = abs(actual - expected)
    detail = (
        f"Got {_shown(value)}, expected {_shown(e['value'])} "
        f"(off by {_shown_number(off)}, allowed {_shown_number(allowed)})."
    )
    return _binary(off <= allowed, detail)


def _similarity(output: str, e: Mapping[str, Any]) -> Score:
    value = similarity(output, e["value"])
    threshold = e["threshold"]
    return Score(value >= threshold, value, f"Similarity {value:.3f}, needed {threshold}.")


_PURE: dict[str, Callable[[str, Mapping[str, Any]], Score]] = {
    "exact": _exact,
    "contains": _contains,
    "regex": _regex,
    "json_schema": _json_schema,
    "json_field": _json_field,
    "numeric": _numeric,
    "similarity": _similarity,
}


# --- the LLM judge --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """What a judge is asked: the rubric prompt, where it is released, and its variables
    (``output``, and ``expected``/``input`` when the case has them, all text)."""

    prompt: str
    environment: str
    locale: str | None
    variables: Mapping[str, str]


class JudgeFailed(Exception):
    """The judge could not give a verdict; the message says why, briefly."""


# A judge answers the rubric's JSON (untrusted: ``score`` checks it) or raises JudgeFailed.
Judge = Callable[[JudgeRequest], Any]

RUBRIC_VARIABLES = ("output", "expected", "input")


def rubric_check(*, variables: Sequence[Mapping[str, Any]], response_schema: Any) -> list[str]:
    """What keeps a released version from judging, as sentences (empty: it is a valid rubric).

    The contract: the rubric declares ``output`` (text), may declare ``expected`` and ``input``
    (text; ``input`` is the case's variables as JSON) and requires nothing else; its response
    schema is an object requiring a numeric ``score`` and a text ``reason``. The schema should
    bound ``score`` to [0, 1], but any answer outside that range fails anyway.
    """
    problems: list[str] = []
    declared = {v.get("name"): v for v in variables}
    if "output" not in declared:
        problems.append("it declares no 'output' variable")
    for name in RUBRIC_VARIABLES:
        if name in declared and declared[name].get("type", "string") != "string":
            problems.append(f"its {name!r} variable must be a string")
    problems += [
        f"it requires the variable {name!r}, which a judge never sends"
        for name, spec in declared.items()
        if name not in RUBRIC_VARIABLES and spec.get("required")
    ]
    schema = response_schema if isinstance(response_schema, Mapping) else {}
    properties = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    for name, types in (("score", {"number", "integer"}), ("reason", {"string"})):
        spec = properties.get(name)
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if name not in required or kind not in types:
            wanted = "a number" if name == "score" else "a string"
            problems.append(f"its response schema must require {name!r} as {wanted}")
    return problems


def _llm_judge(
    output: str, e: Mapping[str, Any], *, judge: Judge, inputs: Mapping[str, Any] | None
) -> Score:
    variables = {"output": output}
    if "expected" in e:
        expected = e["expected"]
        variables["expected"] = expected if isinstance(expected, str) else json.dumps(expected)
    if inputs is not None:
        variables["input"] = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    request = JudgeRequest(e["prompt"], e["environment"], e.get("locale"), variables)
    try:
        answer = judge(request)
    except JudgeFailed as exc:
        logger.info("Judge failed: prompt=%s environment=%s", e["prompt"], e["environment"])
        return _fail(f"judge failed: {exc}")
    # The judge is a model: its answer is untrusted input, checked before it counts.
    if not isinstance(answer, Mapping):
        return _fail(f"judge failed: the answer is not an object: {_shown(answer)}")
    value, reason = answer.get("score"), answer.get("reason")
    if not _is_number(value) or not 0 <= value <= 1:
        return _fail(f"judge failed: the score must be a number from 0 to 1, not {_shown(value)}")
    if not isinstance(reason, str):
        return _fail("judge failed: the answer has no 'reason' text")
    threshold = e.get("pass_threshold", 0.5)
    shown = reason if len(reason) <= 300 else reason[:299] + "…"
    return Score(
        value >= threshold, float(value), f"Judged {value:g} (pass at {threshold}): {shown}"
    )


# --- entry point ----------------------------------------------------------------------------------


def score(
    output: str,
    expectation: Mapping[str, Any],
    *,
    judge: Judge | None = None,
    inputs: Mapping[str, Any] | None = None,
    guardrails: Sequence[Mapping[str, Any]] | None = None,
) -> Score:
    """How ``output`` meets ``expectation``. ``inputs`` (the case's variables) reach an LLM
    judge's rubric as ``input``; ``judge`` answers an ``llm_judge`` expectation (eval runs pass
    ``evaluations.scoring.judge.registry_judge``). ``guardrails`` is the record of the guardrail
    checks that fired on the run scored (eval runs pass theirs, maybe empty): what a
    ``guardrails`` expectation judges, which fails without one. A run a check refused meets no
    other expectation: its answer (if any) never reached anyone."""
    problems = scorer_check(expectation)
    if problems:
        listed = "; ".join(f"{p.pointer or '/'}: {p.detail}" for p in problems)
        return _fail(f"The expectation is not valid: {listed}")
    kind = expectation["scorer"]
    if kind == "guardrails":
        if guardrails is None:
            return _fail("No guardrail record was given to judge.")
        return _binary(*guardrail_scorer.guardrails_verdict(expectation, guardrails))
    if refused := guardrail_scorer.guardrails_refusal(guardrails):
        return _fail(refused)
    if kind == "llm_judge":
        if judge is None:
            return _fail("judge failed: no judge was given to ask")
        return _llm_judge(output, expectation, judge=judge, inputs=inputs)
    return _PURE[kind](output, expectation)
