"""What a resolve costs per request, made small: its query read once, its answer encoded from
per-version fragments, its ETag.

Resolve is the hottest path of the service (bench/resolve.py holds it near a bare Django view;
bench/profile_resolve.py shows where its time goes).

- ``query_values``: the query string as ``request.GET`` reads it (same decoding, same limit on
  the number of fields, the last of repeated names), without building a ``QueryDict``, which
  costs several times the parse itself.
- ``resolution_body``: most of the answer is the version's content (sections, variables,
  model), which is immutable; it is encoded once per version and locale, kept on the version
  (``ServedVersion.memo``, so it lives as long as the cached release does), and spliced with the
  few fields a request decides (variant, locale, bucket...). The bytes are exactly
  ``json.dumps(resolution_answer(resolution), ensure_ascii=False, separators=(",", ":"))``,
  field order included: tests/api/test_resolve_path.py compares the two over every kind of
  decision.
- ``resolution_etag``: the ETag the view always sent, from the resolution without the answer.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring  # what json.dumps uses with ensure_ascii=False
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.core.handlers.wsgi import WSGIRequest, get_bytes_from_wsgi
from django.http import HttpRequest

from releases.bucketing import HASH_VERSION
from releases.resolution import Resolution, ServedVersion

_TRAILER = f',"hash_version":{HASH_VERSION}}}}}'
# (snippet key, pinned version or None, the version served or None): api.runtime's
SnippetVersions = tuple[tuple[str, int | None, int | None], ...]


TOO_MANY_FIELDS = (
    "The number of GET/POST parameters exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS."
)


def query_values(request: HttpRequest) -> dict[str, str]:
    """``request.GET`` as a plain dict (the last value of a repeated name, as ``.get`` gives).
    Raises ``TooManyFieldsSent`` (a 400) past ``DATA_UPLOAD_MAX_NUMBER_FIELDS``, as it does."""
    encoding = request.encoding or settings.DEFAULT_CHARSET
    if isinstance(request, WSGIRequest):  # the WSGI server's text is the bytes, as latin-1
        raw = get_bytes_from_wsgi(request.META, "QUERY_STRING", "")
        try:
            query = raw.decode(encoding)
        except UnicodeDecodeError:
            query = raw.decode("iso-8859-1")  # as QueryDict does for misbehaving user agents
    else:  # ASGI: the text already decoded (as UTF-8), which QueryDict reads as it is
        query = request.META.get("QUERY_STRING", "")
    if not query:
        return {}  # as parse_qsl answers it, whatever the limit
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    if "%" in query or "+" in query:
        try:
            return dict(
                parse_qsl(query, keep_blank_values=True, encoding=encoding, max_num_fields=limit)
            )
        except ValueError as exc:
            raise TooManyFieldsSent(TOO_MANY_FIELDS) from exc
    # Nothing to unquote (the usual resolve query): parse_qsl's own steps without its unquoting,
    # which was most of the parse.
    if limit is not None and query.count("&") + 1 > limit:
        raise TooManyFieldsSent(TOO_MANY_FIELDS)
    values = {}
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            values[name] = value
    return values


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _content(version: ServedVersion, locale: str) -> str:
    """``"sections":…,"variables":…,"model":…`` for ``locale``, encoded on first use."""
    key = ("resolve-content", locale)
    encoded = version.memo.get(key)
    if encoded is None:
        encoded = version.memo[key] = (
            f'"sections":{_dumps(version.templates[locale])},'
            f'"variables":{_dumps(list(version.variables))},'
            f'"model":{_dumps(version.model)}'
        )
    return encoded


def snippets_answer(snippets: SnippetVersions) -> list[dict[str, int | str | None]]:
    """The resolve answer's ``snippets``: which version each include serves (null: none)."""
    return [{"key": k, "pinned": p, "version": n} for k, p, n in snippets]


def _snippets(snippets: SnippetVersions) -> str:
    return _dumps(snippets_answer(snippets)) if snippets else "[]"


def resolution_body(resolution: Resolution, snippets: SnippetVersions = ()) -> bytes:
    """The JSON answer of ``GET …/resolve`` (the shape of ``api.runtime.resolution_answer``);
    ``snippets``: ``api.runtime.served_snippet_versions``."""
    release, version, assignment = resolution.release, resolution.version, resolution.assignment
    bucket = assignment.bucket
    return (
        f'{{"prompt":{encode_basestring(release.prompt)}'
        f',"environment":{encode_basestring(release.environment)}'
        f',"version":{int(version.number)}'
        f',"variant":{encode_basestring(assignment.label)}'
        f',"reason":{encode_basestring(str(assignment.reason))}'
        f',"sticky":{"true" if assignment.sticky else "false"}'
        f',"locale":{encode_basestring(resolution.locale)}'
        f',"requested_locale":{encode_basestring(resolution.requested_locale)}'
        f",{_content(version, resolution.locale)}"
        f',"revision":{int(release.revision)}'
        f',"content_hash":{encode_basestring(version.content_hash)}'
        f',"shadow":[{",".join(str(int(n)) for n in resolution.shadow)}]'
        f',"snippets":{_snippets(snippets)}'
        f',"trace":{{"bucket":{"null" if bucket is None else int(bucket)}'
        f',"salt":{encode_basestring(resolution.salt)}'
        f"{_TRAILER}"
    ).encode()


def resolution_etag(resolution: Resolution, snippets: SnippetVersions = ()) -> str:
    """Everything that can differ between two answers for the same URL. Versions are immutable,
    so the number stands for its content; the trace differs only with the subject drawn, which
    for a request without one (not sticky) is new each time. The snippet versions served move
    with the snippets' own releases, not this one's revision: they are part of it."""
    release, version, assignment = resolution.release, resolution.version, resolution.assignment
    basis = (
        f"{release.environment}|{release.prompt}|{release.revision}|{version.number}|"
        f"{assignment.label}|{resolution.locale}|{resolution.requested_locale}|"
        f"{assignment.sticky}|{list(resolution.shadow)}|{assignment.bucket}|{resolution.salt}"
    )
    if snippets:
        basis += "|" + ",".join(f"{k}@{p}={n}" for k, p, n in snippets)
    return '"' + hashlib.sha256(basis.encode()).hexdigest()[:32] + '"'
