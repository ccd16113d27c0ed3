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
    # A moderation that could not answer: the answer was never moderated, so it is not kept in
    # the response cache (a hit would serve it unmoderated), whichever way on_error decided.
    unmoderated: bool = False

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


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _rewrite(value: Any, edit: Callable[[str], str]) -> Any:
    """``value`` with every string in it passed through ``edit`` (keys kept)."""
    if isinstance(value, str):
        return edit(value)
    if isinstance(value, Mapping):
        return {k: _rewrite(v, edit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rewrite(v, edit) for v in value]
    return value


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    # Checked at commit (registry.guardrails): safe to search whole inputs.
    return tuple(re.compile(p) for p in patterns)


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


def _pii_found(check: Check, texts: Sequence[str]) -> tuple[dict[str, int], Callable[[str], str]]:
    """The kinds of PII found (placeholder name -> count) and the edit that redacts them."""
    rules = list(check.rules) if check.rules is not None else None

    def edit(text: str) -> str:
        return redact(text, rules)

    kinds: dict[str, int] = {}
    for text in texts:
        redacted = edit(text)
        if redacted == text:
            continue
        before = _PLACEHOLDER.findall(text)
        for kind in _PLACEHOLDER.findall(redacted):
            if kind in before:
                before.remove(kind)
            else:
                kinds[kind] = kinds.get(kind, 0) + 1
    return kinds, edit


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
    """Run the policy's input checks (all but ``max_tokens``) on the caller's values."""
    triggered: list[Triggered] = []
    for check in policy.stage(INPUT):
        if check.name == MAX_TOKENS:
            continue
        if check.name == INJECTION:
            chosen = (
                {k: v for k, v in variables.items() if k in check.variables}
                if check.variables is not None
                else variables
            )
            texts = _strings(chosen) + _conversation_texts(conversation, users_only=True)
            if found := injection_found(texts):
                triggered.append(_fired(check, "looks like " + ", ".join(found)))
            continue
        texts = _strings(variables) + _conversation_texts(conversation)
        if check.name == DENY_PATTERNS:
            hits = _pattern_hits(check, texts)
            if not hits:
                continue
            triggered.append(_fired(check, "pattern " + ", ".join(f"#{i}" for i in hits)))
            edit = _patterns_redacted(check)
        elif check.name == PII:
            kinds, edit = _pii_found(check, texts)
            if not kinds:
                continue
            triggered.append(_fired(check, _kinds(kinds)))
        else:  # pragma: no cover - registry.guardrails refuses other input checks
            continue
        if check.action == REDACT:
            variables = _rewrite(variables, edit)
            if conversation is not None:
                conversation = [_message_rewrite(m, edit) for m in conversation]
    return InputVerdict(variables, conversation, tuple(triggered))


def _conversation_texts(
    conversation: list[dict[str, Any]] | None, *, users_only: bool = False
) -> list[str]:
    if not conversation:
        return []
    return [
        s
        for m in conversation
        if not users_only or m.get("role") in ("user", "tool")
        for s in _strings(m.get("content"))
    ]


def _message_rewrite(message: dict[str, Any], edit: Callable[[str], str]) -> dict[str, Any]:
    if "content" not in message:
        return message
    return {**message, "content": _rewrite(message["content"], edit)}


def estimated_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Four characters a token, and four for each message's framing: an estimate that errs long
    for English, and the same for every provider (docs/guardrails.md)."""
    return sum(4 + math.ceil(sum(len(s) for s in _strings(m.get("content"))) / 4) for m in messages)


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
    """Run the policy's output checks on the answer's text (tool calls' arguments are the
    caller's to check: they are not shown to a user as they are)."""
    triggered: list[Triggered] = []
    text, parsed = completion.text, completion.parsed
    for check in policy.stage(OUTPUT):
        if check.name == MODERATION:
            triggered += _moderation(check, text, moderate)
            continue
        if check.name == DENY_PATTERNS:
            hits = _pattern_hits(check, [text])
            if not hits:
                continue
            triggered.append(_fired(check, "pattern " + ", ".join(f"#{i}" for i in hits)))
            edit = _patterns_redacted(check)
        elif check.name == PII:
            kinds, edit = _pii_found(check, [text])
            if not kinds:
                continue
            triggered.append(_fired(check, _kinds(kinds)))
        else:  # pragma: no cover - registry.guardrails refuses other output checks
            continue
        if check.action == REDACT:
            text = edit(text)
            parsed = _rewrite(parsed, edit) if parsed is not None else None
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
            return [replace(_fired(check, f"moderation failed, closed: {exc}"), unmoderated=True)]
        failed = _fired(check, f"moderation failed, open: {exc}")
        return [replace(failed, action=FLAG, unmoderated=True)]
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
