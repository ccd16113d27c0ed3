"""An environment's bundle, read into immutable values, and the local resolution over it.

The bundle is the server's ``GET /api/v1/environments/{environment}/bundle`` answer: every
release of the environment with the versions it serves or shadows. ``bundle_from_json`` checks
it whole (a malformed bundle, or one computed with another hash version, raises
``BundleInvalid`` and is never half applied); ``resolve`` then picks a version for a subject
exactly as the server's ``releases/resolution.py`` does:

1. the subject is the caller's (``sticky``), or one drawn for this call (not sticky);
2. the canary draws first, with its own salt: a bucket under its weight gets the canary;
3. otherwise the experiment draws, with its own salt: the variant whose edge the bucket is under;
4. otherwise the stable version;
5. shadow sampling draws a third time, with its own salt, and lists the shadow versions to run
   (never the version served);
6. the locale falls back ``fr-CA`` → ``fr`` → the prompt's default among the version's locales.

``version_render`` renders a resolved version's sections as the server's ``POST …/render``
does: variables validated against the declared ones first, then the sandboxed render.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from promptregistry.errors import BundleInvalid, LocaleInvalid, NotReleased

from .bucketing import BUCKETS, HASH_VERSION, Reason, assign, bucket
from .locales import locale_index, locale_normalize, locale_pick_indexed
from .rendering import (
    MAX_RENDER_CHARS,
    MAX_RENDER_STEPS,
    RENDER_DEADLINE_MS,
    SECTIONS,
    CompiledSections,
    RenderedSections,
    compile_sections,
    render_compiled,
)
from .snippets import SnippetLibrary, SnippetText
from .variables import VariableSpec, histories, variables_validate

STATE_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Canary:
    version: int
    weight: int  # basis points, 0–10000
    salt: str


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    version: int
    weight: int


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    salt: str
    # Derived once, so a resolve does not rebuild them: (name, weight) in order, and by name.
    splits: tuple[tuple[str, int], ...] = field(init=False, repr=False, compare=False)
    by_name: Mapping[str, Variant] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", tuple((v.name, v.weight) for v in self.variants))
        by_name: dict[str, Variant] = {}
        for variant in self.variants:
            by_name.setdefault(variant.name, variant)  # the first of a name wins, as in a walk
        object.__setattr__(self, "by_name", MappingProxyType(by_name))


@dataclass(frozen=True, slots=True)
class Shadow:
    versions: tuple[int, ...]
    sample: int  # basis points of calls that also run the shadow versions
    salt: str


@dataclass(frozen=True, slots=True)
class ReleaseState:
    """What a release serves: a stable version, and optionally a canary, an experiment and
    shadows, each with the salt of its own draw."""

    stable: int | None = None
    canary: Canary | None = None
    experiment: Experiment | None = None
    shadow: Shadow | None = None

    def versions(self) -> set[int]:
        """Every version number this state can serve or shadow."""
        numbers = {self.stable} if self.stable is not None else set()
        if self.canary:
            numbers.add(self.canary.version)
        if self.experiment:
            numbers |= {v.version for v in self.experiment.variants}
        if self.shadow:
            numbers |= set(self.shadow.versions)
        return numbers


@dataclass(frozen=True, slots=True)
class VersionData:
    """A committed (so immutable) version: declared variables, model binding and templates.

    ``variables`` and ``model`` are the bundle's JSON, shared by every resolution: treat them as
    read-only (hand out copies). ``specs`` are the variables, parsed once, and ``locales``
    the template locales by normalized tag (``locale_index``)."""

    number: int
    content_hash: str
    variables: tuple[Mapping[str, Any], ...]
    model: Mapping[str, Any]
    templates: Mapping[str, Mapping[str, str]]  # locale -> the four sections
    # Whether the binding's provider accepts strict structured output (the bundle's ``providers``;
    # a provider it does not list does): ``Prompt.request`` sends ``strict`` as the server would.
    strict_output: bool = True
    specs: tuple[VariableSpec, ...] = field(init=False, repr=False, compare=False)
    locales: Mapping[str, str] = field(init=False, repr=False, compare=False)
    # locale -> its sections compiled, filled by the first render: the templates never change,
    # so later renders skip checking the sections and looking up each text in the cache.
    compiled: dict[str, CompiledSections] = field(init=False, repr=False, compare=False)
    # This version as a snippet's text, when a release of the bundle includes it.
    as_snippet: dict[str, SnippetText] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "specs", tuple(VariableSpec.from_dict(spec) for spec in self.variables)
        )
        object.__setattr__(self, "locales", MappingProxyType(locale_index(self.templates)))
        object.__setattr__(self, "compiled", {})
        object.__setattr__(self, "as_snippet", {})

    def snippet_text(self, key: str) -> SnippetText:
        """This version as the text of the snippet ``key`` (built on first use, then kept)."""
        text = self.as_snippet.get(key)
        if text is None:
            text = self.as_snippet[key] = SnippetText(key, self.number, self.templates)
        return text


class BundleSnippets:
    """What ``snippet(...)`` includes when rendering from a bundle, as the server's
    ``releases.snippets.ServedSnippets`` does: an include that follows gets the stable version of
    the snippet's release in the bundle, a pinned one the version the bundle's ``snippets``
    carries. Filled once the bundle's releases are read (``bundle_from_json``)."""

    __slots__ = ("pinned", "releases")

    def __init__(self, pinned: Mapping[tuple[str, int | None], SnippetText]) -> None:
        self.pinned = pinned
        self.releases: Mapping[str, ReleaseData] = MappingProxyType({})

    def get(self, ref: tuple[str, int | None], /) -> SnippetText | None:
        key, number = ref
        if number is not None:
            return self.pinned.get(ref)
        release = self.releases.get(key)
        if release is None or release.state.stable is None:
            return None
        version = release.versions.get(release.state.stable)
        if version is None:
            return None
        return version.snippet_text(key)


NO_SNIPPETS = BundleSnippets(MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class ReleaseData:
    prompt: str
    environment: str
    default_locale: str
    revision: int
    state: ReleaseState
    versions: Mapping[int, VersionData]
    # What its versions' includes serve: the bundle's snippets (shared by its releases).
    snippets: BundleSnippets = field(default=NO_SNIPPETS, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Bundle:
    environment: str
    hash_version: int
    etag: str
    releases: Mapping[str, ReleaseData]


@dataclass(slots=True)
class Resolution:
    """Which version a subject gets, and why: enough to trace the answer ("why did user X get
    version 7?") with the revision, bucket and salt.

    Not frozen, unlike the bundle's values: each ``resolve`` makes a new one that nothing else
    shares, and a frozen dataclass of this size costs more to build (about 3 µs) than the whole
    rest of a resolve."""

    prompt: str
    environment: str
    version: VersionData
    number: int
    variant: str  # "stable", "canary" or the experiment variant's name
    reason: Reason
    sticky: bool  # False when no subject was given and one was drawn for this call
    locale: str
    requested_locale: str
    bucket: int | None  # 0..9999 from the deciding draw; None when nothing was drawn
    salt: str  # the salt of the decision that picked the version ("" for a plain stable)
    shadow: tuple[int, ...]
    revision: int
    subject: str | None = None  # the caller's subject (None when one was drawn)
    snippets: SnippetLibrary | None = None  # what the version's includes serve (the bundle's)


# --- reading a bundle ----------------------------------------------------------------------------


def _fail(where: str, problem: str) -> BundleInvalid:
    return BundleInvalid(f"The bundle is malformed at {where}: {problem}.")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, "expected an object")
    return value


def _text(value: object, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty):
        raise _fail(where, "expected a non-empty string" if not empty else "expected a string")
    return value


def _integer(value: object, where: str, *, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, "expected an integer")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise _fail(where, f"expected an integer {bounds}, got {value}")
    return value


def _weight(value: object, where: str) -> int:
    return _integer(value, where, low=0, high=BUCKETS)


def _state(data: object, where: str) -> ReleaseState:
    state = _mapping(data, where)
    schema = state.get("schema_version", STATE_SCHEMA_VERSION)
    if schema != STATE_SCHEMA_VERSION:
        raise _fail(f"{where}/schema_version", f"unknown release state schema {schema!r}")
    stable = state.get("stable")
    canary = state.get("canary")
    experiment = state.get("experiment")
    shadow = state.get("shadow")
    return ReleaseState(
        stable=None if stable is None else _integer(stable, f"{where}/stable", low=1),
        canary=None if canary is None else _canary(canary, f"{where}/canary"),
        experiment=None if experiment is None else _experiment(experiment, f"{where}/experiment"),
        shadow=None if shadow is None else _shadow(shadow, f"{where}/shadow"),
    )


def _canary(data: object, where: str) -> Canary:
    canary = _mapping(data, where)
    return Canary(
        version=_integer(canary.get("version"), f"{where}/version", low=1),
        weight=_weight(canary.get("weight"), f"{where}/weight"),
        salt=_text(canary.get("salt"), f"{where}/salt"),
    )


def _experiment(data: object, where: str) -> Experiment:
    experiment = _mapping(data, where)
    raw = experiment.get("variants")
    if not isinstance(raw, list) or not raw:
        raise _fail(f"{where}/variants", "expected a non-empty list")
    variants = []
    for index, item in enumerate(raw):
        at = f"{where}/variants/{index}"
        variant = _mapping(item, at)
        variants.append(
            Variant(
                name=_text(variant.get("name"), f"{at}/name"),
                version=_integer(variant.get("version"), f"{at}/version", low=1),
                weight=_weight(variant.get("weight"), f"{at}/weight"),
            )
        )
    if sum(v.weight for v in variants) > BUCKETS:
        raise _fail(f"{where}/variants", "the weights add up to more than 10000")
    return Experiment(
        name=_text(experiment.get("name"), f"{where}/name"),
        variants=tuple(variants),
        salt=_text(experiment.get("salt"), f"{where}/salt"),
    )


def _shadow(data: object, where: str) -> Shadow:
    shadow = _mapping(data, where)
    raw = shadow.get("versions")
    if not isinstance(raw, list):
        raise _fail(f"{where}/versions", "expected a list")
    return Shadow(
        versions=tuple(_integer(n, f"{where}/versions/{i}", low=1) for i, n in enumerate(raw)),
        sample=_weight(shadow.get("sample"), f"{where}/sample"),
        salt=_text(shadow.get("salt"), f"{where}/salt"),
    )


def _templates(data: object, where: str) -> Mapping[str, Mapping[str, str]]:
    templates = _mapping(data, where)
    if not templates:
        raise _fail(where, "a version needs at least one locale")
    result: dict[str, Mapping[str, str]] = {}
    for locale, raw in templates.items():
        at = f"{where}/{locale}"
        if not _is_tag(locale):
            raise _fail(at, "the key is not a BCP 47 language tag")
        sections = _mapping(raw, at)
        for name, text in sections.items():
            if name not in SECTIONS:
                raise _fail(f"{at}/{name}", f"not a section ({', '.join(SECTIONS)})")
            if not isinstance(text, str):
                raise _fail(f"{at}/{name}", "expected text")
        result[locale] = MappingProxyType(dict(sections))
    return MappingProxyType(result)


def _is_tag(tag: object) -> bool:
    try:
        locale_normalize(tag)  # type: ignore[arg-type]
    except LocaleInvalid:
        return False
    return True


def _strict_outputs(data: object) -> dict[str, bool]:
    """The bundle's ``providers`` map read leniently (an older server sends none): by name,
    whether each accepts strict structured output."""
    if not isinstance(data, Mapping):
        return {}
    return {
        name: flags["strict_output"]
        for name, flags in data.items()
        if isinstance(name, str)
        and isinstance(flags, Mapping)
        and isinstance(flags.get("strict_output"), bool)
    }


def _version(
    data: object, where: str, key: str, strict_outputs: Mapping[str, bool] | None = None
) -> VersionData:
    version = _mapping(data, where)
    number = _integer(version.get("number"), f"{where}/number", low=1)
    if key != str(number):
        raise _fail(f"{where}/number", f"version {number} is listed under {key!r}")
    variables = version.get("variables")
    if not isinstance(variables, list):
        raise _fail(f"{where}/variables", "expected a list")
    for index, spec in enumerate(variables):
        _text(
            _mapping(spec, f"{where}/variables/{index}").get("name"),
            f"{where}/variables/{index}/name",
        )
    model = _mapping(version.get("model"), f"{where}/model")
    provider = model.get("provider")
    return VersionData(
        number=number,
        content_hash=_text(version.get("content_hash"), f"{where}/content_hash", empty=True),
        variables=tuple(variables),
        model=model,
        templates=_templates(version.get("templates"), f"{where}/templates"),
        strict_output=(strict_outputs or {}).get(provider, True)
        if isinstance(provider, str)
        else True,
    )


def _snippets(data: object, where: str) -> dict[tuple[str, int | None], SnippetText]:
    """The bundle's pinned snippet versions: key -> number -> {number, templates}."""
    pinned: dict[tuple[str, int | None], SnippetText] = {}
    for key, versions in _mapping(data, where).items():
        for number_key, raw in _mapping(versions, f"{where}/{key}").items():
            at = f"{where}/{key}/{number_key}"
            version = _mapping(raw, at)
            number = _integer(version.get("number"), f"{at}/number", low=1)
            if str(number) != str(number_key):
                raise _fail(f"{at}/number", f"version {number} is listed under {number_key!r}")
            pinned[(key, number)] = SnippetText(
                key, number, _templates(version.get("templates"), f"{at}/templates")
            )
    return pinned


def _release(
    data: object,
    where: str,
    key: str,
    environment: str,
    strict_outputs: Mapping[str, bool] | None = None,
    snippets: BundleSnippets = NO_SNIPPETS,
) -> ReleaseData:
    release = _mapping(data, where)
    prompt = _text(release.get("prompt"), f"{where}/prompt")
    if prompt != key:
        raise _fail(f"{where}/prompt", f"the release of {prompt!r} is listed under {key!r}")
    default_locale = _text(release.get("default_locale"), f"{where}/default_locale")
    if not _is_tag(default_locale):
        raise _fail(f"{where}/default_locale", "not a BCP 47 language tag")
    state = _state(release.get("state"), f"{where}/state")
    raw_versions = _mapping(release.get("versions"), f"{where}/versions")
    versions: dict[int, VersionData] = {}
    for number_key, raw in raw_versions.items():
        version = _version(raw, f"{where}/versions/{number_key}", str(number_key), strict_outputs)
        versions[version.number] = version
    missing = sorted(state.versions() - versions.keys())
    if missing:
        raise _fail(f"{where}/versions", f"the release uses versions {missing} it does not carry")
    return ReleaseData(
        prompt=prompt,
        environment=environment,
        default_locale=default_locale,
        revision=_integer(release.get("revision"), f"{where}/revision", low=0),
        state=state,
        versions=MappingProxyType(versions),
        snippets=snippets,
    )


def bundle_from_json(data: Mapping[str, Any], *, etag: str) -> Bundle:
    """Read the server's bundle body (``GET /api/v1/environments/{environment}/bundle``).

    Raises ``BundleInvalid`` when the body is not a bundle this SDK can serve from: another
    ``hash_version`` than the one it computes (the traffic split would differ from the
    server's), or anything malformed, named by its JSON Pointer. Unknown keys are ignored, so
    the server can add fields without breaking SDKs in the field.
    """
    body = _mapping(data, "/")
    hash_version = body.get("hash_version")
    if type(hash_version) is not int or hash_version != HASH_VERSION:  # not True, not 1.0
        raise BundleInvalid(
            f"The bundle was computed with hash version {hash_version!r}; this SDK implements "
            f"hash version {HASH_VERSION} only. Upgrade the SDK to follow the server's "
            "traffic split."
        )
    environment = _text(body.get("environment"), "/environment")
    raw_releases = _mapping(body.get("releases"), "/releases")
    strict_outputs = _strict_outputs(body.get("providers"))
    # A server from before snippets sends none: nothing is pinned.
    snippets = BundleSnippets(MappingProxyType(_snippets(body.get("snippets", {}), "/snippets")))
    releases: dict[str, ReleaseData] = {}
    for key, raw in raw_releases.items():
        if not isinstance(key, str) or not key:
            raise _fail("/releases", f"the key {key!r} is not a prompt key")
        releases[key] = _release(
            raw, f"/releases/{key}", key, environment, strict_outputs, snippets
        )
    snippets.releases = MappingProxyType(releases)
    return Bundle(
        environment=environment,
        hash_version=HASH_VERSION,
        etag=etag,
        releases=MappingProxyType(releases),
    )


# --- resolving -----------------------------------------------------------------------------------


def resolve(release: ReleaseData, *, subject: str | None, locale: str | None) -> Resolution:
    """The version ``subject`` gets from ``release``, in which locale, and why (the module's
    steps 1–6). Raises ``NotReleased`` when nothing is stable, ``LocaleInvalid`` for a bad tag
    and ``LocaleUnavailable`` when neither the locale nor its fallbacks have a template."""
    sticky = bool(subject)
    drawn_for = subject or secrets.token_hex(8)
    state = release.state
    chosen, reason, label, drawn, salt = state.stable, Reason.STABLE, "stable", -1, ""
    decided = False
    if state.canary is not None and state.canary.weight > 0:
        drawn, salt = bucket(state.canary.salt, drawn_for), state.canary.salt
        if drawn < state.canary.weight:
            chosen, reason, label, decided = state.canary.version, Reason.CANARY, "canary", True
    if not decided and state.experiment is not None:
        drawn, salt = bucket(state.experiment.salt, drawn_for), state.experiment.salt
        name = assign(state.experiment.splits, drawn)
        if name is not None:
            chosen, reason, label = (
                state.experiment.by_name[name].version,
                Reason.EXPERIMENT,
                name,
            )
    if chosen is None:
        raise NotReleased(f"{release.prompt} has no version released in {release.environment}.")
    shadow: tuple[int, ...] = ()
    if (
        state.shadow is not None
        and state.shadow.sample > 0
        and bucket(state.shadow.salt, drawn_for) < state.shadow.sample
    ):
        shadow = tuple(n for n in state.shadow.versions if n != chosen)
    version = release.versions[chosen]
    requested = locale_normalize(locale) if locale else release.default_locale
    used = locale_pick_indexed(requested, version.locales, default=release.default_locale)
    return Resolution(
        prompt=release.prompt,
        environment=release.environment,
        version=version,
        number=version.number,
        variant=label,
        reason=reason,
        sticky=sticky,
        locale=used,
        requested_locale=requested,
        bucket=drawn if drawn >= 0 else None,
        salt=salt,
        shadow=shadow,
        revision=release.revision,
        subject=subject if sticky else None,
        snippets=release.snippets,
    )


def version_render(
    version: VersionData,
    *,
    locale: str,
    variables: Mapping[str, Any],
    max_chars: int = MAX_RENDER_CHARS,
    max_steps: int = MAX_RENDER_STEPS,
    deadline_ms: float | None = RENDER_DEADLINE_MS,
    snippets: SnippetLibrary | None = None,
) -> RenderedSections:
    """The version's sections in ``locale`` (a key of ``version.templates``, as ``resolve``
    answers it) rendered with the caller's variables, validated against the declared ones first,
    carrying the histories of its ``messages`` variables for ``to_messages``.
    ``snippets``: what its includes serve (``Resolution.snippets``, the bundle's).
    Raises ``VariablesInvalid`` (every problem listed) or ``RenderError``."""
    values = variables_validate(version.specs, variables)
    compiled = version.compiled.get(locale)
    if compiled is None:
        # Two threads may both compile it; equal text gives equal templates, the last one stays.
        compiled = version.compiled[locale] = compile_sections(
            version.templates[locale], locale=locale
        )
    return render_compiled(
        compiled,
        variables=values,
        locale=locale,
        max_chars=max_chars,
        max_steps=max_steps,
        deadline_ms=deadline_ms,
        history=histories(version.specs, values),
        snippets=snippets,
    )
