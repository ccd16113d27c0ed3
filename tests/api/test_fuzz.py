"""Schemathesis over every operation of the OpenAPI schema the service serves (/api/v1/schema/),
called in process through the WSGI application, with every check Schemathesis has: no 5xx, every
status code, header and response body as the schema documents them, refusals as problem
documents, schema-invalid requests refused (``negative_data_rejection``) and schema-valid ones
accepted (``positive_data_acceptance``).

Schema-valid is not the same as acceptable. The schema says what a request must look like; some
rules depend on data, which no schema can say (docs/decisions/0024-what-the-schema-promises.md):

- a name that is well formed but does not exist (a prompt, a version, an environment, a dataset):
  404, which ``positive_data_acceptance`` allows;
- a change that the current state does not allow (a stale revision, a committed version, a canary
  that is not running): 409, allowed too;
- what a version declares: its variables (``invalid-variables``), whether its templates compile
  and render (``invalid-template``, ``render-failed``), which locales it has
  (``locale-unavailable``); what a version's content must hold beyond its shape: a configured
  provider, parameters that provider takes, variables its templates declare (``invalid-content``);
  a dataset with no cases (``dataset-empty``); what a prompt file's text holds
  (``invalid-prompt-files``). These are 400s, and ``BUSINESS_RULES`` lists their
  problem types: a schema-valid request may be refused with one of them, and with no other 400.
  A ``validation-error`` or ``malformed-request`` on a schema-valid request is a disagreement
  between the schema and the server, and fails (``business_rule_refusal``). The one exception:
  a NUL character anywhere in a body (PostgreSQL cannot store it, docs/api.md), which OpenAPI 3.0
  has no way to exclude from property names and free-form objects.

So the schema carries every pattern, length, bound and enum the server enforces (the fuzzing
found each one missing), and the server refuses every value of another JSON type than the schema
says (no coercion of ``424242`` into ``"424242"``).

The data the operations reach (a released prompt with a draft, a dataset, a gate, an eval run, a
recorded call) is seeded per operation; about half of the generated requests name those objects
(in the path, and a body's ``dataset``, ``version`` and ``environment``) instead of random ones,
so they reach the operations' real code and not only their 404s. Each of those schema-valid
requests is sent again with no key and with a read-only key (``prompts:read``): the refusals of
scope are clean 401 and 403 problem documents on every operation.

Bounded and reproducible: a fixed seed, deterministic generation, ``MAX_EXAMPLES`` generated
requests per operation (plus the few each check sends again, e.g. without the key), no deadline (the first request of an operation warms caches), no
Hypothesis database. About 2,000 requests in all; raise ``MAX_EXAMPLES`` for a deeper run on
one's own machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

import pytest
import schemathesis
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.wsgi import get_wsgi_application
from django.test.utils import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from api.models import Scope
from api.services import apikey_create
from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.services import eval_run_start
from evaluations.gates.services import promotion_gate_create
from registry.actors import Actor
from releases.models import ChangeRequest
from releases.services import CanaryStart
from releases.services.change_requests import change_request_propose
from runs.models import Call
from tests.conftest import RELEASED_VARIABLES
from tests.evaluations.evalrun_scene import CASES, jsonl
from tests.factories import make_version

MAX_EXAMPLES = 25
SEED = 20261206
HOST = "localhost"  # what schemathesis' WSGI client sends as Host
ACTOR = Actor(label="fuzz")

# Refusals of a schema-valid request that depend on data the schema cannot describe (see the
# module docstring); every one a 400 problem type of its own (api/problems.py).
BUSINESS_RULES = frozenset(
    {
        "/problems/invalid-variables",
        "/problems/invalid-content",
        "/problems/invalid-template",
        "/problems/render-failed",
        "/problems/locale-unavailable",
        "/problems/dataset-empty",
        # what a prompt file holds: its YAML, its fields, its content, against the registry
        "/problems/invalid-prompt-files",
    }
)
# validation-error codes of rules OpenAPI 3.0 cannot state, each refused with a pointer:
ACROSS_FIELDS_OR_DATA = frozenset(
    {
        # a body naming an object that does not exist (a gate's prompt, an event's prompt,
        # environment and version; a path naming one is a 404), or a version that is a draft
        "unknown_prompt",
        "unknown_environment",
        "unknown_version",
        "version_not_committed",
        # the clock: an event stamped more than 5 minutes ahead, or older than the retention
        "in_the_future",
        "too_old",
        # across a list's items: unique variant names, weights adding up to 100 at most, different
        # shadow versions; a canary policy's steps ascending, with one below 100; prompt files
        # of different names
        "duplicate_variant",
        "duplicate_file",
        "weights_over_100",
        "invalid_versions",
        "steps_not_ascending",
        "no_step_to_judge",
        # across fields: override_gates needs a reason; a canary needs a percent or a policy, and
        # with both, the percent is the policy's first step; a policy's per-step lists as long as
        # its steps, max_minutes at least min_minutes, trusted keys only with reports, at least
        # one source
        "reason_required",
        "percent_or_analysis",
        "percent_not_first_step",
        "planned_calls_below_variants",
        "wrong_length",
        "max_below_min",
        "keys_without_reports",
        "no_trusted_source",
        # the release's state: an analysis attached to a canary already past its last step
        "canary_past_steps",
        # a schedule's steps (decision 0049): due in the future, each after the one before, with
        # the arguments their action takes; a version the prompt has
        "in_the_past",
        "steps_not_in_order",
        "arguments_of_action",
        # a prompt's versions: one declaring variables cannot become a snippet, and a snippet
        # that versions include cannot stop being one
        "snippet_variables",
        "snippet_in_use",
        # the OpenAI-compatible endpoints (decision 0042): a Responses model other than its
        # prompt's; a conversation's characters added up across its messages
        "model_mismatch",
        "history_too_large",
    }
)
# What no OpenAPI 3.0 schema can exclude from a property's name (api/parsers.py refuses it).
UNSTORABLE = frozenset({"null_characters_not_allowed"})

CONFIG_CHECKS = {
    # Every check, with the statuses a schema-valid request may get: a 400 too, but only of a
    # business rule's type (``business_rule_refusal``).
    "positive_data_acceptance": {
        "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
    },
}
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {
            "deterministic": True,
            "database": "none",
            "max-examples": MAX_EXAMPLES,
            # Unknown query parameters are ignored, by design (as most HTTP APIs do: cache
            # busters, tracing parameters); every documented one is checked.
            "allow-extra-parameters": False,
        },
        "checks": CONFIG_CHECKS,
    }
)
PROBLEM = "application/problem+json"
# The OpenAI-compatible endpoints answer refusals in OpenAI's error shape, the problem document
# beside it (api/openai_compat/errors.py).
OPENAI = f"/{settings.OPENAI_COMPAT_PREFIX}/"

with override_settings(ALLOWED_HOSTS=[HOST]):
    schema = schemathesis.openapi.from_wsgi(
        "/api/v1/schema/?format=json", get_wsgi_application(), config=CONFIG
    )


@dataclass(frozen=True)
class Seeded:
    authorization: str
    reader: str  # a key with prompts:read alone
    path_parameters: dict[str, object]
    body_fields: dict[str, object]
    openai_fields: dict[str, object]  # what the OpenAI-compatible bodies name


@pytest.fixture
def seeded(released, model_server, settings) -> Seeded:
    """A key with every scope, a read-only one, and one object of each kind a request can name."""
    settings.ALLOWED_HOSTS = [HOST, "testserver"]
    # A stream would last RELEASE_STREAM_MAX_SECONDS; its hello is all a fuzzed request needs.
    settings.RELEASE_STREAM_MAX_SECONDS = 0
    # A fuzzing burst from one key is no traffic to limit: requests must reach their operations.
    settings.API_RATE_LIMITS_ENABLED = False
    make_version(
        released.prompt,
        commit=False,
        variables=RELEASED_VARIABLES,
        templates={"en": {"system": "Be kind.", "instruction": "Hello {{ customer_name }}."}},
    )
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=jsonl(CASES), format="jsonl")
    gate = promotion_gate_create(
        environment=released.environments["production"],
        dataset_name="golden",
        min_pass_rate="0.5",
        actor=ACTOR,
    )
    run = eval_run_start(prompt=released.prompt, version=3, dataset_name="golden", actor=ACTOR)
    change_request = _change_request(released)
    _, raw = apikey_create(name="fuzz", scopes=[str(s) for s in Scope], environments=())
    _, reader = apikey_create(name="reader", scopes=[str(Scope.PROMPTS_READ)], environments=())
    authorization = f"Bearer {raw}"
    call = _run_once(authorization)
    return Seeded(
        authorization=authorization,
        reader=f"Bearer {reader}",
        path_parameters={
            "key": released.prompt.key,
            "environment": "staging",
            "number": 3,
            "gate_id": gate.pk,
            "run_id": run.pk,
            "request_id": call.request_id,
            "change_request_id": change_request.pk,
        },
        body_fields={"environment": "staging", "dataset": "golden", "version": 3},
        openai_fields={
            "environment": "staging",
            "model": f"prompt:{released.prompt.key}",
            "variables": {"customer_name": "Ida"},
            "prompt": {"id": released.prompt.key, "variables": {"customer_name": "Ida"}},
        },
    )


def _change_request(released) -> ChangeRequest:
    """Production requires review (decision 0048), and a canary is proposed there."""
    group, _ = Group.objects.get_or_create(name="Release reviewers")
    production = released.environments["production"]
    production.requires_review, production.review_group = True, group
    production.save()
    return change_request_propose(
        prompt=released.prompt,
        environment=production,
        change=CanaryStart(version=2, percent=Decimal(10)),
        actor=ACTOR,
        reason="fuzz",
    )


def _run_once(authorization: str) -> Call:
    from django.test import Client

    response = Client().post(
        "/api/v1/prompts/support.refund-reply/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Ida"}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=authorization,
        HTTP_X_REQUEST_ID="fuzz-call-1",
    )
    assert response.status_code == 200, response.content
    return Call.objects.get(request_id="fuzz-call-1")


def _name_seeded_objects(case, seeded: Seeded) -> None:
    """Point the path, and a body's names, at the seeded objects; what negative generation made
    invalid on purpose stays as it is."""
    if not case.meta.is_negative_at(ParameterLocation.PATH):
        for name in case.path_parameters or {}:
            if name in seeded.path_parameters:
                case.path_parameters[name] = seeded.path_parameters[name]
    if isinstance(case.body, dict) and not case.meta.is_negative_at(ParameterLocation.BODY):
        fields = seeded.openai_fields if case.path.startswith(OPENAI) else seeded.body_fields
        for name in case.body.keys() & fields.keys():
            case.body[name] = fields[name]


# Committed for real (transaction=True), as in production: a refused statement aborts only itself,
# and what is sent after commit is sent. PostgreSQL only: what it refuses (a NUL) is part of what
# is fuzzed, and the embedded SQLite default would hide it.
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@schema.given(known=st.booleans())
# The seeded data is shared by an operation's examples on purpose: each request meets whatever the
# ones before it left, as it would in production; nothing needs resetting between them.
@hypothesis_settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_every_operation_answers_as_documented(case, known, seeded):
    if known:
        _name_seeded_objects(case, seeded)
    checks = [problem_document, business_rule_refusal]
    case.call_and_validate(
        headers={"Authorization": seeded.authorization}, additional_checks=checks
    )
    if known and case.meta.generation.mode.is_positive:
        _refusals_of_scope_are_clean_problems(case, seeded, checks)


def _refusals_of_scope_are_clean_problems(case, seeded: Seeded, checks) -> None:
    """The same schema-valid request with no key: 401 ``unauthenticated`` on every operation; with
    a read-only key: 403 ``insufficient-scope`` where another scope is needed, else as documented.
    (An address that cannot exist is a 404 before any key is read: negative cases are left out.)"""
    anonymous = case.call_and_validate(headers={}, additional_checks=checks)
    assert anonymous.status_code == 401, anonymous.text
    assert problem_of(case, anonymous.content)["type"] == "/problems/unauthenticated"
    reader = case.call_and_validate(
        headers={"Authorization": seeded.reader}, additional_checks=checks
    )
    if reader.status_code == 403:
        problem = problem_of(case, reader.content)
        assert problem["type"] == "/problems/insufficient-scope", reader.text


def problem_of(case, content: bytes) -> dict:
    """The problem document of a refusal: the body, or the OpenAI error's ``problem``."""
    body = json.loads(content)
    return body["problem"] if case.path.startswith(OPENAI) else body


def problem_document(ctx, response, case) -> bool:
    """Every refusal (4xx, 5xx) is an RFC 9457 problem document of its own status; under the
    OpenAI-compatible prefix, OpenAI's error object with that document beside it; and the MCP
    server's refusal of a body that is JSON yet no JSON-RPC message, which speaks JSON-RPC
    (decision 0043)."""
    if response.status_code < 400:
        return True
    content_type = response.headers.get("content-type", [""])[0]
    if case.path == "/mcp" and content_type.split(";")[0] == "application/json":
        refusal = json.loads(response.content)
        assert response.status_code == 400, refusal
        assert refusal["error"]["code"] < 0, refusal
        return True
    if case.path.startswith(OPENAI):
        assert content_type.split(";")[0] == "application/json", content_type
        error = json.loads(response.content)["error"]
        assert {"message", "type", "param", "code"} <= error.keys(), error
        assert error["message"], error
        assert error["code"], error
    else:
        assert content_type.split(";")[0] == PROBLEM, (
            f"A {response.status_code} as {content_type!r}"
        )
    body = problem_of(case, response.content)
    assert body["status"] == response.status_code, body
    assert body["type"].startswith("/problems/"), body
    assert body["title"], body
    assert body["detail"], body
    return True


def business_rule_refusal(ctx, response, case) -> bool:
    """A schema-valid request refused with a 400 is refused for a business rule
    (``BUSINESS_RULES``), never for its shape: the schema allowed that shape."""
    if response.status_code != 400 or not case.meta or not case.meta.generation.mode.is_positive:
        return True
    body = problem_of(case, response.content)
    assert "type" in body, f"A schema-valid request refused: {body}"
    if body["type"] in BUSINESS_RULES:
        return True
    errors = body.get("errors", [])
    legitimate = (
        body["type"] == "/problems/validation-error"
        and errors
        and all(error["code"] in UNSTORABLE | ACROSS_FIELDS_OR_DATA for error in errors)
    )
    assert legitimate, f"A schema-valid request refused for its shape: {body}"
    return True
