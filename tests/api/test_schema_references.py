"""No server-side request forgery through JSON Schema (issue 12, finding 2), through the API:
a response schema naming a file or a URL is refused when it is written, and one stored before the
rule (written straight to the database) is used without any fetch. The ``recorder`` (a loopback
HTTP server) and ``secret_file`` hold ``MARKER``, which must never reach an answer or a record."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from registry.models import PromptVersion
from releases.services import release_deploy
from runs.models import Call
from tests.api.conftest import PROMPT
from tests.api.helpers import assert_problem, errors_by_code
from tests.factories import PromptFactory, content_data, make_version
from tests.loopback import MARKER

pytestmark = pytest.mark.django_db


def version_body(schema: dict[str, Any]) -> dict[str, Any]:
    model = {"provider": "local", "model": "echo-1", "response_schema": schema}
    return {"message": "Structured.", **content_data(model=model)}


def test_a_response_schema_naming_a_file_or_a_url_is_refused_with_its_pointer(
    author_client, prompt, recorder, secret_file
):
    schema = {
        "type": "object",
        "properties": {
            "reply": {"$ref": secret_file.as_uri()},
            "tone": {"$ref": f"{recorder.url}/tone.json"},
        },
    }

    response = author_client.post(f"{PROMPT}/versions", version_body(schema), format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    refused = errors_by_code(problem)["schema_reference_refused"]
    assert [e["pointer"] for e in refused] == [
        "/model/response_schema/properties/reply/$ref",
        "/model/response_schema/properties/tone/$ref",
    ]
    assert "never a file or a URL" in refused[0]["detail"]
    assert MARKER not in response.content.decode()
    assert recorder.hits == []
    assert not PromptVersion.objects.exists()


def test_a_response_schema_with_a_backtracking_pattern_is_refused(author_client, prompt):
    schema = {"type": "object", "properties": {"reply": {"type": "string", "pattern": "(a|aa)+$"}}}

    response = author_client.post(f"{PROMPT}/versions", version_body(schema), format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert errors_by_code(problem)["unsafe_regex"][0]["pointer"] == (
        "/model/response_schema/properties/reply/pattern"
    )


def stored_behind_the_rules(schema: dict[str, Any], environments, manager) -> None:
    """support.legacy v1, committed with ``schema`` written straight to the database (as a row
    from before the rule, or a shell), then released in staging."""
    prompt = PromptFactory(key="support.legacy")
    version = make_version(
        prompt, commit=False, model={"provider": "local", "model": "echo-1", "response_schema": {}}
    )
    # A draft's row may change; then it becomes committed, with no service to check the schema.
    rows = PromptVersion.objects.filter(pk=version.pk)
    rows.update(response_schema=schema)
    rows.update(status=PromptVersion.Status.COMMITTED, committed_at=timezone.now())
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )


@pytest.mark.parametrize("where", ["url", "file"])
def test_a_stored_schema_naming_a_url_or_file_is_used_without_a_fetch(
    where, environments, manager, model_server, make_client, recorder, secret_file
):
    target = f"{recorder.url}/schema.json" if where == "url" else secret_file.as_uri()
    stored_behind_the_rules(
        {"type": "object", "properties": {"reply": {"$ref": target}}}, environments, manager
    )
    runner = make_client("runs:execute", name="runner")

    response = runner.post(
        "/api/v1/prompts/support.legacy/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Ada"}}),
        content_type="application/json",
    )

    # The answer cannot be checked against a reference that is never followed: it is invalid,
    # repaired once, then the call fails like any refused answer, saying why.
    assert response.status_code == 502, response.content
    assert recorder.hits == []
    body = response.content.decode()
    assert MARKER not in body
    assert "cannot be followed" in body
    call = Call.objects.get()
    assert (call.status, call.schema_valid) == (Call.Status.ERROR, False)
    assert MARKER not in json.dumps(call.attempts) + call.output + call.error_class
    assert call.input_tokens > 0  # the answers were billed, and recorded as such
