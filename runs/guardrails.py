"""Guardrails around a run's model call (issue 19, decision 0052): the checks a policy declares.

``registry.guardrails`` reads a policy (the version's, and its environment's floor); this module
runs it. Three moments, in ``runs.execution``:

1. ``input_checks`` before rendering, on what the caller supplied (each variable's text and the
   conversation): deny patterns, PII (the redaction rules of ``runs.redaction``) and prompt
   injection heuristics. ``redact`` replaces what matched in the caller's values, so the model
   never sees it; the rest decide the run or are recorded.
2. ``tokens_check`` after rendering: the rendered messages' estimated tokens (four characters a
   token, as the local model server counts: no tokenizer is exact for every provider) against
   ``max_tokens``.
3. ``output_checks`` on the model's answer: deny patterns, PII leaking out, moderation. ``redact``
   rewrites the answer (its text, and its parsed JSON's strings); ``fallback`` answers the
   policy's fallback text instead; ``refuse`` ends the run with a 422.

Every check that fires is a ``Triggered``: recorded on the call (``Call.guardrails``), returned
in the answer, and counted (``promptregistry_guardrail_triggers_total``). When several fire, the
strongest action decides (refuse, then fallback, then redact, then flag); all are recorded.

Nothing here touches the database: output checks run in the model call's thread. A moderation
through a provider's ``/moderations`` uses that provider's client and timeout (or a registry
prompt as a classifier: ``runs.moderation``, which reads what either needs before the call); one
that fails is decided by the check's ``on_error`` (closed: as if it had flagged the answer, so
the check's action applies; open: flagged and let through), and says so on the record.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import re2
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from config.metrics import GUARDRAIL_TRIGGERS
from registry.guardrails import (
    DENY_PATTERNS,
    FALLBACK,
    FLAG,
    INJECTION,
    INPUT,
    MAX_TOKENS,
    MODERATION,
    OUTPUT,
    PII,
    RE2_OPTIONS,
    REDACT,
    REFUSE,
    Check,
    GuardrailPolicy,
)
from releases.cache import publish, release_cache
from releases.models import Environment

from . import egress
from .models import Provider
from .providers import Completion
from .redaction import redact

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
DETAIL_MAX_CHARS = 200


@dataclass(frozen=True, slots=True)
class Triggered:
    """A check that fired: what it found (``detail``: never the matched text itself)."""

    stage: str
    check: str
    action: str
    source: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {
            "stage": self.stage,
            "check": self.check,
            "action": self.action,
            "source": self.source,
            "detail": self.detail,
        }


def deciding(triggered: Sequence[Triggered]) -> Triggered | None:
    """The check whose action decides the run (refuse, then fallback), or None: it goes on."""
    for action in (REFUSE, FALLBACK):
        for t in triggered:
            if t.action == action:
                return t
    return None


def counted(triggered: Sequence[Triggered], prompt: str) -> None:
    for t in triggered:
        GUARDRAIL_TRIGGERS.labels(prompt, t.stage, t.check, t.action).inc()


def _fired(check: Check, detail: str) -> Triggered:
    return Triggered(check.stage, check.name, check.action, check.source, detail[:DETAIL_MAX_CHARS])


# -- text in values -------------------------------------------------------------------------------


def _is_message(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("role"), str)


def _texts(value: Any, *, keys: bool = True) -> list[str]:
    """Every text a check reads in a caller's value: strings, numbers as written, an object's
    keys (``keys``); of a chat message, its content and its tool calls' arguments only (its role
    and ids are structure, not what anyone said)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        return [str(value)]
    if _is_message(value):
        found = _texts(value.get("content"), keys=keys)
        for call in value.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                found += _texts(function.get("arguments"), keys=keys)
        return found
    if isinstance(value, Mapping):
        return [
            t
            for k, v in value.items()
            for t in [*(_texts(k) if keys else ()), *_texts(v, keys=keys)]
        ]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _texts(v, keys=keys)]
    return []


def _edited(value: Any, edit: Callable[[str], str], *, keys: bool = True) -> Any:
    """``value`` with each text ``_texts`` reads passed through ``edit``; a number the edit
    changes becomes the edited text. ``keys``: objects' keys too (not a parsed answer's: they are
    its schema's)."""
    if isinstance(value, str):
        return edit(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        written = str(value)
        return value if (after := edit(written)) == written else after
    if _is_message(value):
        message = dict(value)
        if "content" in message:
            message["content"] = _edited(message["content"], edit, keys=keys)
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [_call_edited(call, edit) for call in message["tool_calls"]]
        return message
    if isinstance(value, Mapping):
        return {
            (edit(k) if keys and isinstance(k, str) else k): _edited(v, edit, keys=keys)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_edited(v, edit, keys=keys) for v in value]
    return value


def _call_edited(call: Any, edit: Callable[[str], str]) -> Any:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or "arguments" not in function:
        return call
    return {**call, "function": {**function, "arguments": _edited(function["arguments"], edit)}}


def _values_texts(variables: Mapping[str, Any]) -> list[str]:
    # The variables' names are the prompt's, not the caller's text.
    return [t for v in variables.values() for t in _texts(v)]


def _values_edited(variables: Mapping[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
    return {name: _edited(v, edit) for name, v in variables.items()}


# Deny patterns run on RE2 (google-re2): linear in the text whatever the pattern, so no author's
# pattern can stall a worker (registry.guardrails refuses what RE2 cannot compile).
@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(re2.compile(p, RE2_OPTIONS) for p in patterns)


def _pattern_hits(check: Check, texts: Sequence[str]) -> list[int]:
    """The indexes of the check's patterns found in any of the texts."""
    compiled = _compiled(check.patterns)
    return [i for i, p in enumerate(compiled) if any(p.search(t) for t in texts)]


def _patterns_redacted(check: Check) -> Callable[[str], str]:
    compiled = _compiled(check.patterns)

    def edit(text: str) -> str:
        for pattern in compiled:
            text = pattern.sub(REDACTED, text)
        return text

    return edit


_PLACEHOLDER = re.compile(r"\[([a-z][a-z0-9_]{0,31})\]")


def _pii_rules(check: Check) -> list[str] | None:
    return list(check.rules) if check.rules is not None else None


def _pii_redacted(value: Any, rules: list[str] | None) -> Any:
    """``value`` as ``runs.redaction.redact`` leaves it (which reads a secret by its key's name
    and a card in a number), and its objects' keys redacted too below the top level."""
    return _keys_redacted(redact(value, rules), rules, top=True)


def _keys_redacted(value: Any, rules: list[str] | None, *, top: bool = False) -> Any:
    if isinstance(value, Mapping):
        return {
            (k if top or not isinstance(k, str) else redact(k, rules)): _keys_redacted(v, rules)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_keys_redacted(v, rules) for v in value]
    return value


def _pii_kinds(before: Any, after: Any) -> dict[str, int]:
    """The kinds of PII the redaction took out (placeholder name -> count)."""
    if after == before:
        return {}
    had = _placeholders(before)
    kinds: dict[str, int] = {}
    for kind in _placeholders(after):
        if kind in had:
            had.remove(kind)
        else:
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds or {"redacted": 1}


def _placeholders(value: Any) -> list[str]:
    return [k for t in _texts(value) for k in _PLACEHOLDER.findall(t)]


def _kinds(kinds: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} ×{count}" for kind, count in sorted(kinds.items()))


# -- prompt injection -------------------------------------------------------------------------------

# Phrasings that try to override the prompt's instructions, each named for the record. Heuristics:
# they catch the common, copied attacks, not a determined adversary (docs/guardrails.md says so).
# Written without backtracking quantifiers, like every pattern that searches whole inputs.
INJECTION_HEURISTICS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
    for name, pattern in (
        (
            "override",
            r"\b(?:ignore|disregard|forget|override|skip)\s{1,3}+(?:all\s{1,3}+|any\s{1,3}+|"
            r"the\s{1,3}+|your\s{1,3}+|my\s{1,3}+|these\s{1,3}+|those\s{1,3}+)?+"
            r"(?:previous|prior|above|earlier|preceding|original|system)\s{1,3}+"
            r"(?:instructions?|prompts?|rules|directions|guidelines|messages?|context)\b",
        ),
        (
            "reveal",
            r"\b(?:reveal|show|print|repeat|output|leak|tell\s{1,3}+me)\s{1,3}+"
            r"(?:me\s{1,3}+)?+(?:your\s{1,3}+(?:instructions|rules)|(?:your|the)\s{1,3}+"
            r"(?:system\s{1,3}+prompt|initial\s{1,3}+prompt|hidden\s{1,3}+instructions|"
            r"system\s{1,3}+message))\b",
        ),
        (
            "role_markers",
            r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<</?SYS>>|"
            r"^[ \t]{0,8}+(?:#{1,6}+[ \t]{0,4}+)?+(?:system|assistant)[ \t]{0,4}+:",
        ),
        (
            "persona",
            r"\b(?:you\s{1,3}+are\s{1,3}+now|from\s{1,3}+now\s{1,3}+on\s{1,3}+you\s{1,3}+are|"
            r"act\s{1,3}+as\s{1,3}+(?:an?\s{1,3}+)?+(?:unfiltered|unrestricted|jailbroken))\b|"
            r"\bdeveloper\s{1,3}+mode\b|\bDAN\b|\bjailbreak",
        ),
        (
            "new_instructions",
            r"\b(?:new|updated|real)\s{1,3}+(?:instructions|system\s{1,3}+prompt)\s{0,3}+:",
        ),
    )
)


def injection_found(texts: Sequence[str]) -> list[str]:
    """The names of the heuristics that match any of the texts."""
    return [name for name, p in INJECTION_HEURISTICS if any(p.search(t) for t in texts)]


# -- input ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputVerdict:
    """What the input checks made of the caller's values: the values the prompt is rendered with
    (redacted where a check said so) and the checks that fired."""

    variables: Mapping[str, Any]
    conversation: list[dict[str, Any]] | None
    triggered: tuple[Triggered, ...] = ()


def input_checks(
    policy: GuardrailPolicy,
    variables: Mapping[str, Any],
    conversation: list[dict[str, Any]] | None = None,
) -> InputVerdict:
    """Run the policy's input checks (all but ``max_tokens``) on the caller's values. Every check
    reads the values as the caller sent them; the redactions are made after, in order."""
    triggered: list[Triggered] = []
    edits: list[Callable[[Any, bool], Any]] = []  # (value, is the variables) -> the value redacted
    for check in policy.stage(INPUT):
        if check.name == MAX_TOKENS:
            continue
        if check.name == INJECTION:
            chosen = (
                {k: v for k, v in variables.items() if k in check.variables}
                if check.variables is not None
                else variables
            )
            users = [m for m in conversation or () if m.get("role") in ("user", "tool")]
            if found := injection_found(_values_texts(chosen) + _texts(users)):
                triggered.append(_fired(check, "looks like " + ", ".join(found)))
        elif check.name == DENY_PATTERNS:
            hits = _pattern_hits(check, _values_texts(variables) + _texts(conversation))
            if hits:
                triggered.append(_fired(check, "pattern " + ", ".join(f"#{i}" for i in hits)))
                if check.action == REDACT:
                    edits.append(_deny_edit(_patterns_redacted(check)))
        elif check.name == PII:
            rules = _pii_rules(check)
            kinds = _pii_kinds(variables, _pii_redacted(dict(variables), rules))
            kinds = _merged(kinds, _pii_kinds(conversation, _pii_redacted(conversation, rules)))
            if kinds:
                triggered.append(_fired(check, _kinds(kinds)))
                if check.action == REDACT:
                    edits.append(_pii_edit(rules))
    for edit in edits:
        variables = edit(variables, True)
        if conversation is not None:
            conversation = edit(conversation, False)
    return InputVerdict(variables, conversation, tuple(triggered))


def _deny_edit(edit: Callable[[str], str]) -> Callable[[Any, bool], Any]:
    return lambda value, top: _values_edited(value, edit) if top else _edited(value, edit)


def _pii_edit(rules: list[str] | None) -> Callable[[Any, bool], Any]:
    return lambda value, top: _pii_redacted(dict(value) if top else value, rules)


def _merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def estimated_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Four characters a token, and four for each message's framing: an estimate that errs long
    for English, and the same for every provider (docs/guardrails.md)."""
    return sum(4 + math.ceil(sum(len(s) for s in _texts(m.get("content"))) / 4) for m in messages)


def tokens_check(policy: GuardrailPolicy, messages: Sequence[Mapping[str, Any]]) -> list[Triggered]:
    checks = [c for c in policy.stage(INPUT) if c.name == MAX_TOKENS]
    if not checks:
        return []
    tokens = estimated_tokens(messages)
    return [
        _fired(check, f"about {tokens} tokens rendered, the limit is {check.limit}")
        for check in checks
        if tokens > check.limit
    ]


# -- output -----------------------------------------------------------------------------------------


class ModerationFailed(Exception):
    """The moderation could not answer (its provider failed, timed out, or is not configured)."""


@dataclass(frozen=True, slots=True)
class Moderated:
    flagged: bool
    detail: str  # the categories flagged, or what the classifier said


# A moderation: the check and the text in, a verdict out, or ModerationFailed.
Moderator = Callable[[Check, str], Moderated]


@dataclass(frozen=True, slots=True)
class OutputVerdict:
    completion: Completion  # as the caller gets it: redacted, or the fallback
    triggered: tuple[Triggered, ...] = ()


def output_checks(
    policy: GuardrailPolicy, completion: Completion, *, moderate: Moderator | None = None
) -> OutputVerdict:
    """Run the policy's output checks on the answer: its text and, for a parsed answer, the
    strings in it (a JSON escape hides nothing). Tool calls' arguments go to the caller's code,
    not to a user: not checked. Patterns and PII read the answer as the model gave it, then their
    redactions are made; moderation reads it last, redacted, so no moderator is sent what the
    policy takes out."""
    triggered: list[Triggered] = []
    text, parsed = completion.text, completion.parsed
    texts = [text, *_texts(parsed, keys=False)]
    edits: list[tuple[Callable[[str], str], Callable[[Any], Any]]] = []
    for check in policy.stage(OUTPUT):
        if check.name == DENY_PATTERNS:
            hits = _pattern_hits(check, texts)
            if not hits:
                continue
            triggered.append(_fired(check, "pattern " + ", ".join(f"#{i}" for i in hits)))
            edit = _patterns_redacted(check)
            edits.append((edit, functools.partial(_edited, edit=edit, keys=False)))
        elif check.name == PII:
            rules = _pii_rules(check)
            kinds = _merged(
                _pii_kinds(text, redact(text, rules)),
                _pii_kinds(parsed, _pii_redacted(parsed, rules)),
            )
            if not kinds:
                continue
            triggered.append(_fired(check, _kinds(kinds)))
            edits.append(
                (
                    functools.partial(redact, rules=rules),
                    functools.partial(_pii_redacted, rules=rules),
                )
            )
        else:
            continue
        if check.action != REDACT:
            edits.pop()
    for edit_text, edit_value in edits:
        text = edit_text(text)
        parsed = edit_value(parsed) if parsed is not None else None
    for check in policy.stage(OUTPUT):
        if check.name == MODERATION:
            triggered += _moderation(check, text, moderate)
    decided = deciding(triggered)
    if decided is not None and decided.action == FALLBACK:
        text, parsed = policy.fallback, policy.fallback_parsed
    if (text, parsed) != (completion.text, completion.parsed):
        completion = replace(completion, text=text, parsed=parsed)
    return OutputVerdict(completion, tuple(triggered))


def _moderation(check: Check, text: str, moderate: Moderator | None) -> list[Triggered]:
    try:
        if moderate is None:
            raise ModerationFailed("no moderation is available to this run")
        verdict = moderate(check, text)
    except ModerationFailed as exc:
        # Closed: as if the moderation had flagged the answer (the check's action decides).
        # Open: the answer goes through, flagged.
        if check.fail_closed:
            return [_fired(check, f"moderation failed, closed: {exc}")]
        failed = _fired(check, f"moderation failed, open: {exc}")
        return [replace(failed, action=FLAG)]
    if verdict.flagged:
        return [_fired(check, verdict.detail or "flagged")]
    return []


def provider_moderation(providers: Mapping[str, Provider]) -> Moderator:
    """Moderation through a provider's ``/moderations`` endpoint, with its client and timeout."""

    def moderate(check: Check, text: str) -> Moderated:
        from .providers import clients  # the provider's pooled client

        provider = providers.get(check.provider)
        if provider is None or not provider.enabled:
            raise ModerationFailed(f"the provider {check.provider} is not configured or disabled")
        refusals = egress.provider_refusals(
            base_url=provider.base_url, api_key_env=provider.api_key_env, resolve=True
        )
        if refusals:
            raise ModerationFailed(f"the outbound policy refuses its {' and '.join(refusals)}")
        api_key = os.environ.get(provider.api_key_env) if provider.api_key_env else None
        try:
            with clients.lease(provider, api_key) as client:
                answer = client.openai.moderations.create(
                    model=check.model, input=text, timeout=provider.timeout_seconds
                )
            result = answer.results[0]
            flagged = bool(result.flagged)
            # By alias: OpenAI's names ("self-harm/intent"), as its documentation has them.
            categories = result.categories.model_dump(by_alias=True) if result.categories else {}
        except Exception as exc:  # the provider's answer is untrusted: any failure is a failure
            logger.warning("The moderation of %s failed", check.provider, exc_info=True)
            raise ModerationFailed(f"{check.provider} failed ({type(exc).__name__})") from exc
        named = sorted(k for k, v in categories.items() if v is True)
        return Moderated(flagged, ", ".join(named)[:DETAIL_MAX_CHARS])

    return moderate


# -- the environments' floors -----------------------------------------------------------------------


class FloorCache:
    """Every environment's guardrail floor, in memory while the release cache's listener is
    trusted (a save publishes ``guardrail-floors`` and each process drops its copy); else read
    per run, as budgets are (runs.budgets): a floor raised must apply to the next run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._floors: dict[int, Mapping[str, Any]] | None = None
        self._generation = 0

    def clear(self, _message: dict | None = None) -> None:
        with self._lock:
            self._floors = None
            self._generation += 1

    def floor(self, environment_id: int) -> Mapping[str, Any] | None:
        if not release_cache().trusted:
            row = Environment.objects.filter(pk=environment_id).values("guardrails").first()
            return row["guardrails"] if row else None
        floors = self._floors
        if floors is None:
            generation = self._generation
            floors = dict(
                Environment.objects.filter(guardrails__isnull=False).values_list("id", "guardrails")
            )
            with self._lock:
                if generation == self._generation:
                    self._floors = floors
        return floors.get(environment_id)


floors = FloorCache()
release_cache().on("guardrail-floors", floors.clear)


@receiver(post_save, sender=Environment)
@receiver(post_delete, sender=Environment)
def _floor_changed(**_kwargs: Any) -> None:
    floors.clear()
    transaction.on_commit(functools.partial(publish, {"kind": "guardrail-floors"}))
    transaction.on_commit(floors.clear)


def run_policy(
    binding_guardrails: Mapping[str, Any] | None, environment_id: int, *, response_schema: Any
) -> GuardrailPolicy:
    """The policy a run in that environment follows: the floor's checks, then the version's."""
    floor = floors.floor(environment_id)
    if not binding_guardrails and not floor:
        return GuardrailPolicy()
    return GuardrailPolicy.of(binding_guardrails, floor, response_schema=response_schema)
