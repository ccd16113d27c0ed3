"""The MCP server's tools, called by the ``mcp`` package's client over HTTP on a live registry
(tests/mcp/conftest.py): each does what its API operation does, for the keys whose scopes allow
it, and a refusal is a tool error holding the API's problem document, with nothing written.

The scene is ``released`` (tests/conftest.py): ``support.refund-reply`` v1 to v3; staging serves
v2 (v1 before it), production v1; v3 has never been in staging, so production refuses it.
"""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.models import EvalRun
from registry.models import PromptVersion
from releases.models import Release, ReleaseEvent
from tests.conftest import RELEASED_INSTRUCTION, RELEASED_VARIABLES
from tests.evaluations.evalrun_scene import ACTOR, CASES, jsonl
from tests.factories import PromptFactory

# Committed for real behind a live server; PostgreSQL only, as the other live-server tests: the
# release events' append-only trigger refuses the flush a transactional test ends with on SQLite.
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

KEY = "support.refund-reply"
READ_TOOLS = {
    "list_prompts",
    "get_version",
    "render_version",
    "diff_versions",
    "list_environments",
    "get_release",
    "get_release_history",
    "get_eval_run",
    "list_eval_runs",
}
AUTHOR_TOOLS = {"create_draft", "update_draft", "commit_draft", "start_eval_run"}
RELEASE_TOOLS = {"propose_release_change"}
BINDING = {"provider": "local", "model": "echo-1", "parameters": {}}


def new_content(instruction: str) -> dict:
    return {
        "variables": RELEASED_VARIABLES,
        "model": BINDING,
        "templates": {"en": {"system": "You are a support agent.", "instruction": instruction}},
    }


def versions() -> list[tuple[int, str]]:
    return list(PromptVersion.objects.order_by("number").values_list("number", "status"))


def staging() -> Release:
    return Release.objects.get(prompt__key=KEY, environment__name="staging")


# --- what a key is shown, and may call ---------------------------------------------------------


def test_each_key_is_shown_the_tools_of_its_scopes(released, reader_mcp, author_mcp, releaser_mcp):
    assert set(reader_mcp.tool_names()) == READ_TOOLS
    assert set(author_mcp.tool_names()) == READ_TOOLS | AUTHOR_TOOLS
    assert set(releaser_mcp.tool_names()) == READ_TOOLS | RELEASE_TOOLS


def test_a_key_with_neither_scope_is_shown_no_tool(released, mcp_client):
    assert mcp_client("runs:execute", "events:write").tool_names() == []


def test_the_read_tools_say_they_change_nothing_and_a_release_change_that_it_may(
    released, releaser_mcp
):
    tools = releaser_mcp.tools()

    assert all(tools[name].annotations.read_only_hint for name in READ_TOOLS)
    change = tools["propose_release_change"].annotations
    assert (change.read_only_hint, change.destructive_hint) == (False, True)
    assert "review" in tools["propose_release_change"].description


def test_a_read_key_calling_a_write_tool_is_refused_and_nothing_is_written(released, reader_mcp):
    before, revision = versions(), staging().revision

    draft = reader_mcp.refusal("create_draft", key=KEY, **new_content("Hi {{ customer_name }}."))
    change = reader_mcp.refusal(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "deploy", "version": 3},
    )

    assert (draft["type"], draft["required_scope"]) == (
        "/problems/insufficient-scope",
        "prompts:write",
    )
    assert (change["type"], change["required_scope"]) == (
        "/problems/insufficient-scope",
        "releases:write",
    )
    assert versions() == before
    assert staging().revision == revision


def test_a_call_to_no_tool_is_a_protocol_error(released, reader_mcp):
    with pytest.raises(MCPError, match="no tool 'drop_prompts'"):
        reader_mcp.call("drop_prompts")


def test_arguments_are_checked_against_the_published_schema(released, reader_mcp):
    refused = reader_mcp.refusal("get_version", key="Support Refund", number="3", version=3)

    assert refused["type"] == "/problems/validation-error"
    assert {(e["pointer"], e["code"]) for e in refused["errors"]} == {
        ("/key", "pattern"),
        ("/number", "type"),
        ("", "additionalProperties"),
    }


# --- reading -----------------------------------------------------------------------------------


def test_list_prompts_pages_and_finds_by_search_and_tag(released, reader_mcp):
    PromptFactory(key="marketing.tagline", description="A tagline.", tags=["marketing"])

    everything = reader_mcp.answer("list_prompts")
    found = reader_mcp.answer("list_prompts", search="REFUND")
    tagged = reader_mcp.answer("list_prompts", tag="marketing")
    second = reader_mcp.answer("list_prompts", page=2, page_size=1)
    past = reader_mcp.refusal("list_prompts", page=3, page_size=1)

    assert (everything["count"], everything["pages"]) == (2, 1)
    assert [(p["key"], p["latest_version"], p["draft_version"]) for p in found["results"]] == [
        (KEY, 3, None)
    ]
    assert [p["key"] for p in tagged["results"]] == ["marketing.tagline"]
    assert ([p["key"] for p in second["results"]], second["pages"]) == ([KEY], 2)
    assert past["type"] == "/problems/not-found"


def test_get_version_reads_its_sections_variables_and_binding(released, reader_mcp):
    version = reader_mcp.answer("get_version", key=KEY, number=2)

    assert (version["number"], version["status"]) == (2, "committed")
    assert version["templates"]["en"]["instruction"] == RELEASED_INSTRUCTION
    assert set(version["templates"]) == {"en", "fr"}
    assert [v["name"] for v in version["variables"]] == ["customer_name", "order_total"]
    assert (version["model"]["provider"], version["model"]["model"]) == ("local", "echo-1")


def test_a_version_that_does_not_exist_is_a_tool_error(released, reader_mcp):
    refused = reader_mcp.refusal("get_version", key=KEY, number=9)

    assert refused["type"] == "/problems/version-not-found"
    assert "no version 9" in refused["detail"]


def test_render_version_fills_in_the_variables_in_the_locale_that_falls_back(released, reader_mcp):
    rendered = reader_mcp.answer(
        "render_version",
        key=KEY,
        number=2,
        locale="fr-CA",
        variables={"customer_name": "Zoé", "order_total": 12.5},
    )

    assert (rendered["locale"], rendered["requested_locale"]) == ("fr", "fr-CA")
    assert rendered["messages"] == [
        {"role": "system", "content": "Vous êtes un agent (v2)"},
        {"role": "user", "content": "Saluez Zoé."},
    ]
    assert rendered["request"]["model"] == "echo-1"


def test_a_missing_variable_is_a_tool_error_naming_it(released, reader_mcp):
    refused = reader_mcp.refusal("render_version", key=KEY, number=3, variables={})

    assert refused["type"] == "/problems/invalid-variables"
    assert [(e["code"], e["pointer"]) for e in refused["errors"]] == [
        ("missing_variable", "/variables/customer_name")
    ]


def test_diff_versions_says_what_changed(released, reader_mcp):
    diff = reader_mcp.answer("diff_versions", key=KEY, number=3, against=2)

    assert (diff["before_number"], diff["after_number"]) == (2, 3)
    changes = {(t["locale"], t["section"]): t["change"] for t in diff["templates"]}
    assert changes[("en", "system")] == "changed"
    assert changes[("fr", "system")] == "removed"


# --- writing prompts ---------------------------------------------------------------------------


def test_an_author_opens_edits_renders_and_commits_a_draft(released, author_mcp):
    draft = author_mcp.answer(
        "create_draft",
        key=KEY,
        message="Shorter",
        **new_content("Hello {{ customer_name }}."),
    )
    assert (draft["number"], draft["status"]) == (4, "draft")

    author_mcp.answer(
        "update_draft",
        key=KEY,
        number=4,
        templates={"en": {"system": "Be brief.", "instruction": "Hi {{ customer_name }}."}},
    )
    rendered = author_mcp.answer(
        "render_version", key=KEY, number=4, variables={"customer_name": "Ada"}
    )
    committed = author_mcp.answer("commit_draft", key=KEY, number=4, message="Brief greeting")

    assert rendered["messages"][1] == {"role": "user", "content": "Hi Ada."}
    assert (committed["status"], committed["message"]) == ("committed", "Brief greeting")
    version = PromptVersion.objects.get(prompt__key=KEY, number=4)
    assert (version.status, version.author_label) == ("committed", author_mcp.actor_label)


def test_a_draft_that_does_not_compile_is_refused_and_nothing_is_written(released, author_mcp):
    before = versions()

    refused = author_mcp.refusal(
        "create_draft", key=KEY, commit=True, **new_content("Hi {{ customer_name ")
    )

    assert refused["type"] == "/problems/invalid-content"
    assert refused["errors"][0]["pointer"] == "/templates/en/instruction"
    assert versions() == before


def test_a_second_draft_is_refused_naming_the_open_one(released, author_mcp):
    author_mcp.answer("create_draft", key=KEY, **new_content("Hi {{ customer_name }}."))

    refused = author_mcp.refusal("create_draft", key=KEY, **new_content("Yo {{ customer_name }}."))

    assert (refused["type"], refused["draft_number"]) == ("/problems/draft-exists", 4)


def test_a_committed_version_cannot_be_edited(released, author_mcp):
    refused = author_mcp.refusal("update_draft", key=KEY, number=3, message="rewrite history")

    assert refused["type"] == "/problems/version-immutable"
    assert PromptVersion.objects.get(prompt__key=KEY, number=3).message == "v3"


# --- releases ----------------------------------------------------------------------------------


def test_release_state_and_history(released, reader_mcp):
    release = reader_mcp.answer("get_release", key=KEY, environment="staging")
    history = reader_mcp.answer("get_release_history", key=KEY, environment="staging")
    environments = reader_mcp.answer("list_environments")

    assert (release["stable"], release["canary"], release["revision"]) == (2, None, 2)
    assert [(e["action"], e["after"]["stable"]) for e in history["results"]] == [
        ("deploy", 2),
        ("deploy", 1),
    ]
    assert [e["name"] for e in environments["environments"]] == [
        "development",
        "staging",
        "production",
    ]


def test_a_releaser_ramps_a_canary_then_rolls_it_back(released, releaser_mcp):
    revision = releaser_mcp.answer("get_release", key=KEY, environment="staging")["revision"]

    canary = releaser_mcp.answer(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "canary_start", "version": 3, "percent": 10, "reason": "try v3"},
        expected_revision=revision,
    )
    ramped = releaser_mcp.answer(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "canary_percent", "percent": "25.5", "reason": "ramp"},
    )
    back = releaser_mcp.answer(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "rollback", "reason": "errors"},
    )

    assert canary["canary"]["version"] == 3
    assert ramped["canary"]["percent"] == 25.5
    assert (back["canary"]["percent"], back["revision"]) == (10, revision + 3)
    events = ReleaseEvent.objects.filter(release=staging()).order_by("-id")
    assert [(e.action, e.reason, e.actor_label) for e in events[:3]] == [
        ("rollback", "errors", releaser_mcp.actor_label),
        ("canary_percent", "ramp", releaser_mcp.actor_label),
        ("canary_start", "try v3", releaser_mcp.actor_label),
    ]


def test_a_stale_revision_is_refused_and_nothing_changes(released, releaser_mcp):
    refused = releaser_mcp.refusal(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "deploy", "version": 3},
        expected_revision=1,
    )

    assert (refused["type"], refused["current_revision"]) == ("/problems/stale-revision", 2)
    assert (staging().revision, staging().stable_version.number) == (2, 2)


def test_production_refuses_a_version_never_stable_in_staging(released, releaser_mcp):
    production = released.release("production")

    refused = releaser_mcp.refusal(
        "propose_release_change",
        key=KEY,
        environment="production",
        change={"action": "deploy", "version": 3, "reason": "skip staging"},
    )

    assert refused["type"] == "/problems/promotion-blocked"
    assert refused["failed_gates"][0]["gate"] == "environment-order"
    production.refresh_from_db()
    assert (production.revision, production.stable_version.number) == (1, 1)


def test_a_change_is_checked_as_its_operation_checks_it(released, releaser_mcp):
    refused = releaser_mcp.refusal(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "deploy", "version": 3, "percent": 10, "override_gates": True},
    )
    unknown = releaser_mcp.refusal(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "promote_everything"},
    )
    no_reason = releaser_mcp.refusal(
        "propose_release_change",
        key=KEY,
        environment="staging",
        change={"action": "deploy", "version": 3, "override_gates": True},
    )

    assert [(e["pointer"], e["code"]) for e in refused["errors"]] == [
        ("/change", "additionalProperties")
    ]
    assert ("/change/action", "enum") in {(e["pointer"], e["code"]) for e in unknown["errors"]}
    assert [(e["pointer"], e["code"]) for e in no_reason["errors"]] == [
        ("/reason", "reason_required")
    ]
    assert staging().revision == 2


def test_a_key_limited_to_staging_neither_reads_nor_changes_production(released, mcp_client):
    limited = mcp_client("prompts:read", "releases:write", environments=("staging",))

    read = limited.refusal("get_release", key=KEY, environment="production")
    change = limited.refusal(
        "propose_release_change",
        key=KEY,
        environment="production",
        change={"action": "rollback"},
    )

    assert read["type"] == change["type"] == "/problems/environment-forbidden"
    assert [e["name"] for e in limited.answer("list_environments")["environments"]] == ["staging"]
    assert released.release("production").revision == 1


# --- eval runs ---------------------------------------------------------------------------------


@pytest.fixture
def golden(released):
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(dataset=dataset, content=jsonl(CASES), format="jsonl")
    return dataset


def test_an_author_starts_an_eval_run_and_reads_its_report(golden, author_mcp, eager, model_server):
    started = author_mcp.answer("start_eval_run", key=KEY, number=3, dataset="golden")
    run = author_mcp.answer("get_eval_run", run_id=started["id"])
    listed = author_mcp.answer("list_eval_runs", key=KEY)

    assert (started["version"], started["dataset"], started["created_by"]) == (
        3,
        "golden",
        author_mcp.actor_label,
    )
    assert run["status"] == "finished"
    assert run["progress"]["done"] == run["progress"]["total"] == len(CASES) - 1  # no holdout
    assert sum(run["report"]["counts"].values()) == len(run["report"]["cases"])
    assert started["id"] in [r["id"] for r in listed["results"]]


def test_a_gate_run_needs_releases_write_and_starts_nothing_without(golden, author_mcp):
    refused = author_mcp.refusal(
        "start_eval_run", key=KEY, number=3, dataset="golden", include_holdout=True
    )

    assert (refused["type"], refused["required_scope"]) == (
        "/problems/insufficient-scope",
        "releases:write",
    )
    assert not EvalRun.objects.exists()
