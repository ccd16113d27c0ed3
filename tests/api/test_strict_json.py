"""One strict JSON parser for every body (issue 12, finding 5).

``NaN``, infinities, numbers that overflow, ``\\u0000`` and unpaired surrogates, inside list and
object variables (and as keys), and nesting past ``JSON_MAX_DEPTH``: each refused with a 400
problem pointing at the value, through the runtime views (render, run) and the DRF views (events,
versions), with nothing recorded and no model called.
"""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from registry.models import PromptVersion
from registry.strictjson import JSONRefused, storable, strict_json_loads
from runs.models import Call
from tests.api.helpers import assert_problem
from tests.factories import PromptFactory, event, make_version

KEY = "support.bags"
RENDER = f"/api/v1/prompts/{KEY}/render"
RUN = f"/api/v1/prompts/{KEY}/run"
CHAT = "/v1/chat/completions"

MALFORMED = "/problems/malformed-request"
VALIDATION = "/problems/validation-error"

# (JSON text of the value, problem type, error code)
BAD_VALUES = {
    "nan": ("NaN", MALFORMED, "not_a_json_number"),
    "infinity": ("Infinity", MALFORMED, "not_a_json_number"),
    "-infinity": ("-Infinity", MALFORMED, "not_a_json_number"),
    "overflow": ("-1e400", MALFORMED, "number_too_large"),
    "nul": ('"a\\u0000b"', VALIDATION, "null_characters_not_allowed"),
    "surrogate": ('"a\\ud800b"', VALIDATION, "lone_surrogates_not_allowed"),
    "low-surrogate": ('"\\udfff"', VALIDATION, "lone_surrogates_not_allowed"),
}
# Where the value sits in the variables, and the pointer (under the variables) that names it.
PLACES = {
    "in-a-list": ('{"tags": ["ok", VALUE]}', "/tags/1"),
    "in-an-object": ('{"order": {"lines": [{"sku": VALUE}]}}', "/order/lines/0/sku"),
}
# A bad key cannot go into a pointer: the error points at its object.
BAD_KEYS = {
    "nul": ('"k\\u0000"', "null_characters_not_allowed"),
    "surrogate": ('"\\ud800"', "lone_surrogates_not_allowed"),
}
CASES = [
    pytest.param(value, type_, code, place, pointer, id=f"{name}-{where}")
    for name, (value, type_, code) in BAD_VALUES.items()
    for where, (place, pointer) in PLACES.items()
] + [
    pytest.param(
        "1",
        VALIDATION,
        code,
        '{"order": {KEY: VALUE}}'.replace("KEY", key),
        "/order",
        id=f"{name}-key",
    )
    for name, (key, code) in BAD_KEYS.items()
]


@pytest.fixture
def bags(environments, manager, model_server):
    """A prompt with a list and an object variable, stable in staging, run by the fake model."""
    from releases.services import release_deploy

    prompt = PromptFactory(key=KEY)
    make_version(
        prompt,
        variables=[
            {"name": "tags", "type": "list", "required": False},
            {"name": "order", "type": "object", "required": False},
        ],
        templates={"en": {"instruction": "Tags {{ tags }}, order {{ order }}."}},
    )
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )
    return prompt


def _body(variables: str) -> str:
    return '{"environment": "staging", "subject": "s", "variables": ' + variables + "}"


def _assert_refused(response, type_: str, code: str, pointer: str, model_server) -> None:
    problem = assert_problem(response, 400, type_)
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [(code, pointer)]
    assert model_server.requests.for_path(CHAT) == []
    assert not Call.objects.exists()


@pytest.mark.parametrize("path", [RENDER, RUN], ids=["render", "run"])
@pytest.mark.parametrize(("value", "type_", "code", "place", "pointer"), CASES)
def test_the_runtime_views_refuse_what_json_or_postgresql_cannot_hold(
    make_client, bags, model_server, path, value, type_, code, place, pointer
):
    client = make_client("prompts:read", "runs:execute")

    response = client.post(
        path, _body(place.replace("VALUE", value)), content_type="application/json"
    )

    _assert_refused(response, type_, code, "/variables" + pointer, model_server)


def test_a_good_body_still_renders_and_runs(make_client, bags, model_server):
    """The control: the same shapes with ordinary values pass (a surrogate pair included)."""
    client = make_client("prompts:read", "runs:execute")
    variables = '{"tags": ["ok", "\\ud83d\\ude00", 1e300], "order": {"lines": [{"sku": 7}]}}'

    rendered = client.post(RENDER, _body(variables), content_type="application/json")
    ran = client.post(RUN, _body(variables), content_type="application/json")

    assert rendered.status_code == 200, rendered.content
    assert "\U0001f600" in rendered.json()["rendered"]["instruction"]
    assert ran.status_code == 200, ran.content
    assert Call.objects.count() == 1


@pytest.mark.parametrize("path", [RENDER, RUN], ids=["render", "run"])
@override_settings(JSON_MAX_DEPTH=8)
def test_the_runtime_views_refuse_nesting_past_the_bound(make_client, bags, model_server, path):
    client = make_client("prompts:read", "runs:execute")
    deep = "[" * 8 + "]" * 8  # with "variables" and "tags" around it: 10 levels

    response = client.post(path, _body('{"tags": ' + deep + "}"), content_type="application/json")

    problem = assert_problem(response, 400, MALFORMED)
    assert [e["code"] for e in problem["errors"]] == ["nesting_too_deep"]
    assert problem["errors"][0]["pointer"] == "/variables/tags/0/0/0/0/0/0"
    assert model_server.requests.for_path(CHAT) == []


@pytest.mark.parametrize(("value", "type_", "code", "place", "pointer"), CASES)
def test_events_refuse_them_and_store_nothing(
    make_client, released, value, type_, code, place, pointer
):
    client = make_client("events:write")
    outcome = json.dumps(event())[:-1] + ', "inputs": ' + place.replace("VALUE", value) + "}"

    response = client.post(
        "/api/v1/events", '{"events": [' + outcome + "]}", content_type="application/json"
    )

    problem = assert_problem(response, 400, type_)
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        (code, "/events/0/inputs" + pointer)
    ]
    assert not Call.objects.exists()


@pytest.mark.parametrize(("value", "type_", "code", "place", "pointer"), CASES)
def test_versions_refuse_them_and_create_nothing(
    author_client, prompt, value, type_, code, place, pointer
):
    body = json.dumps({"message": "Bad.", **_content()})
    body = body.replace('"PARAMETERS"', place.replace("VALUE", value))

    response = author_client.post(
        f"/api/v1/prompts/{prompt.key}/versions", body, content_type="application/json"
    )

    problem = assert_problem(response, 400, type_)
    assert [(e["code"], e["pointer"]) for e in problem["errors"]] == [
        (code, "/model/parameters" + pointer)
    ]
    assert not PromptVersion.objects.exists()


def _content() -> dict:
    from tests.factories import content_data

    data = content_data()
    data["model"]["parameters"] = "PARAMETERS"
    return data


def test_the_parser_walks_no_tree_it_does_not_need_and_reports_several_values():
    assert strict_json_loads('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    with pytest.raises(JSONRefused) as refused:
        strict_json_loads('{"a": [NaN, "\\u0000"], "b": Infinity}')
    assert not refused.value.malformed  # a NUL is JSON; the body is refused as invalid
    assert sorted(e.pointer for e in refused.value.errors) == ["/a/0", "/a/1", "/b"]


@pytest.mark.parametrize("raw", [b'{"a": "caf\xe9"}', b"[" * 100_000, b'{"a": 1', b"9" * 5000])
def test_the_parser_refuses_what_is_not_json_as_malformed(raw):
    with pytest.raises(JSONRefused) as refused:
        strict_json_loads(raw)
    assert refused.value.malformed


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("a\x00b", "a\ufffdb"),
        ("a\ud800b", "a\ufffdb"),
        ("\udfff\x00", "\ufffd\ufffd"),
        ("ok", "ok"),
    ],
)
def test_text_is_made_storable_character_for_character(text, kept):
    """What a model answers is stored, not refused: PostgreSQL cannot keep a NUL or a lone
    surrogate, so each becomes U+FFFD and the record is kept."""
    assert storable(text) == kept
