"""A version's content as a value, its canonical form and its ``content_hash``.

The content is what a version serves: declared variables, the model binding and the localized
templates. The commit message, author and number are *about* the content and are not part of it,
so two versions with equal content have equal hashes whoever wrote them.

Canonical form: JSON with sorted keys, no insignificant whitespace, UTF-8, locales normalized and
sorted, variables in declared order (order is meaningful to authors and to forms). The hash is the
SHA-256 of that text. Export files, diffs and the import's "unchanged?" check all use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import LocaleInvalid, Problem
from .guardrails import guardrails_problems, moderation_providers
from .json_schemas import schema_problems
from .locales import locale_normalize
from .rendering import SECTIONS, Sections, template_check
from .tools import tools_problems
from .variables import (
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGES,
    VariableSpec,
    VariableType,
    variable_specs_check,
)

PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MODEL_NAME_MAX = 200
MAX_FALLBACKS = 5

# The sampling parameters a binding may set, with what each accepts. Anything else is refused so a
# typo ("temprature") fails at authoring time instead of being silently ignored by a provider.
_NUMBER = (int, float)


def _in_range(lo: float, hi: float):
    def check(value: Any) -> bool:
        return (
            isinstance(value, _NUMBER)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and lo <= value <= hi
        )

    return check


def _int_range(lo: int, hi: int):
    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi

    return check


def _stop(value: Any) -> bool:
    if isinstance(value, str):
        return 0 < len(value) <= 100
    return (
        isinstance(value, list)
        and 0 < len(value) <= 4
        and all(isinstance(v, str) and 0 < len(v) <= 100 for v in value)
    )


MODEL_PARAMETERS: dict[str, tuple[str, Any]] = {
    "temperature": ("a number from 0 to 2", _in_range(0, 2)),
    "top_p": ("a number from 0 to 1", _in_range(0, 1)),
    "max_tokens": ("a whole number from 1 to 1000000", _int_range(1, 1_000_000)),
    "seed": ("a whole number", _int_range(-(2**63), 2**63 - 1)),
    "stop": ("a string or a list of up to 4 strings", _stop),
    "presence_penalty": ("a number from -2 to 2", _in_range(-2, 2)),
    "frequency_penalty": ("a number from -2 to 2", _in_range(-2, 2)),
    "reasoning_effort": (
        "one of minimal, low, medium, high",
        lambda v: v in {"minimal", "low", "medium", "high"},
    ),
}


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """One model to call: the primary of a binding or one of its fallbacks."""

    provider: str
    model: str
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model, "parameters": dict(self.parameters)}


@dataclass(frozen=True, slots=True)
class ModelBinding:
    provider: str
    model: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    response_schema: Mapping[str, Any] | None = None
    fallbacks: tuple[ModelTarget, ...] = ()
    # Tools in OpenAI's format (registry.tools); a binding without tools leaves all three unset.
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    # The response cache's policy (runs.response_cache, decision 0050): ``{"exact":
    # {"ttl_seconds": N}}``, or None for none.
    cache: Mapping[str, Any] | None = None
    # The guardrail policy (registry.guardrails, decision 0052), or None for none.
    guardrails: Mapping[str, Any] | None = None

    @property
    def targets(self) -> tuple[ModelTarget, ...]:
        """The primary, then the fallbacks: the order a call tries them in."""
        return (ModelTarget(self.provider, self.model, self.parameters), *self.fallbacks)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "provider": self.provider,
            "model": self.model,
            "parameters": dict(self.parameters),
            "response_schema": dict(self.response_schema) if self.response_schema else None,
            "fallbacks": [f.as_dict() for f in self.fallbacks],
        }
        # Present only when set, so a version without tools keeps the canonical form, and so the
        # content hash, it had before bindings could hold tools (decision 0004, 0033).
        data |= self.tools_dict()
        # Likewise: a version without a cache keeps its hash (decision 0050).
        if self.cache is not None:
            data["cache"] = _plain(self.cache)
        if self.guardrails is not None:  # likewise (decision 0052)
            data["guardrails"] = _plain(self.guardrails)
        return data

    def tools_dict(self) -> dict[str, Any]:
        """The tool fields that are set: ``tools``, ``tool_choice``, ``parallel_tool_calls``."""
        data: dict[str, Any] = {}
        if self.tools:
            data["tools"] = [dict(t) if isinstance(t, Mapping) else t for t in self.tools]
        if self.tool_choice is not None:
            data["tool_choice"] = self.tool_choice
        if self.parallel_tool_calls is not None:
            data["parallel_tool_calls"] = self.parallel_tool_calls
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelBinding:
        """Builds the value without validating it; ``model_binding_check`` says what is wrong."""
        return cls(
            provider=data.get("provider") or "",
            model=data.get("model") or "",
            parameters=dict(data.get("parameters") or {}),
            response_schema=data.get("response_schema") or None,
            fallbacks=tuple(
                ModelTarget(
                    provider=f.get("provider") or "",
                    model=f.get("model") or "",
                    parameters=dict(f.get("parameters") or {}),
                )
                for f in (data.get("fallbacks") or ())
                if isinstance(f, Mapping)
            ),
            # Not a list: refused by ``content_shape_check`` (or the API's serializer) first.
            tools=tuple(tools) if isinstance(tools := data.get("tools"), list | tuple) else (),
            tool_choice=data.get("tool_choice"),
            parallel_tool_calls=data.get("parallel_tool_calls"),
            cache=data.get("cache"),
            guardrails=data.get("guardrails"),
        )


@dataclass(frozen=True, slots=True)
class VersionContent:
    variables: tuple[VariableSpec, ...]
    model: ModelBinding
    templates: Mapping[str, Sections]  # locale -> sections

    def canonical(self) -> dict[str, Any]:
        return {
            "variables": [v.as_dict() for v in self.variables],
            "model": self.model.as_dict(),
            "templates": {
                locale: self.templates[locale].as_dict() for locale in sorted(self.templates)
            },
        }

    @property
    def content_hash(self) -> str:
        return sha256_json(self.canonical())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VersionContent:
        return cls(
            variables=tuple(VariableSpec.from_dict(v) for v in data.get("variables") or ()),
            model=ModelBinding.from_dict(data.get("model") or {}),
            templates={
                locale: Sections.from_mapping(
                    sections or {}, pointer=f"/templates/{pointer_token(locale)}"
                )
                for locale, sections in (data.get("templates") or {}).items()
            },
        )


VARIABLE_FIELDS = frozenset({"name", "type", "required", "default", "description", "after"})
TARGET_FIELDS = frozenset({"provider", "model", "parameters"})
BINDING_FIELDS = TARGET_FIELDS | {
    "response_schema",
    "fallbacks",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "cache",
    "guardrails",
}
CACHE_KINDS = frozenset({"exact", "semantic"})
CACHE_TTL_MAX_SECONDS = 30 * 24 * 3600
SEMANTIC_CACHE_FIELDS = frozenset({"ttl_seconds", "threshold", "provider", "model"})


def _plain(value: Any) -> Any:
    """A JSON value with its mappings as dicts (a binding's values may be read-only mappings)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _fields_check(data: Mapping[Any, Any], known: frozenset[str], pointer: str) -> list[Problem]:
    return [
        Problem(
            "unknown_field",
            f"Unknown field {name!r}; the fields are {', '.join(sorted(known))}.",
            f"{pointer}/{name}",
        )
        for name in data
        if name not in known
    ]


def _target_shape_check(data: Any, pointer: str, known: frozenset[str]) -> list[Problem]:
    if not isinstance(data, Mapping):
        return [Problem("wrong_type", "A model binding must be a mapping.", pointer)]
    problems = _fields_check(data, known, pointer)
    for name in ("provider", "model"):
        if data.get(name) is not None and not isinstance(data[name], str):
            problems.append(Problem("wrong_type", f"{name!r} must be text.", f"{pointer}/{name}"))
    if data.get("parameters") is not None and not isinstance(data["parameters"], Mapping):
        problems.append(
            Problem("wrong_type", "'parameters' must be a mapping.", f"{pointer}/parameters")
        )
    return problems


def content_shape_check(data: Mapping[str, Any]) -> list[Problem]:
    """Every problem with the *shape* of a content document (JSON or YAML), by pointer.

    ``VersionContent.from_dict`` trusts the shape (the API's serializers check it first); a caller
    without a serializer, such as the importer, calls this before it: lists of mappings, mappings of
    text, and no unknown field, so a typo (``requird``, ``instructions``) is refused instead of
    silently dropped. What the values *mean* is ``content_check``'s job.
    """
    problems: list[Problem] = []
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, list):
        problems.append(Problem("wrong_type", "'variables' must be a list.", "/variables"))
    for i, variable in enumerate(variables if isinstance(variables, list) else ()):
        if isinstance(variable, Mapping):
            problems += _fields_check(variable, VARIABLE_FIELDS, f"/variables/{i}")
        else:
            problems.append(
                Problem("wrong_type", "A variable must be a mapping.", f"/variables/{i}")
            )
    model = data.get("model")
    if model is not None:
        problems += _target_shape_check(model, "/model", BINDING_FIELDS)
    if isinstance(model, Mapping):
        fallbacks = model.get("fallbacks")
        if fallbacks is not None and not isinstance(fallbacks, list):
            problems.append(
                Problem("wrong_type", "'fallbacks' must be a list.", "/model/fallbacks")
            )
        for i, fallback in enumerate(fallbacks if isinstance(fallbacks, list) else ()):
            problems += _target_shape_check(fallback, f"/model/fallbacks/{i}", TARGET_FIELDS)
        tools = model.get("tools")
        if tools is not None and not isinstance(tools, list):
            problems.append(Problem("wrong_type", "'tools' must be a list.", "/model/tools"))
    templates = data.get("templates")
    if templates is not None and not isinstance(templates, Mapping):
        problems.append(Problem("wrong_type", "'templates' must be a mapping.", "/templates"))
    for locale, sections in (templates if isinstance(templates, Mapping) else {}).items():
        pointer = f"/templates/{pointer_token(locale)}"
        if sections is None:
            continue
        if not isinstance(sections, Mapping):
            problems.append(
                Problem(
                    "wrong_type",
                    f"A locale's template must be a mapping of sections ({', '.join(SECTIONS)}).",
                    pointer,
                )
            )
            continue
        for name, text in sections.items():
            if name not in SECTIONS:
                problems.append(
                    Problem(
                        "unknown_section",
                        f"'{name}' is not a section; the sections are {', '.join(SECTIONS)}.",
                        f"{pointer}/{name}",
                    )
                )
            elif text is not None and not isinstance(text, str):
                problems.append(
                    Problem(
                        "invalid_section", f"The {name} section must be text.", f"{pointer}/{name}"
                    )
                )
    return problems


def sha256_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sections_hash(sections: Sections) -> str:
    """The hash a translation remembers of the default-locale text it was translated from."""
    return sha256_json(sections.as_dict())


def _target_check(target: ModelTarget, pointer: str) -> list[Problem]:
    problems: list[Problem] = []
    if not PROVIDER_NAME.fullmatch(target.provider or ""):
        problems.append(
            Problem(
                "invalid_provider",
                "Name a configured provider: lowercase letters, digits, '.', '_' or '-'.",
                f"{pointer}/provider",
            )
        )
    model = target.model
    # The name goes to the provider as is: "gpt-4o\n" would be another, unknown, model.
    if (
        not model
        or len(model) > MODEL_NAME_MAX
        or model != model.strip()
        or not model.isprintable()
    ):
        problems.append(
            Problem(
                "invalid_model",
                f"Name the model (1 to {MODEL_NAME_MAX} printable characters, no space at "
                "either end).",
                f"{pointer}/model",
            )
        )
    if not isinstance(target.parameters, Mapping):
        problems.append(
            Problem("invalid_parameters", "Parameters must be an object.", f"{pointer}/parameters")
        )
        return problems
    for name, value in target.parameters.items():
        spec = MODEL_PARAMETERS.get(name)
        if spec is None:
            known = ", ".join(sorted(MODEL_PARAMETERS))
            problems.append(
                Problem(
                    "unknown_parameter",
                    f"Unknown model parameter {name!r}; known: {known}.",
                    f"{pointer}/parameters/{pointer_token(name)}",
                )
            )
        elif not spec[1](value):
            problems.append(
                Problem(
                    "invalid_parameter",
                    f"{name} must be {spec[0]}, not {value!r}.",
                    f"{pointer}/parameters/{pointer_token(name)}",
                )
            )
    return problems


def model_binding_check(binding: ModelBinding, *, pointer: str = "/model") -> list[Problem]:
    problems = _target_check(binding.targets[0], pointer)
    if binding.response_schema is not None:
        if not isinstance(binding.response_schema, Mapping):
            problems.append(
                Problem(
                    "invalid_response_schema",
                    "The response schema must be a JSON Schema object.",
                    f"{pointer}/response_schema",
                )
            )
        else:
            problems += [
                Problem(
                    "invalid_response_schema" if p.code == "invalid_json_schema" else p.code,
                    f"The response schema: {p.detail}",
                    p.pointer,
                )
                for p in schema_problems(
                    binding.response_schema, pointer=f"{pointer}/response_schema"
                )
            ]
    problems += tools_problems(
        list(binding.tools), binding.tool_choice, binding.parallel_tool_calls, pointer=pointer
    )
    if binding.cache is not None:
        problems += cache_policy_problems(binding.cache, pointer=f"{pointer}/cache")
    if binding.guardrails is not None:
        problems += guardrails_problems(
            binding.guardrails,
            pointer=f"{pointer}/guardrails",
            response_schema=binding.response_schema,
        )
    if len(binding.fallbacks) > MAX_FALLBACKS:
        problems.append(
            Problem(
                "too_many_fallbacks", f"At most {MAX_FALLBACKS} fallbacks.", f"{pointer}/fallbacks"
            )
        )
    for i, fallback in enumerate(binding.fallbacks):
        problems += _target_check(fallback, f"{pointer}/fallbacks/{i}")
    return problems


def _cache_ttl_problem(policy: Mapping[Any, Any], at: str) -> list[Problem]:
    ttl = policy.get("ttl_seconds")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= CACHE_TTL_MAX_SECONDS:
        return [
            Problem(
                "invalid_cache_ttl",
                f"ttl_seconds must be a whole number of seconds from 1 to "
                f"{CACHE_TTL_MAX_SECONDS} (30 days).",
                f"{at}/ttl_seconds",
            )
        ]
    return []


def _semantic_policy_problems(semantic: Mapping[Any, Any], at: str) -> list[Problem]:
    problems = _fields_check(semantic, SEMANTIC_CACHE_FIELDS, at)
    problems += _cache_ttl_problem(semantic, at)
    threshold = semantic.get("threshold")
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not 0.0 < threshold <= 1.0
    ):
        problems.append(
            Problem(
                "invalid_cache_threshold",
                "threshold is the cosine similarity from which a cached answer is served: a "
                "number above 0 and at most 1 (1 serves only the same text; 0.9 is a start).",
                f"{at}/threshold",
            )
        )
    provider = semantic.get("provider")
    if not isinstance(provider, str) or not PROVIDER_NAME.fullmatch(provider):
        problems.append(
            Problem(
                "invalid_provider",
                "The semantic cache needs the provider whose /embeddings endpoint embeds the "
                "questions: name a configured provider (lowercase letters, digits, '.', '_' or "
                "'-').",
                f"{at}/provider",
            )
        )
    model = semantic.get("model")
    if (
        not isinstance(model, str)
        or not model
        or len(model) > MODEL_NAME_MAX
        or model != model.strip()
        or not model.isprintable()
    ):
        problems.append(
            Problem(
                "invalid_model",
                f"Name the embedding model (1 to {MODEL_NAME_MAX} printable characters, no "
                "space at either end), e.g. text-embedding-3-small.",
                f"{at}/model",
            )
        )
    return problems


def cache_policy_problems(cache: Any, *, pointer: str = "/model/cache") -> list[Problem]:
    """What is wrong with a binding's response cache policy (decision 0050).

    ``exact`` (``ttl_seconds``) and ``semantic`` (``ttl_seconds``, ``threshold``, the embedding
    ``provider`` and ``model``) may both be set; the exact cache is tried first. Whether the
    semantic cache's provider is configured is ``model_binding_providers_check``'s to say: this
    module's pure half reads only the binding."""
    if not isinstance(cache, Mapping):
        return [
            Problem(
                "wrong_type",
                'The cache must be an object, e.g. {"exact": {"ttl_seconds": 3600}}.',
                pointer,
            )
        ]
    problems = _fields_check(cache, CACHE_KINDS, pointer)
    if not cache:
        problems.append(Problem("empty_cache", "Name a cache: exact or semantic.", pointer))
    if "exact" in cache:
        at, exact = f"{pointer}/exact", cache["exact"]
        if not isinstance(exact, Mapping):
            problems.append(Problem("wrong_type", "The exact cache must be an object.", at))
        else:
            problems += _fields_check(exact, frozenset({"ttl_seconds"}), at)
            problems += _cache_ttl_problem(exact, at)
    if "semantic" in cache:
        at, semantic = f"{pointer}/semantic", cache["semantic"]
        if not isinstance(semantic, Mapping):
            problems.append(
                Problem(
                    "wrong_type",
                    'The semantic cache must be an object, e.g. {"ttl_seconds": 3600, '
                    '"threshold": 0.9, "provider": "openai", "model": "text-embedding-3-small"}.',
                    at,
                )
            )
        else:
            problems += _semantic_policy_problems(semantic, at)
    return problems


PROVIDERS_LISTED_MAX = 20


def _provider_unknown(name: str, configured: frozenset[str], pointer: str) -> Problem:
    if not configured:
        detail = (
            f"No provider named {name!r} is configured, nor any other yet; "
            "add one in the admin or with manage.py provider add."
        )
    else:
        names = sorted(configured)
        listed = ", ".join(names[:PROVIDERS_LISTED_MAX])
        if len(names) > PROVIDERS_LISTED_MAX:
            listed += f" and {len(names) - PROVIDERS_LISTED_MAX} more"
        detail = f"No provider named {name!r} is configured; the configured providers are {listed}."
    return Problem("unknown_provider", detail, f"{pointer}/provider")


def model_binding_providers_check(
    binding: ModelBinding, *, configured: frozenset[str], pointer: str = "/model"
) -> list[Problem]:
    """The binding's providers (primary and fallbacks) that are not among ``configured``.

    Kept apart from ``model_binding_check``: that one reads only the binding, this one depends on
    what is configured today, so a caller decides when it applies (a write, not an unchanged file).
    A malformed name is ``invalid_provider``'s to report, not this check's.
    """
    targets = [(binding.provider, pointer)] + [
        (f.provider, f"{pointer}/fallbacks/{i}") for i, f in enumerate(binding.fallbacks)
    ]
    semantic = binding.cache.get("semantic") if isinstance(binding.cache, Mapping) else None
    if isinstance(semantic, Mapping):  # the provider that embeds the semantic cache's questions
        targets.append((semantic.get("provider"), f"{pointer}/cache/semantic"))
    # The provider whose /moderations endpoint moderates the answers (decision 0052).
    targets += [
        (name, f"{pointer}/guardrails{at}") for name, at in moderation_providers(binding.guardrails)
    ]
    return [
        _provider_unknown(name, configured, at)
        for name, at in targets
        if isinstance(name, str) and PROVIDER_NAME.fullmatch(name) and name not in configured
    ]


def pointer_token(token: object) -> str:
    """One JSON Pointer reference token (RFC 6901): '~' and '/' escaped."""
    return str(token).replace("~", "~0").replace("/", "~1")


def nul_characters_check(data: Any, pointer: str = "") -> list[Problem]:
    """Every string (or key) holding U+0000, which PostgreSQL refuses to store."""
    if isinstance(data, str):
        if "\x00" in data:
            return [
                Problem(
                    "nul_character",
                    "Text cannot contain the NUL character (U+0000).",
                    pointer or "/",
                )
            ]
        return []
    problems: list[Problem] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            at = f"{pointer}/{pointer_token(key)}"
            problems += nul_characters_check(key, at) + nul_characters_check(value, at)
    elif isinstance(data, list | tuple):
        for i, value in enumerate(data):
            problems += nul_characters_check(value, f"{pointer}/{i}")
    return problems


def content_check(
    content: VersionContent,
    *,
    default_locale: str,
    max_section_chars: int = 50_000,
    providers: frozenset[str] | None = None,
    max_messages: int = MAX_HISTORY_MESSAGES,
    max_history_chars: int = MAX_HISTORY_CHARS,
) -> list[Problem]:
    """Every problem in a version's content, errors and warnings, in one list.

    1. The declared variables (names, types, defaults; a history's default within
       ``max_messages`` and ``max_history_chars``, its place a section).
    2. The model binding (provider and model names, known parameters, a valid response schema);
       with ``providers`` (``registry.providers.configured_providers()``), every provider it
       names is one of them. None skips that part: this module stays pure.
    3. The locales: valid BCP 47 tags, no tag twice after normalization, the default locale present.
    4. Each locale's templates: syntax, forbidden access, undeclared variables (errors) and
       declared-but-unused ones (warnings), section length.
    5. No NUL character anywhere: PostgreSQL cannot store one in text or JSON.
    """
    problems = variable_specs_check(
        content.variables, max_messages=max_messages, max_history_chars=max_history_chars
    )
    problems += nul_characters_check(content.canonical())
    problems += model_binding_check(content.model)
    if providers is not None:
        problems += model_binding_providers_check(content.model, configured=providers)
    declared = {v.name for v in content.variables}
    # Histories are inserted as messages, not through the text: no "unused" warning for them.
    inserted = {v.name for v in content.variables if v.type == VariableType.MESSAGES}
    seen: dict[str, str] = {}
    for locale in content.templates:
        pointer = f"/templates/{pointer_token(locale)}"
        try:
            normal = locale_normalize(locale)
        except LocaleInvalid as exc:
            problems.append(Problem("invalid_locale", exc.message, pointer))
            continue
        if normal in seen:
            problems.append(
                Problem(
                    "duplicate_locale",
                    f"{locale!r} and {seen[normal]!r} are the same locale.",
                    pointer,
                )
            )
            continue
        seen[normal] = locale
        sections = content.templates[locale]
        if not any(
            getattr(sections, name) for name in ("system", "context", "instruction", "format")
        ):
            problems.append(
                Problem("empty_template", f"The {locale} template has no text.", pointer)
            )
        problems += template_check(
            sections,
            locale=locale,
            declared=declared,
            max_section_chars=max_section_chars,
            inserted=inserted,
        )
    if default_locale not in seen:
        problems.append(
            Problem(
                "missing_default_locale",
                f"The prompt's default locale {default_locale} needs a template.",
                "/templates",
            )
        )
    return problems
