"""Pure resolution: a release's served state + a subject + a locale -> which version, and why.

No ORM and no I/O: the cache hands in a ``ServedRelease`` built from the database, and the same
logic runs for every request. The SDK mirrors it over its bundle.

1. The subject is the caller's (``sticky``), or one drawn for this request (not sticky).
2. The canary draws first, with its own salt: a bucket under its weight gets the canary.
3. Otherwise the experiment draws, with its own salt: the variant whose edge the bucket is under.
4. Otherwise the stable version.
5. Shadow sampling draws a third time, with its own salt, and lists the shadow versions to run.
6. The locale falls back ``fr-CA`` -> ``fr`` -> the prompt's default among the version's locales.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from promptregistry.core.snippets import SnippetLibrary, SnippetText

from registry.errors import RegistryError
from registry.locales import locale_normalize, locale_pick
from registry.rendering import Sections, render_sections
from registry.variables import VariableSpec, histories, variables_validate

from .bucketing import Assignment, Reason, assign, bucket
from .state import ReleaseState


class NotReleased(RegistryError):
    message = "The prompt has no version released in this environment."


@dataclass(frozen=True, slots=True)
class ServedVersion:
    pk: int  # the version's row: call records point at it without a query
    number: int
    content_hash: str
    variables: tuple[Mapping[str, Any], ...]
    model: Mapping[str, Any]
    templates: Mapping[str, Mapping[str, str]]  # locale -> the four sections
    # What its templates include (every locale): (snippet key, pinned version or None).
    snippets: tuple[tuple[str, int | None], ...] = ()
    # Values its readers derive from this immutable version, computed on first use and kept as
    # long as the cached release is (the runtime's encoded answer, api/resolve_path.py). Never
    # part of the version's identity.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ServedRelease:
    prompt: str
    environment: str
    # The rows a call record points at, known from the load: a run writes its record with no
    # query to find them.
    prompt_id: int
    environment_id: int
    default_locale: str
    revision: int
    state: ReleaseState
    versions: Mapping[int, ServedVersion]
    # The pinned snippet versions its versions include, every level (``releases.snippets``):
    # immutable, so loaded once with the release. Followed ones are read live.
    pinned: Mapping[tuple[str, int | None], SnippetText] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Resolution:
    release: ServedRelease
    version: ServedVersion
    assignment: Assignment
    salt: str  # the salt of the decision that picked the version ("" for a plain stable)
    locale: str
    requested_locale: str
    shadow: tuple[int, ...]


def resolve(release: ServedRelease, *, subject: str | None, locale: str | None) -> Resolution:
    sticky = bool(subject)
    subject = subject or secrets.token_hex(8)
    state = release.state
    chosen, reason, label, drawn, salt = state.stable, Reason.STABLE, "stable", -1, ""
    decided = False
    if state.canary is not None and state.canary.weight > 0:
        drawn, salt = bucket(state.canary.salt, subject), state.canary.salt
        if drawn < state.canary.weight:
            chosen, reason, label, decided = state.canary.version, Reason.CANARY, "canary", True
    if not decided and state.experiment is not None:
        drawn, salt = bucket(state.experiment.salt, subject), state.experiment.salt
        splits = [(v.name, v.weight) for v in state.experiment.variants]
        name = assign(splits, drawn)
        if name is not None:
            variant = next(v for v in state.experiment.variants if v.name == name)
            chosen, reason, label = variant.version, Reason.EXPERIMENT, name
    if chosen is None:
        raise NotReleased()
    shadow: tuple[int, ...] = ()
    if (
        state.shadow is not None
        and state.shadow.sample > 0
        and bucket(state.shadow.salt, subject) < state.shadow.sample
    ):
        shadow = tuple(n for n in state.shadow.versions if n != chosen)
    version = release.versions[chosen]
    requested, used = _locales(release, version, locale)
    return Resolution(
        release=release,
        version=version,
        assignment=Assignment(
            label=label, reason=reason, bucket=drawn if drawn >= 0 else None, sticky=sticky
        ),
        salt=salt,
        locale=used,
        requested_locale=requested,
        shadow=shadow,
    )


PINNED = "pinned"  # the variant a pinned call is recorded under: no split's, so no statistic's


def resolve_pinned(release: ServedRelease, *, number: int, locale: str | None) -> Resolution:
    """Version ``number`` of ``release`` (which must hold it: ``releases.selectors.
    release_with_version``), named by the caller instead of drawn (decision 0042): nothing is
    drawn, so the call is not sticky, and it samples no shadow. Its variant, ``pinned``, is no
    canary's, stable's or experiment variant's, so canary analyses and A/B results leave it out."""
    version = release.versions[number]
    requested, used = _locales(release, version, locale)
    return Resolution(
        release=release,
        version=version,
        assignment=Assignment(label=PINNED, reason=Reason.PINNED, bucket=None, sticky=False),
        salt="",
        locale=used,
        requested_locale=requested,
        shadow=(),
    )


def _locales(release: ServedRelease, version: ServedVersion, locale: str | None) -> tuple[str, str]:
    """(requested, used): the locale asked for (the prompt's default when none) and the one the
    version serves for it."""
    requested = locale_normalize(locale) if locale else release.default_locale
    return requested, _locale_pick(requested, tuple(version.templates), release.default_locale)


@lru_cache(maxsize=1024)
def _locale_pick(requested: str, available: tuple[str, ...], default: str) -> str:
    """``locale_pick`` remembered: the same few (request, locales, default) come again and again
    (a failure is not remembered: it raises each time)."""
    return locale_pick(requested, available, default=default)


def version_variables_check(version: ServedVersion, variables: Mapping[str, Any]) -> None:
    """Raises the registry's ``VariablesInvalid`` when the caller's variables do not fit the
    version's declarations, as ``version_render`` would: for work to do before rendering that
    should not be done for a request refused anyway (a run's input guardrails)."""
    _validated([VariableSpec.from_dict(v) for v in version.variables], variables)


def _validated(specs: list[VariableSpec], variables: Mapping[str, Any]) -> dict[str, Any]:
    return variables_validate(
        specs,
        variables,
        max_messages=settings.PROMPT_HISTORY_MAX_MESSAGES,
        max_history_chars=settings.PROMPT_HISTORY_MAX_CHARS,
    )


def version_render(
    version: ServedVersion,
    *,
    locale: str,
    variables: Mapping[str, Any],
    snippets: SnippetLibrary | None = None,
):
    """The version's sections in ``locale`` rendered with the caller's variables, validated against
    the declared ones first (every problem listed), with the histories of its ``messages``
    variables for ``to_messages``. Raises the registry's rendering errors.
    ``snippets``: what its includes serve (``releases.snippets.ServedSnippets``)."""
    specs = [VariableSpec.from_dict(v) for v in version.variables]
    values = _validated(specs, variables)
    return render_sections(
        sections=Sections.from_mapping(version.templates[locale]),
        variables=values,
        locale=locale,
        max_chars=settings.PROMPT_RENDER_MAX_CHARS,
        max_steps=settings.PROMPT_RENDER_MAX_STEPS,
        deadline_ms=settings.PROMPT_RENDER_DEADLINE_MS,
        history=histories(specs, values),
        snippets=snippets,
    )
