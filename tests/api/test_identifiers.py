"""Identifiers match whole: "abc\n" is not "abc".

With ``re.match`` (or Django's ``RegexValidator``, which searches) a pattern ending in ``$`` also
matches before a final newline, so a key, tag, provider, environment, dataset or case key ending
in "\n" passed every check and was stored as a second name that looks like the first. Each check
now matches the whole string (``re.fullmatch``, or ``\\Z`` in the model validators). This file
holds one case per door: the API, the services (which the YAML import and the commands call), the
model validators (the admin's forms), the SDK; the YAML import's own cases are in
tests/registry/test_sync.py.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from promptregistry.store import BundleStore

from api.services import ApiKeyInvalid, apikey_create
from evaluations.models import Case, Dataset
from registry.content import VersionContent, content_check
from registry.models import Prompt
from registry.services import prompt_fields_check
from releases.errors import ReleaseInvalid
from releases.models import Environment
from releases.services import release_experiment_start
from runs.models import Provider
from runs.services import ProviderInvalid, provider_save
from tests.api.helpers import assert_problem, error_codes
from tests.factories import content_data

pytestmark = pytest.mark.django_db

NEWLINE = "\n"


# --- the API ------------------------------------------------------------------------------------


def test_the_api_refuses_a_key_ending_in_a_newline_instead_of_trimming_it(author_client):
    response = author_client.post(
        "/api/v1/prompts", json.dumps({"key": "support.new\n"}), content_type="application/json"
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert "invalid_key" in error_codes(body)
    assert not Prompt.objects.exists()


def test_the_api_refuses_a_tag_ending_in_a_newline(author_client, prompt):
    response = author_client.patch(
        f"/api/v1/prompts/{prompt.key}",
        json.dumps({"tags": ["billing\n"]}),
        content_type="application/json",
    )

    body = assert_problem(response, 400, "/problems/validation-error")
    assert "invalid_tag" in error_codes(body)
    prompt.refresh_from_db()
    assert "billing\n" not in prompt.tags


@pytest.mark.parametrize(
    ("pointer", "value"),
    [("/model/provider", "local\n"), ("/model/model", "echo-1\n"), ("/variables/0/name", "x\n")],
)
def test_a_version_with_an_identifier_ending_in_a_newline_is_refused(
    author_client, prompt, pointer, value
):
    data = content_data()
    _, part, *rest = pointer.split("/")
    target = data[part]
    for token in rest[:-1]:
        target = target[int(token)]
    target[rest[-1]] = value

    response = author_client.post(
        f"/api/v1/prompts/{prompt.key}/versions", json.dumps(data), content_type="application/json"
    )

    body = assert_problem(response, 400, "/problems/invalid-content")
    assert pointer in [e["pointer"] for e in body["errors"]]
    assert not prompt.versions.exists()


def test_a_runtime_path_whose_key_ends_in_a_newline_is_not_found(author_client, prompt):
    assert author_client.get(f"/api/v1/prompts/{prompt.key}%0A").status_code == 404


# --- the services (the YAML import and the commands call them) ---------------------------------


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"key": "support.new\n"}, "invalid_key"),
        ({"tags": ["billing\n"]}, "invalid_tag"),
    ],
)
def test_prompt_fields_ending_in_a_newline_are_refused(fields, code):
    checked = {"key": None, "description": None, "default_locale": None, "tags": None} | fields

    assert [p.code for p in prompt_fields_check(**checked)] == [code]


def test_a_binding_whose_provider_ends_in_a_newline_is_refused_before_it_is_looked_up():
    data = content_data()
    data["model"]["provider"] = "local\n"

    problems = content_check(VersionContent.from_dict(data), default_locale="en")

    assert "invalid_provider" in [p.code for p in problems]


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"name": "local\n"}, "/name"),
        ({"name": "local", "api_key_env": "OPENAI_API_KEY\n"}, "/api_key_env"),
    ],
)
def test_a_provider_named_with_a_newline_is_refused(fields, pointer):
    with pytest.raises(ProviderInvalid) as exc:
        provider_save(**({"base_url": "http://127.0.0.1:9/v1"} | fields))

    assert pointer in [p.pointer for p in exc.value.problems]
    assert not Provider.objects.filter(name__startswith="local\n").exists()


def test_an_experiment_variant_ending_in_a_newline_is_refused(released, manager):
    variants = [("control\n", 1, Decimal(50)), ("control", 2, Decimal(50))]

    with pytest.raises(ReleaseInvalid) as exc:
        release_experiment_start(
            prompt=released.prompt,
            environment=released.environments["staging"],
            name="tone",
            variants=variants,
            actor=manager,
        )

    assert [p.pointer for p in exc.value.problems] == ["/variants/0/name"]


@pytest.mark.parametrize("name", ["ci-bot\n", "ci\nbot", "ci-bot#12"])
def test_an_api_key_name_cannot_forge_an_audit_label(name):
    with pytest.raises(ApiKeyInvalid) as exc:
        apikey_create(name=name, scopes=["prompts:read"])

    assert [p.code for p in exc.value.problems] == ["invalid_name"]


# --- the model validators (what the admin's forms check) ---------------------------------------


@pytest.mark.parametrize(
    "instance",
    [
        lambda prompt: Prompt(key="support.new\n"),
        lambda prompt: Environment(name="canary\n", position=99),
        lambda prompt: Dataset(prompt=prompt, name="golden\n"),
        lambda prompt: Case(dataset=Dataset(prompt=prompt, name="golden"), key="ada\n"),
    ],
    ids=["prompt key", "environment", "dataset", "case key"],
)
def test_model_validators_refuse_a_trailing_newline(prompt, instance):
    obj = instance(prompt)
    with pytest.raises(ValidationError) as exc:
        obj.full_clean(exclude=["dataset", "prompt", "expectation"])
    assert set(exc.value.message_dict) & {"key", "name"}


def test_the_admin_never_stores_a_key_with_a_newline(client: Client, author):
    client.force_login(author)

    response = client.post(
        reverse("admin:registry_prompt_add"),
        {"key": "support.new\n", "description": "", "default_locale": "en", "tags": "billing\n"},
    )

    # Forms strip surrounding whitespace before the validators run: what is stored is the key
    # the author sees, never one with a newline.
    assert response.status_code == 302
    assert list(Prompt.objects.values_list("key", "tags")) == [("support.new", ["billing"])]


# --- the SDK ------------------------------------------------------------------------------------


def test_the_sdk_quotes_an_environment_name_ending_in_a_newline(tmp_path: Path):
    store = BundleStore(tmp_path, "production\n")

    assert store.path.name == "production%0A.json"
    assert NEWLINE not in store.path.name
