"""The resolve answer encoded from per-version fragments (api/resolve_path.py) is byte for byte the
answer ``resolution_answer`` describes, and its ETag the one clients already hold."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.core.exceptions import TooManyFieldsSent
from django.core.handlers.wsgi import WSGIRequest
from django.test import AsyncRequestFactory, RequestFactory, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from api.resolve_path import query_values, resolution_body, resolution_etag
from api.runtime import resolution_answer
from releases.resolution import ServedRelease, ServedVersion, resolve
from releases.state import Canary, Experiment, ReleaseState, Shadow, Variant
from tests.releases.served import served

STATES = {
    "stable": ReleaseState(stable=1),
    "canary": ReleaseState(stable=1, canary=Canary(version=2, weight=5000, salt="c-salt")),
    "canary at zero": ReleaseState(stable=1, canary=Canary(version=2, weight=0, salt="c")),
    "experiment": ReleaseState(
        stable=1,
        experiment=Experiment(
            name="tone",
            variants=(
                Variant(name="formel", version=2, weight=4000),
                Variant(name='dé"contracté\\\n', version=3, weight=4000),
            ),
            salt="e-salt",
        ),
    ),
    "shadow": ReleaseState(
        stable=1, shadow=Shadow(versions=(1, 2, 3), sample=10_000, salt="s-salt")
    ),
}


def _reference_body(answer: dict) -> bytes:
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()


def _reference_etag(answer: dict) -> str:
    """The ETag as the view computed it before the answer was encoded in fragments."""
    trace = answer["trace"]
    parts = (
        answer["environment"],
        answer["prompt"],
        answer["revision"],
        answer["version"],
        answer["variant"],
        answer["locale"],
        answer["requested_locale"],
        answer["sticky"],
        answer["shadow"],
        trace["bucket"],
        trace["salt"],
    )
    basis = "|".join(str(part) for part in parts)
    return '"' + hashlib.sha256(basis.encode()).hexdigest()[:32] + '"'


@pytest.mark.parametrize("state", STATES.values(), ids=STATES.keys())
@pytest.mark.parametrize("subject", [None, "user-1", "user-2", "ünïcode 🙂", "user-99"])
@pytest.mark.parametrize("locale", [None, "fr-CA", "en", "de"])
def test_the_body_and_etag_are_the_answers(state, subject, locale):
    release = served(state, "en", "fr")
    resolution = resolve(release, subject=subject, locale=locale)
    answer = resolution_answer(resolution)

    assert resolution_body(resolution) == _reference_body(answer)
    assert resolution_etag(resolution) == _reference_etag(answer)
    # Encoded once per version and locale, then served from the version's memo.
    assert resolution_body(resolution) == _reference_body(answer)


def test_content_with_every_json_kind_and_escape():
    version = ServedVersion(
        pk=4,
        number=4,
        content_hash="ab" * 32,
        variables=(
            {"name": "name", "type": "string", "required": True, "default": None},
            {"name": "n", "type": "number", "required": False, "default": 1.5},
        ),
        model={
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.2, "max_tokens": 10, "stop": ["\u2028", "</s>"]},
            "response_schema": {"type": "object", "properties": {}},
            "fallbacks": [],
        },
        templates={
            "fr": {
                "system": 'Tu es « courtois » — "toujours".\n\tÉté \u00e9\u0000\x1f',
                "context": "",
                "instruction": "{{ name }}",
                "format": "\\",
            }
        },
    )
    release = ServedRelease(
        prompt="support.refund-reply",
        environment="staging-eu",
        prompt_id=1,
        environment_id=1,
        default_locale="fr",
        revision=123456,
        state=ReleaseState(stable=4),
        versions={4: version},
    )
    resolution = resolve(release, subject="s", locale="fr-CA")
    answer = resolution_answer(resolution)

    assert resolution_body(resolution) == _reference_body(answer)
    assert resolution_etag(resolution) == _reference_etag(answer)


def test_the_memo_is_not_part_of_a_versions_identity():
    first = served(ReleaseState(stable=1)).versions[1]
    second = served(ReleaseState(stable=1)).versions[1]
    resolution_body(resolve(served(ReleaseState(stable=1)), subject="u", locale=None))
    first.memo["anything"] = "derived"

    assert first == second
    assert "memo" not in repr(first)


QUERIES = [
    "",
    "environment=production&subject=user-42&locale=fr-CA",
    "environment=staging&environment=production",  # the last one, as request.GET.get gives
    "environment=&locale=&subject",
    "subject=a+b%20c&locale=fr_ca",
    "subject=%C3%A9t%C3%A9%F0%9F%99%82",
    "subject=%ff%fe&environment=%00",  # not UTF-8, and a NUL
    "subject=caf\u00e9",  # raw non-ASCII in the query string
    "a=1;b=2&&=x&c",
]


@pytest.mark.parametrize("query", QUERIES)
def test_the_query_is_read_as_request_get_reads_it(query):
    environ = RequestFactory().get("/api/v1/prompts/p/resolve").environ
    environ["QUERY_STRING"] = query.encode("utf-8").decode("iso-8859-1")  # as a WSGI server does
    request = WSGIRequest(environ)

    values = query_values(request)

    assert values == {name: request.GET.get(name) for name in request.GET}


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab=&;%+2F\u00e9 ", max_size=24),
    st.sampled_from([None, 0, 1, 2, 3, 1000]),
)
def test_any_query_is_read_as_request_get_reads_it(query, limit):
    """With nothing to unquote the query is split directly: the same answer, or the same
    refusal past DATA_UPLOAD_MAX_NUMBER_FIELDS, as with."""
    environ = RequestFactory().get("/api/v1/prompts/p/resolve").environ
    environ["QUERY_STRING"] = query.encode("utf-8").decode("iso-8859-1")
    with override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=limit):
        request = WSGIRequest(environ)
        try:
            expected = {name: request.GET.get(name) for name in request.GET}
        except TooManyFieldsSent:
            with pytest.raises(TooManyFieldsSent):
                query_values(request)
        else:
            assert query_values(request) == expected


@pytest.mark.parametrize(
    "query", [*QUERIES[1:], "subject=\u65e5\u672c&locale=fr", "subject=%E6%97%A5+x"]
)
def test_under_asgi_the_query_is_read_as_request_get_reads_it(query):
    """The ASGI server hands the query over decoded: a character past latin-1 is no 500."""
    request = AsyncRequestFactory().get(f"/api/v1/prompts/p/resolve?{query}")

    assert query_values(request) == {name: request.GET.get(name) for name in request.GET}


@override_settings(DATA_UPLOAD_MAX_NUMBER_FIELDS=3)
def test_too_many_fields_are_refused_as_request_get_refuses_them():
    request = RequestFactory().get("/x", {"a": 1, "b": 2, "c": 3, "d": 4})

    with pytest.raises(TooManyFieldsSent):
        request.GET  # noqa: B018
    with pytest.raises(TooManyFieldsSent):
        query_values(request)
    assert query_values(RequestFactory().get("/x", {"a": 1, "b": 2})) == {"a": "1", "b": "2"}
