"""The admin's playground: any version of a prompt (a draft too), run on the run path.

An adapter over ``runs.execution`` (DESIGN: "new doors are thin"): the version is wrapped in a
release of its own that serves it to nobody else, rendered and called by ``run_prepare`` and
``run_call`` like a ``/run``, and recorded by ``run_record`` with the ``playground`` source, so a
playground call is a call like any other on its page, and left out of every release metric
(``runs.selectors.traffic_calls``). Decision 0036.

1. The version as the runtime serves it (``served_version``), with the binding the author picked:
   another provider or model replaces the primary and drops the fallbacks (the author asked for
   that model's answer, not whichever answers first).
2. The locale falls back as a served one does (``fr-CA`` -> ``fr`` -> the default).
3. The record names the first environment of the promotion order (a call row needs one; no
   release of it served the call), no variant, no subject, no release revision.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from registry.errors import LocaleUnavailable, Problem, ProblemsError, RegistryError
from registry.locales import locale_normalize, locale_pick
from registry.models import PromptVersion
from registry.snippets import library_for_templates
from releases.bucketing import Assignment, Reason
from releases.models import Environment
from releases.resolution import Resolution, ServedRelease
from releases.selectors import served_version
from releases.state import ReleaseState

from .calls import attempts_as_dicts
from .execution import CallOutcome, PreparedRun, RecordedCall, run_cost, run_prepare, run_record
from .models import PROVIDER_NAME_PATTERN, Call
from .selectors import enabled_provider_names

MODEL_MAX_CHARS = 200  # Call.model's length


class PlaygroundInvalid(ProblemsError):
    message = "The playground cannot run this."


class NoEnvironment(RegistryError):
    message = "There is no environment to record a playground call in: add one first."


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What the author asked to run: a version, a provider and a model (empty: the binding's)."""

    version: PromptVersion
    provider: str = ""
    model: str = ""


def playground_target_check(*, provider: str, model: str) -> list[Problem]:
    """The provider must be a configured, enabled one; the model a name that fits a call record.
    An empty provider and model mean the binding's own."""
    problems: list[Problem] = []
    if provider:
        if not re.fullmatch(PROVIDER_NAME_PATTERN, provider):
            problems.append(Problem("invalid", "Not a provider name.", "/provider"))
        elif provider not in enabled_provider_names():
            detail = f"{provider!r} is not a configured, enabled provider."
            problems.append(Problem("unknown_provider", detail, "/provider"))
    if len(model) > MODEL_MAX_CHARS:
        problems.append(Problem("too_long", f"At most {MODEL_MAX_CHARS} characters.", "/model"))
    if model and any(ch.isspace() for ch in model):
        problems.append(Problem("invalid", "A model name has no spaces.", "/model"))
    return problems


def playground_prepare(
    *, target: Target, locale: str | None, variables: Mapping[str, Any]
) -> PreparedRun:
    """The target rendered for ``variables`` in ``locale``, ready for ``run_call``. Raises
    ``PlaygroundInvalid`` (provider, model), the registry's locale and variable errors, and
    ``NoEnvironment``; reads the version (three queries) and the first environment."""
    problems = playground_target_check(provider=target.provider, model=target.model)
    if problems:
        raise PlaygroundInvalid(problems)
    version = target.version
    prompt = version.prompt
    served = served_version(prompt_id=prompt.pk, number=version.number)
    if served is None:  # discarded since the page was read
        raise PlaygroundInvalid([Problem("not_found", f"{version} no longer exists.", "/version")])
    model = dict(served.model)
    if (target.provider or model["provider"]) != model["provider"] or (
        target.model or model["model"]
    ) != model["model"]:
        model.update(
            provider=target.provider or model["provider"],
            model=target.model or model["model"],
            fallbacks=[],
        )
        served = dataclasses.replace(served, model=model, memo={})
    environment = Environment.objects.order_by("position").first()
    if environment is None:
        raise NoEnvironment()
    requested = locale_normalize(locale) if locale else prompt.default_locale
    if not served.templates:
        raise LocaleUnavailable()
    used = locale_pick(requested, tuple(served.templates), default=prompt.default_locale)
    release = ServedRelease(
        prompt=prompt.key,
        environment=environment.name,
        prompt_id=prompt.pk,
        environment_id=environment.pk,
        default_locale=prompt.default_locale,
        revision=0,
        state=ReleaseState(stable=version.number),
        versions={version.number: served},
    )
    resolution = Resolution(
        release=release,
        version=served,
        assignment=Assignment(label="", reason=Reason.STABLE, bucket=None, sticky=False),
        salt="",
        locale=used,
        requested_locale=requested,
        shadow=(),
    )
    # Its includes render as in the workbench: a pinned version as pinned, one that follows the
    # snippet's latest committed version (the playground is outside every environment).
    snippets = library_for_templates({used: served.templates[used]})
    prepared = run_prepare(resolution=resolution, variables=variables, snippets=snippets)
    return dataclasses.replace(prepared, source="playground")


def playground_record(
    *, prepared: PreparedRun, outcome: CallOutcome, request_id: str
) -> RecordedCall:
    """The call recorded with the playground's source, as ``run_record`` records it; never
    shadowed, since ``playground_prepare`` names no shadows."""
    return run_record(
        prepared=prepared,
        outcome=outcome,
        subject=None,
        request_id=request_id,
        source=Call.Source.PLAYGROUND,
    )


# What the page shows of every answer; any other field a completion carries (tool calls, when
# the run path returns them) is shown as it is, under its own name (``playground_answer``).
_SHOWN = frozenset(
    {
        "provider",
        "model",
        "text",
        "parsed",
        "input_tokens",
        "output_tokens",
        "latency_ms",
        "time_to_first_token_ms",
        "attempts",
    }
)


def playground_answer(
    prepared: PreparedRun, outcome: CallOutcome, *, recorded: RecordedCall
) -> dict[str, Any]:
    """The answer as the page shows it: the text and its parsed JSON, who answered, tokens, cost,
    latency, every attempt, and whatever else the completion holds (``extra``)."""
    completion = outcome.completion
    assert completion is not None
    binding = prepared.binding
    extra = {
        f.name: _jsonable(getattr(completion, f.name))
        for f in dataclasses.fields(completion)
        if f.name not in _SHOWN
    }
    return {
        "output": completion.text,
        "parsed": completion.parsed,
        "answered_by": {
            "provider": completion.provider,
            "model": completion.model,
            "fallback": (completion.provider, completion.model)
            != (binding.provider, binding.model),
        },
        "usage": {
            "input_tokens": completion.input_tokens,
            "output_tokens": completion.output_tokens,
        },
        "cost": str(cost) if (cost := run_cost(prepared, outcome)) is not None else None,
        "latency_ms": round(outcome.latency_ms, 1),
        "time_to_first_token_ms": (
            round(completion.time_to_first_token_ms, 1)
            if completion.time_to_first_token_ms is not None
            else None
        ),
        "attempts": attempts_as_dicts(completion.attempts),
        "extra": {name: value for name, value in extra.items() if value not in (None, (), [], {})},
        "recorded": recorded.kept,
    }


def _jsonable(value: Any) -> Any:
    """A completion's field as JSON: dataclasses as objects, tuples as lists, the rest as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
