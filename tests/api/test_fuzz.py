"""Schemathesis over every operation of the OpenAPI schema the service serves (/api/v1/schema/),
called in process through the WSGI application: no 5xx, every status code and every response
body as the schema documents them, refusals as problem documents.

The schema is loaded at import from the real WSGI application, so each operation is a test of
its own (``pytest -n 2`` shares them between the workers). The data the operations reach (a
released prompt with a draft, a dataset, a gate, an eval run, a recorded call) is seeded per
operation; about half of the generated requests name those objects instead of random ones, so
they reach the operations' real code and not only their 404s.

Bounded and reproducible: a fixed seed, deterministic generation, ``MAX_EXAMPLES`` generated
requests per operation (plus the few each check sends again, e.g. without the key), no deadline
(the first request of an operation warms caches), no Hypothesis database. About 1,500 requests in
all; raise ``MAX_EXAMPLES`` for a deeper run on one's own machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from django.test.utils import override_settings
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation

from api.models import Scope
from api.services import apikey_create
from evaluations.evalruns import eval_run_start
from evaluations.gates import promotion_gate_create
from evaluations.services import dataset_create, dataset_import
from registry.actors import Actor
from runs.models import Call
from tests.conftest import RELEASED_VARIABLES
from tests.evaluations.evalrun_scene import CASES, jsonl
from tests.factories import make_version

MAX_EXAMPLES = 25
SEED = 20261206
HOST = "localhost"  # what schemathesis' WSGI client sends as Host
ACTOR = Actor(label="fuzz")

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
        # Every check but one: the schema documents the shape of a request, not every business
        # rule behind it (the variables a version declares, a template that compiles, a dataset
        # that exists...), so a schema-valid request may rightly be refused with a 400 problem.
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }
)
PROBLEM = "application/problem+json"

with override_settings(ALLOWED_HOSTS=[HOST]):
    schema = schemathesis.openapi.from_wsgi(
        "/api/v1/schema/?format=json", get_wsgi_application(), config=CONFIG
    )


@dataclass(frozen=True)
class Seeded:
    authorization: str
    path_parameters: dict[str, object]


@pytest.fixture
def seeded(released, model_server, settings) -> Seeded:
    """A key with every scope, and one object of each kind an operation's path can name."""
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
    _, raw = apikey_create(name="fuzz", scopes=[str(s) for s in Scope], environments=())
    authorization = f"Bearer {raw}"
    call = _run_once(authorization)
    return Seeded(
        authorization=authorization,
        path_parameters={
            "key": released.prompt.key,
            "environment": "staging",
            "number": 3,
            "gate_id": gate.pk,
            "run_id": run.pk,
            "request_id": call.request_id,
        },
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
    # A path made invalid on purpose (negative generation) stays as it is.
    if known and not case.meta.is_negative_at(ParameterLocation.PATH):
        for name in case.path_parameters or {}:
            if name in seeded.path_parameters:
                case.path_parameters[name] = seeded.path_parameters[name]
    case.call_and_validate(
        headers={"Authorization": seeded.authorization}, additional_checks=[problem_document]
    )


def problem_document(ctx, response, case) -> bool:
    """Every refusal (4xx, 5xx) is an RFC 9457 problem document of its own status."""
    if response.status_code < 400:
        return True
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.split(";")[0] == PROBLEM, f"A {response.status_code} as {content_type!r}"
    body = json.loads(response.content)
    assert body["status"] == response.status_code, body
    assert body["type"].startswith("/problems/"), body
    assert body["title"], body
    assert body["detail"], body
    return True
