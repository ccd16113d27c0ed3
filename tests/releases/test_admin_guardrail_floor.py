"""An environment's guardrail floor in the admin (issue 19, decision 0052): a superuser edits it as
JSON on the environment's form, ``Environment.clean`` refuses a policy with problems (each at its
JSON Pointer, nothing saved), and the list says which checks each environment's floor makes.

Personas (tests/releases/test_admin.py): ``root``, a superuser, edits environments; ``rita``, a
release manager, reads them.
"""

from __future__ import annotations

import html
import json

import pytest
from django.test import Client
from django.urls import reverse

from releases.models import Environment
from tests.releases.test_admin import release_manager as release_manager  # the fixtures
from tests.releases.test_admin import rita as rita  # rita, logged in
from tests.releases.test_admin import root as root
from tests.releases.test_admin import text as page_text

pytestmark = pytest.mark.django_db

FLOOR = {
    "input": {"injection": {"action": "refuse"}, "pii": {"action": "redact", "rules": ["email"]}}
}
# What the form posts besides the floor: the environment's other fields, as they are.
FIELDS = {
    "position": 30,
    "requires_previous_stable": "on",
    "approvals_required": 1,
    "change_request_hours": 72,
}


def text(response) -> str:
    return html.unescape(page_text(response))


@pytest.fixture
def production(released) -> Environment:
    return released.environments["production"]


@pytest.fixture
def superuser(client: Client, root) -> Client:
    client.force_login(root)
    return client


def change(environment: Environment) -> str:
    return reverse("admin:releases_environment_change", args=[environment.pk])


def save(client: Client, environment: Environment, guardrails: str):
    return client.post(change(environment), {**FIELDS, "guardrails": guardrails})


def test_a_superuser_sets_a_floor_and_the_list_names_its_checks(superuser, production):
    response = save(superuser, production, json.dumps(FLOOR))

    assert response.status_code == 302
    production.refresh_from_db()
    assert production.guardrails == FLOOR
    listing = text(superuser.get(reverse("admin:releases_environment_changelist")))
    assert "Guardrail floor" in listing
    assert "production 30" in listing
    assert "input pii: redact, input injection: refuse" in listing  # in the checks' order


def test_the_form_explains_the_floor_and_shows_it_again(superuser, production):
    Environment.objects.filter(pk=production.pk).update(guardrails=FLOOR)

    response = superuser.get(change(production))

    page = text(response)
    assert "Guardrail floor:" in page
    assert "a floor no version can lower" in page
    assert "It applies to the next run, in every process: no deploy." in page
    assert json.loads(response.context["adminform"].form["guardrails"].value()) == FLOOR


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        (
            {"input": {"injection": {"action": "explode"}}},
            "/input/injection/action: The injection check's action is one of refuse, fallback, "
            "flag.",
        ),
        ({"input": {"profanity": {"action": "flag"}}}, "/input/profanity: Unknown input check"),
        (
            {"output": {"deny_patterns": {"patterns": ["(?=a)b"], "action": "flag"}}},
            "/output/deny_patterns/patterns/0:",
        ),
        (
            {"input": {"injection": {"action": "fallback"}}},
            "/fallback: A check answers with the fallback text: give it as fallback.",
        ),
        ({"input": {}}, "/: Name at least one input or output check."),
    ],
)
def test_a_floor_with_problems_is_refused_at_the_field_and_nothing_saved(
    superuser, production, policy, problem
):
    response = save(superuser, production, json.dumps(policy))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["guardrails"]
    assert any(error.startswith(problem) for error in errors), errors
    production.refresh_from_db()
    assert production.guardrails is None


def test_json_a_database_would_refuse_is_refused_by_the_form(superuser, production):
    response = save(superuser, production, '{"input": {"max_tokens": {"limit": NaN}}}')

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["guardrails"]
    production.refresh_from_db()
    assert production.guardrails is None


@pytest.mark.parametrize("empty", ["", "{}"])
def test_an_empty_field_removes_the_floor(superuser, production, empty):
    Environment.objects.filter(pk=production.pk).update(guardrails=FLOOR)

    response = save(superuser, production, empty)

    assert response.status_code == 302
    production.refresh_from_db()
    assert production.guardrails is None


def test_a_release_manager_reads_the_floor_and_may_not_change_it(rita, production):
    Environment.objects.filter(pk=production.pk).update(guardrails=FLOOR)

    page = rita.get(change(production))
    refused = rita.post(change(production), {**FIELDS, "guardrails": ""})

    assert page.status_code == 200
    assert "injection" in text(page)
    assert refused.status_code == 403
    production.refresh_from_db()
    assert production.guardrails == FLOOR
