"""Guardrail policies: what a version (or an environment, as a floor) checks around its model call.

A policy is JSON, declared on a version's model binding (``guardrails``: versioned, diffed,
released and rolled back with it) or on an environment (a floor every version served there also
runs, decision 0052)::

    {
      "input": {
        "max_tokens": {"limit": 4000, "action": "refuse"},
        "deny_patterns": {"patterns": ["(?i)internal use only"], "action": "refuse"},
        "pii": {"action": "redact", "rules": ["email", "phone"]},
        "injection": {"action": "refuse", "variables": ["question"]}
      },
      "output": {
        "deny_patterns": {"patterns": ["(?i)as an ai language model"], "action": "flag"},
        "pii": {"action": "redact"},
        "moderation": {"provider": "openai", "model": "omni-moderation-latest",
                       "action": "fallback", "on_error": "closed"}
      },
      "fallback": "Sorry, I can't help with that."
    }

Input checks read what the caller supplied (the variables' text and the conversation), before
rendering; ``max_tokens`` reads the rendered messages. Output checks read the answer's text. Each
check has an action: ``refuse`` (a 422 problem naming the check), ``redact`` (patterns and PII
only: replaced before the model sees it, or before the caller does), ``flag`` (recorded, the run
goes on) or ``fallback`` (the policy's ``fallback`` text is the answer). A moderation check is a
provider's ``/moderations`` endpoint (``provider``, ``model``) or a registry prompt used as a
classifier (``prompt``: released in the run's environment, given the text as ``text``, answering
``safe`` or ``unsafe``); ``on_error`` says whether a moderation that cannot answer lets the
answer through, flagged (``open``), or counts as flagged, so the check's action applies
(``closed``, the default).

This module is pure: it checks a policy's shape (``guardrails_problems``) and reads it into
values (``GuardrailPolicy``). ``runs.guardrails`` runs the checks. Deny patterns are RE2
patterns (google-re2), whose search time is linear in the text: no pattern an author writes can
backtrack for ever over a long input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2

from .errors import Problem
from .json_schemas import schema_validator
from .regexes import MAX_REGEX_CHARS

INPUT, OUTPUT = "input", "output"
REFUSE, REDACT, FLAG, FALLBACK = "refuse", "redact", "flag", "fallback"
ACTIONS = (REFUSE, FALLBACK, REDACT, FLAG)  # the strongest first: the one that decides a run

MAX_TOKENS, DENY_PATTERNS, PII, INJECTION, MODERATION = (
    "max_tokens",
    "deny_patterns",
    "pii",
    "injection",
    "moderation",
)
# Each check, the actions it may take and the fields it takes beside ``action``.
INPUT_CHECKS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    MAX_TOKENS: ((REFUSE, FALLBACK, FLAG), frozenset({"limit"})),
    DENY_PATTERNS: ((REFUSE, FALLBACK, REDACT, FLAG), frozenset({"patterns"})),
    PII: ((REFUSE, FALLBACK, REDACT, FLAG), frozenset({"rules"})),
    INJECTION: ((REFUSE, FALLBACK, FLAG), frozenset({"variables"})),
}
OUTPUT_CHECKS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    DENY_PATTERNS: ((REFUSE, FALLBACK, REDACT, FLAG), frozenset({"patterns"})),
    PII: ((REFUSE, FALLBACK, REDACT, FLAG), frozenset({"rules"})),
    MODERATION: (
        (REFUSE, FALLBACK, FLAG),
        frozenset({"provider", "model", "prompt", "on_error"}),
    ),
}
POLICY_FIELDS = frozenset({INPUT, OUTPUT, "fallback"})

MAX_PATTERNS = 50
MAX_TOKENS_LIMIT = 2_000_000
FALLBACK_MAX_CHARS = 4_000
# The kinds of PII ``runs.redaction`` knows (its ``Rule``); kept here so this module stays pure.
PII_RULES = frozenset({"secret", "api_key", "email", "ip", "iban", "card", "phone"})
ON_ERROR = frozenset({"open", "closed"})
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
# A prompt key as registry.models.PROMPT_KEY_PATTERN has it (that module is not pure).
_PROMPT_KEY = re.compile(r"[a-z0-9](?:[a-z0-9_-]|\.(?=[a-z0-9])){0,149}")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Deny patterns are RE2's (google-re2): its search is linear in the text whatever the pattern, so
# an author's pattern cannot stall a worker on a long input (Python's re can backtrack for ever).
RE2_OPTIONS = re2.Options()
RE2_OPTIONS.log_errors = False  # a refused pattern is a Problem, not a line on stderr


@dataclass(frozen=True, slots=True)
class Check:
    """One check of a policy, read from its JSON; ``source``: ``version`` or ``environment``."""

    stage: str
    name: str
    action: str
    source: str
    limit: int = 0
    patterns: tuple[str, ...] = ()
    rules: tuple[str, ...] | None = None  # PII: None for every rule in force
    variables: tuple[str, ...] | None = None  # injection: None for every variable
    provider: str = ""
    model: str = ""
    prompt: str = ""
    fail_closed: bool = False


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    """The checks a run performs: the environment's floor, then the version's own."""

    checks: tuple[Check, ...] = ()
    fallback: str = ""  # the version's fallback text, else the floor's
    fallback_parsed: Any = None  # the fallback as JSON, for a binding with a response schema
    identity: str = ""  # the floor's and the version's policies as canonical JSON

    def __bool__(self) -> bool:
        return bool(self.checks)

    def stage(self, stage: str) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.stage == stage)

    @classmethod
    def of(
        cls,
        version: Mapping[str, Any] | None,
        floor: Mapping[str, Any] | None,
        *,
        response_schema: Any = None,
    ) -> GuardrailPolicy:
        """Both policies read together; each assumed valid (``guardrails_problems``)."""
        checks = _checks(floor, "environment") + _checks(version, "version")
        if not checks:
            return cls()
        fallback = (version or {}).get("fallback") or (floor or {}).get("fallback") or ""
        parsed = None
        if response_schema is not None and fallback:
            try:
                parsed = json.loads(fallback)
            except ValueError:
                parsed = None
        identity = json.dumps(
            {"version": version, "floor": floor}, sort_keys=True, separators=(",", ":")
        )
        return cls(checks=checks, fallback=fallback, fallback_parsed=parsed, identity=identity)


def _checks(policy: Mapping[str, Any] | None, source: str) -> tuple[Check, ...]:
    if not policy:
        return ()
    found = []
    for stage in (INPUT, OUTPUT):
        for name, spec in (policy.get(stage) or {}).items():
            rules = spec.get("rules")
            variables = spec.get("variables")
            found.append(
                Check(
                    stage=stage,
                    name=name,
                    action=spec["action"],
                    source=source,
                    limit=int(spec.get("limit") or 0),
                    patterns=tuple(spec.get("patterns") or ()),
                    rules=tuple(rules) if rules is not None else None,
                    variables=tuple(variables) if variables is not None else None,
                    provider=spec.get("provider") or "",
                    model=spec.get("model") or "",
                    prompt=spec.get("prompt") or "",
                    fail_closed=spec.get("on_error", "closed") == "closed",
                )
            )
    return tuple(found)


def guardrails_problems(
    policy: Any,
    *,
    pointer: str = "/model/guardrails",
    response_schema: Any = None,
    fallback_needed_here: bool = True,
) -> list[Problem]:
    """Every problem with a guardrail policy, each at its JSON Pointer.

    ``response_schema``: the binding's, which a ``fallback`` text must then satisfy as JSON.
    ``fallback_needed_here``: a check whose action is ``fallback`` needs the policy's own
    ``fallback`` text (an environment's floor always does; a version may lean on the floor's,
    which it cannot know at commit, so a version's policy needs its own too)."""
    if not isinstance(policy, Mapping):
        return [
            Problem(
                "wrong_type",
                'The guardrails must be an object, e.g. {"input": {"injection": '
                '{"action": "refuse"}}}.',
                pointer,
            )
        ]
    problems = [
        Problem(
            "unknown_field",
            f"Unknown field {name!r}; the fields are fallback, input and output.",
            f"{pointer}/{name}",
        )
        for name in policy
        if name not in POLICY_FIELDS
    ]
    if not policy.get(INPUT) and not policy.get(OUTPUT):
        problems.append(
            Problem("empty_guardrails", "Name at least one input or output check.", pointer)
        )
    fallback = policy.get("fallback")
    if fallback is not None:
        problems += _fallback_problems(fallback, f"{pointer}/fallback", response_schema)
    actions: list[str] = []
    for stage, known in ((INPUT, INPUT_CHECKS), (OUTPUT, OUTPUT_CHECKS)):
        if stage not in policy:
            continue
        at, checks = f"{pointer}/{stage}", policy[stage]
        if not isinstance(checks, Mapping):
            problems.append(Problem("wrong_type", f"The {stage} checks must be an object.", at))
            continue
        for name, spec in checks.items():
            if name not in known:
                problems.append(
                    Problem(
                        "unknown_check",
                        f"Unknown {stage} check {name!r}; the {stage} checks are "
                        f"{', '.join(known)}.",
                        f"{at}/{name}",
                    )
                )
                continue
            problems += _check_problems(stage, name, spec, f"{at}/{name}", known[name])
            if isinstance(spec, Mapping):
                actions.append(spec.get("action"))
    if FALLBACK in actions and fallback is None and fallback_needed_here:
        problems.append(
            Problem(
                "fallback_missing",
                "A check answers with the fallback text: give it as fallback.",
                f"{pointer}/fallback",
            )
        )
    return problems


def _fallback_problems(fallback: Any, at: str, response_schema: Any) -> list[Problem]:
    if not isinstance(fallback, str) or not fallback.strip() or len(fallback) > FALLBACK_MAX_CHARS:
        return [
            Problem(
                "invalid_fallback",
                f"fallback is the answer given instead: a text of 1 to {FALLBACK_MAX_CHARS} "
                "characters.",
                at,
            )
        ]
    if isinstance(response_schema, Mapping):
        try:
            errors = list(schema_validator(response_schema).iter_errors(json.loads(fallback)))
        except ValueError:
            errors = ["not JSON"]
        except Exception:  # an invalid schema is the response schema's own problem
            errors = []
        if errors:
            return [
                Problem(
                    "invalid_fallback",
                    "The binding has a response schema, so the fallback must be JSON that it "
                    "accepts.",
                    at,
                )
            ]
    return []


def _check_problems(
    stage: str,
    name: str,
    spec: Any,
    at: str,
    known: tuple[tuple[str, ...], frozenset[str]],
) -> list[Problem]:
    actions, fields = known
    if not isinstance(spec, Mapping):
        return [Problem("wrong_type", f'The {name} check must be an object with an "action".', at)]
    problems = [
        Problem(
            "unknown_field",
            f"Unknown field {field_name!r}; the fields are {', '.join(sorted(fields | {'action'}))}.",
            f"{at}/{field_name}",
        )
        for field_name in spec
        if field_name != "action" and field_name not in fields
    ]
    if spec.get("action") not in actions:
        problems.append(
            Problem(
                "invalid_action",
                f"The {name} check's action is one of {', '.join(actions)}.",
                f"{at}/action",
            )
        )
    if name == MAX_TOKENS:
        limit = spec.get("limit")
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= MAX_TOKENS_LIMIT
        ):
            problems.append(
                Problem(
                    "invalid_limit",
                    f"limit is the most tokens the rendered prompt may have: a whole number from "
                    f"1 to {MAX_TOKENS_LIMIT}.",
                    f"{at}/limit",
                )
            )
    elif name == DENY_PATTERNS:
        problems += _patterns_problems(spec.get("patterns"), f"{at}/patterns")
    elif name == PII:
        problems += _names_problems(
            spec.get("rules"), f"{at}/rules", allowed=PII_RULES, what="redaction rule"
        )
    elif name == INJECTION:
        problems += _names_problems(spec.get("variables"), f"{at}/variables", what="variable")
    elif name == MODERATION:
        problems += _moderation_problems(spec, at)
    return problems


def _patterns_problems(patterns: Any, at: str) -> list[Problem]:
    if (
        not isinstance(patterns, list)
        or not 1 <= len(patterns) <= MAX_PATTERNS
        or not all(isinstance(p, str) and 0 < len(p) <= MAX_REGEX_CHARS for p in patterns)
    ):
        return [
            Problem(
                "invalid_patterns",
                f"patterns is a list of 1 to {MAX_PATTERNS} regular expressions of 1 to "
                f"{MAX_REGEX_CHARS} characters.",
                at,
            )
        ]
    problems = []
    for i, pattern in enumerate(patterns):
        try:
            compiled = re2.compile(pattern, RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else exc
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            problems.append(
                Problem(
                    "invalid_regex",
                    f"Not a pattern RE2 can run ({reason}): RE2 has no backreferences, "
                    "lookarounds or possessive quantifiers, and repeats at most 1000 times; in "
                    "exchange, a search takes time linear in the text whatever the pattern.",
                    f"{at}/{i}",
                )
            )
            continue
        if compiled.fullmatch(""):
            problems.append(
                Problem("invalid_regex", "The pattern matches the empty text.", f"{at}/{i}")
            )
    return problems


def _names_problems(
    names: Any, at: str, *, what: str, allowed: frozenset[str] | None = None
) -> list[Problem]:
    if names is None:
        return []
    if (
        not isinstance(names, list)
        or not names
        or len(names) > 100
        or not all(isinstance(n, str) and _VARIABLE_NAME.fullmatch(n) for n in names)
    ):
        return [Problem("invalid_names", f"A list of 1 to 100 {what} names.", at)]
    if allowed is not None and (unknown := [n for n in names if n not in allowed]):
        return [
            Problem(
                "unknown_rule",
                f"Unknown {what} {unknown[0]!r}; the rules are {', '.join(sorted(allowed))}.",
                at,
            )
        ]
    return []


def _moderation_problems(spec: Mapping[str, Any], at: str) -> list[Problem]:
    problems = []
    if spec.get("on_error", "closed") not in ON_ERROR:
        problems.append(
            Problem(
                "invalid_on_error",
                "on_error says what a moderation that cannot answer does: open (the answer goes "
                "through, flagged) or closed (as if the moderator had flagged it: the check's "
                "action applies).",
                f"{at}/on_error",
            )
        )
    prompt, provider = spec.get("prompt"), spec.get("provider")
    if (prompt is None) == (provider is None):
        problems.append(
            Problem(
                "invalid_moderation",
                "Moderate with a provider's /moderations endpoint (provider and model) or with "
                "a registry prompt as a classifier (prompt), one of the two.",
                at,
            )
        )
    elif prompt is not None:
        if not isinstance(prompt, str) or not _PROMPT_KEY.fullmatch(prompt):
            problems.append(
                Problem("invalid_prompt", "prompt is the classifier prompt's key.", f"{at}/prompt")
            )
        if "model" in spec:
            problems.append(
                Problem(
                    "unknown_field",
                    "A classifier prompt brings its own model: leave model out.",
                    f"{at}/model",
                )
            )
    else:
        if not isinstance(provider, str) or not _PROVIDER_NAME.fullmatch(provider):
            problems.append(
                Problem(
                    "invalid_provider",
                    "Name the configured provider whose /moderations endpoint moderates.",
                    f"{at}/provider",
                )
            )
        model = spec.get("model")
        if not isinstance(model, str) or not model.strip() or len(model) > 200:
            problems.append(
                Problem(
                    "invalid_model",
                    "Name the moderation model, e.g. omni-moderation-latest.",
                    f"{at}/model",
                )
            )
    return problems


def moderation_providers(policy: Any) -> Sequence[tuple[str, str]]:
    """The providers a policy's moderation names, with the pointer of each (for the check that
    they are configured)."""
    output = policy.get(OUTPUT) if isinstance(policy, Mapping) else None
    moderation = output.get(MODERATION) if isinstance(output, Mapping) else None
    if isinstance(moderation, Mapping) and isinstance(moderation.get("provider"), str):
        return [(moderation["provider"], f"/{OUTPUT}/{MODERATION}")]
    return []
