"""The output guardrail ``moderation`` (decision 0052): who moderates a run's answer, and how.

A policy's moderation check names a provider's ``/moderations`` endpoint (``provider``,
``model``: ``runs.guardrails.provider_moderation``) or a registry prompt used as a classifier
(``prompt``). The check runs in the model call's thread (``runs.execution.run_call``), which must
not touch the database, so the work is split in two:

1. ``moderation_prepare``, in ``run_prepare`` (may read the database, or the caches in front of
   it): for each moderation check of the policy, what it will need. For a provider, its row
   (``provider_cache``). For a classifier, its release in the run's environment (the release
   cache, as every runtime read), its stable version there, the text of every snippet that
   version includes (preloaded into a plain dict: ``releases.snippets.snippets_preloaded``), and
   its own binding's providers.
2. The ``Moderator`` it returns, called by ``runs.guardrails.output_checks``: network only. A
   classifier's version is rendered with one variable, ``text`` (the answer), in the run's
   locale (or the one its templates fall back to), and called with its own binding (retries,
   fallbacks, timeouts). Its answer's first word, case-insensitive and without trailing
   punctuation, is the verdict: ``safe``, or ``unsafe`` (flagged; Llama Guard's second line, its
   hazard codes such as ``S1,S9``, goes in the detail). Anything else is a failure.

A classifier is not a run: its own guardrails, cache, canary and experiment are not applied (its
stable version classifies), and its call has no record of its own. Its tokens are named in the
check's detail when the check fires (flagged, or failed); they are never added to the run's
tokens or cost, nor counted by budgets (docs/guardrails.md). Its model calls are counted in the
metrics under ``source="guardrail"``, safe verdicts included, as the judge's are.

Every failure (a classifier not released there, a render that fails, a call that fails, an answer
that is no verdict) is a ``ModerationFailed``, which the check's ``on_error`` decides: never an
error of the run.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from promptregistry.core.snippets import SnippetText

from registry.content import ModelBinding
from registry.errors import ProblemsError, RegistryError
from registry.guardrails import MODERATION, OUTPUT, Check, GuardrailPolicy
from registry.rendering import to_messages
from releases.cache import release_cache, served_snippets
from releases.resolution import ServedVersion, resolve_pinned, version_render
from releases.snippets import Ref, snippets_preloaded

from .calls import attempts_cost, call_observe
from .guardrails import Moderated, ModerationFailed, Moderator, provider_moderation
from .models import Provider
from .provider_cache import PricesByModel, provider_cache
from .providers import (
    Attempt,
    Completion,
    ProviderUnavailable,
    complete,
    longest_seconds,
    reraise_time_limit,
)

logger = logging.getLogger(__name__)

TEXT_VARIABLE = "text"  # the one variable a classifier is rendered with: the answer
GUARDRAIL_SOURCE = "guardrail"  # the metrics' source of a classifier's model calls
SAFE, UNSAFE = "safe", "unsafe"
# Llama Guard's second line: its hazard codes (``S1,S9``), or the categories a classifier names,
# comma-separated. Any other text is left out of the detail: prose may quote the answer, which a
# detail never holds.
_CODES = re.compile(r"[A-Za-z0-9_/-]{1,40}(?: ?, ?[A-Za-z0-9_/-]{1,40}){0,13}")


@dataclass(frozen=True, slots=True)
class Classifier:
    """What a classifier prompt needs to moderate, read before the model call; ``unavailable``
    says why it cannot (then nothing else is set)."""

    key: str
    unavailable: str = ""
    version: ServedVersion | None = None
    locale: str = ""
    snippets: Mapping[Ref, SnippetText] = field(default_factory=dict)
    binding: ModelBinding | None = None
    providers: Mapping[str, Provider] = field(default_factory=dict)
    prices: PricesByModel = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.key} v{self.version.number}" if self.version is not None else self.key


def moderation_prepare(
    *, policy: GuardrailPolicy, environment: str | None, locale: str | None
) -> RunModerator | None:
    """The moderator of a run in ``environment`` (asked in ``locale``), with everything its
    checks need read now; None when the policy moderates nothing. Without an environment (an eval
    run that names none) a classifier prompt cannot be resolved: its checks fail, and their
    ``on_error`` decides."""
    checks = [c for c in policy.stage(OUTPUT) if c.name == MODERATION]
    if not checks:
        return None
    providers = provider_cache.named({c.provider for c in checks if c.provider})
    by_provider = provider_moderation(providers)
    classifiers = {
        c.prompt: (
            classifier_prepare(key=c.prompt, environment=environment, locale=locale)
            if environment
            else Classifier(
                c.prompt,
                unavailable=f"the classifier {c.prompt} is resolved in an environment, and this "
                "run has none",
            )
        )
        for c in checks
        if c.prompt
    }

    def moderate(check: Check, text: str) -> Moderated:
        if check.prompt:
            return classifier_moderate(classifiers[check.prompt], text)
        return by_provider(check, text)

    def longest(check: Check) -> float:
        if check.prompt:  # a whole model call: retries, fallbacks and all
            found = classifiers[check.prompt]
            return longest_seconds(found.binding, found.providers) if found.binding else 0.0
        # One /moderations request (the pooled client makes no retries of its own).
        provider = providers.get(check.provider)
        return provider.timeout_seconds if provider is not None else 0.0

    return RunModerator(moderate, sum(longest(c) for c in checks))


@dataclass(frozen=True, slots=True)
class RunModerator:
    """A run's moderation (a ``Moderator``: called with a check and the answer's text), and how
    long its checks may take together, one after the other (a classifier's whole model call, its
    retries and fallbacks included). A stream whose client left waits that much longer for its
    call's outcome (``runs.streaming.cancel_grace_seconds``): the model was answered and paid,
    and only the checks still run."""

    moderate: Moderator
    seconds: float

    def __call__(self, check: Check, text: str) -> Moderated:
        return self.moderate(check, text)


def classifier_prepare(*, key: str, environment: str, locale: str | None) -> Classifier:
    """The classifier prompt ``key`` as ``environment`` serves it now: its stable version, in
    ``locale`` or the one it falls back to, with its snippets and providers."""
    found = release_cache().lookup(environment, key)
    served = found.release
    if served is None or served.state.stable is None:
        return Classifier(key, unavailable=f"the classifier {key} is not released in {environment}")
    try:
        resolution = resolve_pinned(served, number=served.state.stable, locale=locale)
    except RegistryError as exc:  # no template for the locale nor its fallbacks
        return Classifier(key, unavailable=f"the classifier {key}: {exc.message}")
    version = resolution.version
    binding = ModelBinding.from_dict(version.model)
    found = provider_cache.binding(binding)
    return Classifier(
        key,
        version=version,
        locale=resolution.locale,
        snippets=snippets_preloaded(version.snippets, library=served_snippets(served)),
        binding=binding,
        providers=found.providers,
        prices=found.prices,
    )


def classifier_moderate(classifier: Classifier, text: str) -> Moderated:
    """Render the classifier with ``text`` and call its model: no database (everything it reads
    was loaded by ``classifier_prepare``). Raises ``ModerationFailed``."""
    if classifier.unavailable or classifier.version is None or classifier.binding is None:
        raise ModerationFailed(classifier.unavailable or f"the classifier {classifier.key} failed")
    label = classifier.label
    try:
        rendered = version_render(
            classifier.version,
            locale=classifier.locale,
            variables={TEXT_VARIABLE: text},
            snippets=classifier.snippets,
        )
        started = time.monotonic()
        try:
            completion = complete(
                binding=classifier.binding,
                messages=to_messages(rendered),
                providers=classifier.providers,
            )
        except ProviderUnavailable as exc:
            _observe(classifier, started, failure=exc)
            raise
        _observe(classifier, started, completion=completion)
    except ProblemsError as exc:
        codes = ", ".join(sorted({p.code for p in exc.problems})) or type(exc).__name__
        raise ModerationFailed(f"{label} could not be rendered ({codes})") from exc
    except RegistryError as exc:
        raise ModerationFailed(f"{label} could not be rendered ({type(exc).__name__})") from exc
    except ProviderUnavailable as exc:
        outcomes = ", ".join(str(a.outcome) for a in exc.attempts) or "no target"
        raise ModerationFailed(f"{label} failed ({outcomes}){_tokens(exc.attempts)}") from exc
    except Exception as exc:  # the last guard: the run's thread must get a verdict or a failure
        reraise_time_limit(exc)
        logger.exception("The classifier %s failed unexpectedly", label)
        raise ModerationFailed(f"{label} failed ({type(exc).__name__})") from exc
    return classifier_verdict(label, completion)


def _observe(
    classifier: Classifier,
    started: float,
    *,
    completion: Completion | None = None,
    failure: ProviderUnavailable | None = None,
) -> None:
    """The classifier's model call (answered, or failed) in the metrics, as the judge's are
    (``source`` guardrail): not traffic, but paid for. Its prices were read with its providers:
    no database here."""
    assert classifier.version is not None  # classifier_moderate called no model otherwise
    assert classifier.binding is not None
    attempts = (
        completion.attempts if completion is not None else failure.attempts if failure else ()
    )
    try:
        call_observe(
            source=GUARDRAIL_SOURCE,
            prompt=classifier.key,
            version=classifier.version.number,
            variant="stable",
            primary=(classifier.binding.provider, classifier.binding.model),
            completion=completion,
            failure=failure,
            latency_ms=(time.monotonic() - started) * 1000,
            cost=attempts_cost(attempts, classifier.prices),
        )
    except Exception:  # counting must never turn a verdict into a failure
        logger.exception("Counting the classifier %s's call failed", classifier.key)


def classifier_verdict(label: str, completion: Completion) -> Moderated:
    """The classifier's answer read as a verdict (see the module's docstring)."""
    words = completion.text.split(maxsplit=1)
    verdict = words[0].rstrip(".,:;!").lower() if words else ""
    tokens = _tokens(completion.attempts, model=f"{completion.provider}/{completion.model}")
    if verdict == SAFE:
        return Moderated(False, f"{label} answered safe{tokens}")
    if verdict == UNSAFE:
        rest = words[1].strip().splitlines()[0].strip()[:200] if len(words) > 1 else ""
        codes = f" ({rest})" if _CODES.fullmatch(rest) else ""
        return Moderated(True, f"{label} answered unsafe{codes}{tokens}")
    raise ModerationFailed(f"{label} answered neither safe nor unsafe{tokens}")


def _tokens(attempts: Sequence[Attempt], *, model: str = "") -> str:
    """The classifier's tokens for the detail (``; local/guard-1, 41+3 tokens``): what it cost
    can be read from them, and they are nowhere else."""
    given = sum(a.input_tokens for a in attempts)
    taken = sum(a.output_tokens for a in attempts)
    if not given and not taken:
        return ""
    return f"; {model + ', ' if model else ''}{given}+{taken} tokens"
