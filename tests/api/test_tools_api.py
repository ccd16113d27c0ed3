"""Tools through the authoring API: saved and shown, refused with clear problems (a remote $ref,
duplicate names, oversize) and nothing saved; served by resolve, render and the bundle."""

from __future__ import annotations

from typing import Any

import pytest

from registry.models import PromptVersion
from tests.api.conftest import PROMPT
from tests.api.helpers import assert_problem, errors_by_code
from tests.factories import ORDER_LOOKUP, content_data

pytestmark = pytest.mark.django_db

LOOKUP = ORDER_LOOKUP


def body(**model: Any) -> dict[str, Any]:
    binding = {"provider": "local", "model": "echo-1", **model}
    return {"message": "With tools.", "commit": True, **content_data(model=binding)}


def test_a_version_with_tools_is_committed_and_shown(author_client, prompt) -> None:
    response = author_client.post(
        f"{PROMPT}/versions",
        body(tools=[LOOKUP], tool_choice="required", parallel_tool_calls=False),
        format="json",
    )

    assert response.status_code == 201, response.content
    model = response.json()["model"]
    assert model["tools"] == [LOOKUP]
    assert (model["tool_choice"], model["parallel_tool_calls"]) == ("required", False)
    version = PromptVersion.objects.get(prompt=prompt)
    assert version.tools == [LOOKUP]
    assert version.tool_choice == "required"


def test_a_version_without_tools_shows_empty_tool_fields(author_client, prompt) -> None:
    response = author_client.post(f"{PROMPT}/versions", body(), format="json")

    model = response.json()["model"]
    assert (model["tools"], model["tool_choice"], model["parallel_tool_calls"]) == ([], None, None)


@pytest.mark.parametrize(
    ("model", "code", "pointer"),
    [
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "fetch",
                            "parameters": {"$ref": "http://169.254.169.254/latest/schema.json"},
                        },
                    }
                ]
            },
            "schema_reference_refused",
            "/model/tools/0/function/parameters/$ref",
        ),
        ({"tools": [LOOKUP, LOOKUP]}, "duplicate_tool_name", "/model/tools/1/function/name"),
        (
            {"tools": [{**LOOKUP, "function": {**LOOKUP["function"], "description": "x" * 2000}}]},
            "invalid_tool",
            "/model/tools/0/function/description",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": f"t{i}",
                            "parameters": {"type": "object", "description": "x" * 2500},
                        },
                    }
                    for i in range(100)
                ]
            },
            "tools_too_large",
            "/model/tools",
        ),
        ({"tool_choice": "auto"}, "invalid_tool_choice", "/model/tool_choice"),
    ],
)
def test_bad_tools_are_clear_problems_and_nothing_is_saved(
    author_client, prompt, model, code, pointer
) -> None:
    response = author_client.post(f"{PROMPT}/versions", body(**model), format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert [e["pointer"] for e in errors_by_code(problem)[code]] == [pointer]
    assert not PromptVersion.objects.filter(prompt=prompt).exists()


def test_tools_that_are_not_a_list_are_refused(author_client, prompt) -> None:
    response = author_client.post(f"{PROMPT}/versions", body(tools="order_lookup"), format="json")

    assert response.status_code == 400
    assert not PromptVersion.objects.filter(prompt=prompt).exists()


def test_the_diff_shows_a_tool_added(author_client, prompt) -> None:
    author_client.post(f"{PROMPT}/versions", body(), format="json")
    author_client.post(f"{PROMPT}/versions", body(tools=[LOOKUP]), format="json")

    diff = author_client.get(f"{PROMPT}/versions/2/diff", {"against": 1}).json()

    changes = {c["name"]: c for c in diff["model"]}
    assert changes["tools.order_lookup"]["change"] == "added"
    assert changes["tools.order_lookup"]["after"] == LOOKUP
