"""The server is as strict as the schema: a value of another JSON type than the schema says is a
400 ``validation-error`` pointing at it, never coerced (``api.serializers``' strict fields); and
the schema's patterns say what the registry's own rules refuse."""

from __future__ import annotations

import re

import pytest

from api.serializers import (
    DATASET_PATTERN,
    ENVIRONMENT_PATTERN,
    KEY_PATTERN,
    LOCALE_PATTERN,
    PERCENT_PATTERN,
    PROVIDER_PATTERN,
    TAG_PATTERN,
)
from evaluations.models import DATASET_NAME_PATTERN
from registry.errors import LocaleInvalid
from registry.locales import locale_normalize
from registry.models import PROMPT_KEY_PATTERN
from registry.services import TAG_PATTERN as REGISTRY_TAG
from releases.models import ENVIRONMENT_NAME_PATTERN, Release
from runs.models import PROVIDER_NAME_PATTERN
from tests.api.helpers import assert_problem, registry_state

PROMPTS = "/api/v1/prompts"
KEY = "support.refund-reply"


def pointers(body) -> list[str]:
    return sorted(e["pointer"] for e in body["errors"])


def test_numbers_are_not_turned_into_text(author_client):
    # Found by the API fuzzing: this created the prompt "424242" described as "1.5".
    before = registry_state()

    response = author_client.post(
        PROMPTS, {"key": 424242, "description": 1.5, "tags": [7]}, format="json"
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert pointers(body) == ["/description", "/key", "/tags/0"]
    assert registry_state() == before


@pytest.mark.parametrize("commit", ["true", 1, "yes"])
def test_a_boolean_must_be_true_or_false(author_client, prompt, commit):
    before = registry_state()

    response = author_client.post(
        f"{PROMPTS}/{prompt.key}/versions",
        {
            "model": {"provider": "local", "model": "m"},
            "templates": {"en": {"instruction": "Hi"}},
            "commit": commit,
        },
        format="json",
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert pointers(body) == ["/commit"]
    assert registry_state() == before


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"version": "3"}, "/version"),
        ({"version": True}, "/version"),
        ({"version": 3.5}, "/version"),
        ({"version": 3, "override_gates": "false"}, "/override_gates"),
        ({"version": 3, "reason": 12}, "/reason"),
    ],
)
def test_a_release_change_refuses_other_types(releaser_client, released, body, pointer):
    release = Release.objects.get(prompt=released.prompt, environment__name="staging")

    response = releaser_client.post(f"/api/v1/releases/staging/{KEY}/deploy", body, format="json")

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert pointers(problem) == [pointer]
    release.refresh_from_db()
    assert (release.revision, release.stable_version.number) == (2, 2)


@pytest.mark.parametrize(
    "percent", [" 5", "1e1", "+5", "5.555", 5.555, "", True, 101, -1, 1.7e308, -1e306]
)
def test_a_percent_is_a_plain_number_from_0_to_100(releaser_client, released, percent):
    response = releaser_client.post(
        f"/api/v1/releases/staging/{KEY}/canary", {"version": 3, "percent": percent}, format="json"
    )

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert pointers(problem) == ["/percent"]
    release = Release.objects.get(prompt=released.prompt, environment__name="staging")
    assert release.canary_version is None


@pytest.mark.parametrize("percent", [5, "5", 12.5, "12.50", 0.57, 0.1 + 0.47, 100])
def test_a_percent_may_be_a_number_or_a_string(releaser_client, released, percent):
    response = releaser_client.post(
        f"/api/v1/releases/staging/{KEY}/canary", {"version": 3, "percent": percent}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["canary"]["percent"] == round(float(percent), 2)


@pytest.mark.parametrize("if_match", ["", "yesterday", "1 2", "W/", "-1"])
def test_if_match_is_a_revision_or_star(releaser_client, released, if_match):
    response = releaser_client.post(
        f"/api/v1/releases/staging/{KEY}/deploy",
        {"version": 3},
        format="json",
        HTTP_IF_MATCH=if_match,
    )

    problem = assert_problem(response, 400, "/problems/validation-error")
    assert pointers(problem) == ["/If-Match"]


@pytest.mark.parametrize("if_match", ["*", "2", '"2"', 'W/"2"'])
def test_if_match_takes_the_revision_as_an_etag(releaser_client, released, if_match):
    response = releaser_client.post(
        f"/api/v1/releases/staging/{KEY}/deploy",
        {"version": 3},
        format="json",
        HTTP_IF_MATCH=if_match,
    )

    assert response.status_code == 200, response.content


# Each pattern the schema publishes, held against the rule the server checks.
SAMPLES = [
    "a",
    "support.refund-reply",
    "a..b",
    "a.",
    ".a",
    "a_b-c",
    "A",
    "a b",
    "a:b",
    "9x",
    "x" * 51,
    "fr-CA",
    "zh_Hant_TW",
    "de-1996",
    "en-",
    "english-us",
    "a.b:c",
    "",
    "a\n",
]


@pytest.mark.parametrize(
    ("schema_pattern", "server_rule"),
    [
        (KEY_PATTERN, PROMPT_KEY_PATTERN),
        (ENVIRONMENT_PATTERN, ENVIRONMENT_NAME_PATTERN),
        (DATASET_PATTERN, DATASET_NAME_PATTERN),
        (TAG_PATTERN, REGISTRY_TAG.pattern),
        (PROVIDER_PATTERN, PROVIDER_NAME_PATTERN),
    ],
)
def test_the_schema_patterns_are_the_servers_rules(schema_pattern, server_rule):
    # ECMA-262's $ is the end of the text (Python's \Z); lengths are the schema's maxLength.
    as_python = schema_pattern.removesuffix("$") + r"\Z"
    for sample in SAMPLES:
        if len(sample) > 50:
            continue
        assert bool(re.match(as_python, sample)) == bool(re.fullmatch(server_rule, sample)), sample


def test_the_locale_pattern_is_the_locale_rule():
    as_python = LOCALE_PATTERN.removesuffix("$") + r"\Z"
    for sample in SAMPLES:
        try:
            locale_normalize(sample)
            valid = True
        except LocaleInvalid:
            valid = False
        assert bool(re.match(as_python, sample)) == valid, sample


def test_the_percent_pattern_is_0_to_100_with_two_decimals():
    as_python = PERCENT_PATTERN.removesuffix("$") + r"\Z"
    accepted = ["0", "5", "05", "12.5", "12.50", "99.99", "100", "100.0", "100.00"]
    refused = ["", "-1", "100.01", "101", "1.234", " 5", "1e1", "+5", ".5", "5."]
    assert all(re.match(as_python, s) for s in accepted)
    assert not any(re.match(as_python, s) for s in refused)
