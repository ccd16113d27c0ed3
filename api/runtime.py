"""The runtime path: resolve, render and bundle, as plain Django views over the release cache.

Services call these thousands of times a second, so they skip DRF and Django's default middleware
(``api.middleware.RuntimeMiddleware`` sits first and answers them itself): a bearer key checked
against the in-memory keyring, a lookup in the in-process release cache, the pure resolution,
``json.dumps``. On a warm cache none of it touches the database. The same views are in the
URLconf, so they also work behind any middleware, and ``api.runtime_schema`` describes them in the
OpenAPI schema. ``api.run`` and ``api.stream`` are the runtime path's other views; all of them
are written with ``api.fastpath``'s helpers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse

from registry.rendering import to_messages
from registry.tools import chat_request
from releases.bucketing import HASH_VERSION
from releases.cache import served_snippets
from releases.resolution import Resolution, ServedRelease, resolve, version_render
from releases.snippets import snippet_versions
from runs.provider_cache import provider_cache

from .fastpath import (
    allow_environment,
    authenticate,
    cached_environment,
    cached_release,
    json_bytes_response,
    json_response,
    not_modified,
    read_body,
    runtime_view,
    subject_of,
)
from .resolve_path import (
    SnippetVersions,
    query_values,
    resolution_body,
    resolution_etag,
    snippets_answer,
)


@runtime_view("GET", "HEAD")
def resolve_view(request: HttpRequest, key: str) -> HttpResponse:
    """``GET /api/v1/prompts/{key}/resolve?environment=&locale=&subject=``"""
    query = query_values(request)  # request.GET, without building a QueryDict
    environment = query.get("environment", "")
    allow_environment(authenticate(request), environment)
    release, degraded = cached_release(environment, key)
    resolution = resolve(
        release,
        subject=subject_of(query.get("subject")),
        locale=query.get("locale") or None,
    )
    # The answer is ``resolution_answer``'s, encoded without building it (api/resolve_path.py).
    snippets = served_snippet_versions(resolution)
    etag = resolution_etag(resolution, snippets)
    return not_modified(request, etag) or json_bytes_response(
        resolution_body(resolution, snippets), etag=etag, degraded=degraded
    )


@runtime_view("POST")
def render_view(request: HttpRequest, key: str) -> HttpResponse:
    """``POST /api/v1/prompts/{key}/render`` ``{environment, locale, subject, variables}``"""
    entry = authenticate(request)
    data = read_body(request)
    environment = data.get("environment") or ""
    allow_environment(entry, environment)
    release, degraded = cached_release(environment, key)
    resolution = resolve(
        release, subject=subject_of(data.get("subject")), locale=data.get("locale") or None
    )
    rendered = version_render(
        resolution.version,
        locale=resolution.locale,
        variables=data.get("variables") or {},
        snippets=served_snippets(release),
    )
    answer = resolution_answer(resolution)
    answer["rendered"] = rendered.as_dict()
    answer["messages"] = to_messages(rendered)
    answer["request"] = model_request(resolution.version.model, answer["messages"])
    return json_response(answer, degraded=degraded)


def model_request(model: Mapping[str, Any], messages: list[dict[str, str]]) -> dict[str, Any]:
    """What the caller passes to ``chat.completions.create(**…)`` for a binding (its dict form):
    the model, the messages, its parameters and tools, and its response schema as a
    ``response_format``, strict when its provider accepts it (``Provider.strict_output``; a
    provider not configured here counts as accepting it, as the SDK counts one missing from its
    bundle). The providers' flags are read only for a binding with a response schema."""
    strict = True
    if model.get("response_schema"):
        strict = provider_cache.strict_outputs().get(model.get("provider") or "", True)
    return chat_request(model, messages, strict_output=strict)


@runtime_view("GET", "HEAD")
def bundle_view(request: HttpRequest, environment: str) -> HttpResponse:
    """``GET /api/v1/environments/{environment}/bundle``: every release there, for SDKs."""
    allow_environment(authenticate(request), environment)
    releases, degraded = cached_environment(environment)
    strict_outputs = provider_cache.strict_outputs()
    etag = bundle_etag(environment, releases, strict_outputs)
    return not_modified(request, etag) or json_response(
        bundle_body(environment, releases, strict_outputs), etag=etag, degraded=degraded
    )


def served_snippet_versions(resolution: Resolution) -> SnippetVersions:
    """``(key, pinned, version served)`` of every snippet the resolved version includes, as its
    environment serves them now (none: nothing is looked up)."""
    if not resolution.version.snippets:
        return ()
    return snippet_versions(
        resolution.version.snippets, library=served_snippets(resolution.release)
    )


def resolution_answer(
    resolution: Resolution, snippets: SnippetVersions | None = None
) -> dict[str, Any]:
    """The resolve answer; ``snippets`` as ``served_snippet_versions`` gives them (None: read
    them now)."""
    release, version, assignment = resolution.release, resolution.version, resolution.assignment
    if snippets is None:
        snippets = served_snippet_versions(resolution)
    return {
        "prompt": release.prompt,
        "environment": release.environment,
        "version": version.number,
        "variant": assignment.label,
        "reason": str(assignment.reason),
        "sticky": assignment.sticky,
        "locale": resolution.locale,
        "requested_locale": resolution.requested_locale,
        "sections": version.templates[resolution.locale],
        "variables": list(version.variables),
        "model": version.model,
        "revision": release.revision,
        "content_hash": version.content_hash,
        "shadow": list(resolution.shadow),
        "snippets": snippets_answer(snippets),
        "trace": {
            "bucket": assignment.bucket,
            "salt": resolution.salt,
            "hash_version": HASH_VERSION,
        },
    }


def bundle_etag(
    environment: str,
    releases: dict[str, ServedRelease],
    strict_outputs: Mapping[str, bool] | None = None,
) -> str:
    return revisions_etag(environment, {k: r.revision for k, r in releases.items()}, strict_outputs)


def revisions_etag(
    environment: str, revisions: Mapping[str, int], strict_outputs: Mapping[str, bool] | None = None
) -> str:
    """The bundle's ETag from its releases' revisions and the providers' ``strict_output`` flags
    (which its ``providers`` map carries; the stream's ``hello`` sends the same ETag)."""
    basis = ",".join(f"{k}:{revisions[k]}" for k in sorted(revisions))
    if strict_outputs:
        # Only the providers that do not accept strict output: a new provider, on by default,
        # changes nothing, and ETags stay what they were until a flag is turned off.
        off = ",".join(sorted(name for name, strict in strict_outputs.items() if not strict))
        basis += f"|non-strict:{off}" if off else ""
    return '"' + hashlib.sha256(f"{environment}|{basis}".encode()).hexdigest()[:32] + '"'


def bundle_snippets(releases: Mapping[str, ServedRelease]) -> dict[str, dict[str, Any]]:
    """The pinned snippet versions the bundle's versions include, every level: snippet key ->
    version number -> its templates. (An include that follows serves the stable version of the
    snippet's release, which the bundle carries like any other release.)"""
    pinned: dict[str, dict[str, Any]] = {}
    for release in releases.values():
        for (key, number), text in release.pinned.items():
            pinned.setdefault(key, {})[str(number)] = {
                "number": text.number,
                "templates": text.templates,
            }
    return {key: dict(sorted(pinned[key].items())) for key in sorted(pinned)}


def _bundle_providers(
    releases: dict[str, ServedRelease], strict_outputs: Mapping[str, bool]
) -> dict[str, dict[str, bool]]:
    """What an SDK needs of the providers the bundle's bindings name, to render as the server
    does: whether each accepts strict structured output (absent: it does)."""
    names = {
        target.get("provider")
        for r in releases.values()
        for v in r.versions.values()
        for target in (v.model, *(v.model.get("fallbacks") or ()))
    }
    return {
        name: {"strict_output": strict_outputs[name]}
        for name in sorted(n for n in names if isinstance(n, str) and n in strict_outputs)
    }


def bundle_body(
    environment: str,
    releases: dict[str, ServedRelease],
    strict_outputs: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    return {
        "environment": environment,
        "hash_version": HASH_VERSION,
        "providers": _bundle_providers(releases, strict_outputs or {}),
        "snippets": bundle_snippets(releases),
        "releases": {
            key: {
                "prompt": r.prompt,
                "default_locale": r.default_locale,
                "revision": r.revision,
                "state": r.state.as_dict(),
                "versions": {
                    str(n): {
                        "number": v.number,
                        "content_hash": v.content_hash,
                        "variables": list(v.variables),
                        "model": v.model,
                        "templates": v.templates,
                    }
                    for n, v in sorted(r.versions.items())
                },
            }
            for key, r in sorted(releases.items())
        },
    }
