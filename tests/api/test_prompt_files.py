"""Prompts as files over the API: GET /prompt-files, POST /prompt-files/plan and
POST /prompt-files/import (what ``promptregistry pull``, ``diff`` and ``push`` send)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from registry.models import Prompt, PromptVersion
from registry.promptfiles import prompts_export
from registry.selectors import version_content
from registry.services import version_draft_update
from tests.api.helpers import assert_problem, registry_state
from tests.factories import AUTHOR, PromptFactory, make_version

pytestmark = pytest.mark.django_db

FILES = "/api/v1/prompt-files"
PLAN = f"{FILES}/plan"
IMPORT = f"{FILES}/import"
KEY = "support.refund-reply"
NAME = f"{KEY}.yaml"


def listed(client, **query: Any) -> list[dict[str, Any]]:
    response = client.get(FILES, query)
    assert response.status_code == 200, response.content[:2000]
    return response.json()["results"]


def text_of(client, key: str = KEY, **query: Any) -> str:
    return next(f["text"] for f in listed(client, **query) if f["key"] == key)


def edited(text: str, instruction: str = "Greet {{ customer_name }} kindly.") -> str:
    data = yaml.safe_load(text)
    data["templates"]["en"]["instruction"] = instruction
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def send(client, url: str, *files: tuple[str, str], commit: bool = False):
    body = {"files": [{"name": n, "text": t} for n, t in files], "commit": commit}
    return client.post(url, body, format="json")


def plan(client, *files: tuple[str, str], commit: bool = False) -> list[dict[str, Any]]:
    response = send(client, PLAN, *files, commit=commit)
    assert response.status_code == 200, response.content[:2000]
    return response.json()["files"]


def imported(client, *files: tuple[str, str], commit: bool = False) -> dict[str, Any]:
    response = send(client, IMPORT, *files, commit=commit)
    assert response.status_code == 200, response.content[:2000]
    return response.json()


def versions() -> list[tuple[int, str]]:
    return list(
        PromptVersion.objects.filter(prompt__key=KEY)
        .order_by("number")
        .values_list("number", "status")
    )


# --- GET /prompt-files ------------------------------------------------------------------------


def test_each_file_is_what_the_export_writes(reader_client, released, tmp_path: Path):
    make_version(PromptFactory(key="sales.recap", tags=["sales"]))
    prompts_export(directory=tmp_path)

    files = listed(reader_client)

    assert [(f["name"], f["version"]) for f in files] == [("sales.recap.yaml", 1), (NAME, 3)]
    for file in files:
        assert file["text"] == (tmp_path / file["name"]).read_text(encoding="utf-8")
    assert files[1]["content_hash"] == released.versions[3].content_hash


def test_an_environment_gives_the_versions_it_serves_as_stable(reader_client, released):
    assert [(f["key"], f["version"]) for f in listed(reader_client, environment="staging")] == [
        (KEY, 2)
    ]
    assert listed(reader_client, environment="development") == []
    assert "version: 1\n" in text_of(reader_client, environment="production")


def test_a_tag_keeps_the_prompts_that_have_it(reader_client, released):
    make_version(PromptFactory(key="sales.recap", tags=["sales"]))

    assert [f["key"] for f in listed(reader_client, tag="sales")] == ["sales.recap"]


def test_without_version_fields_the_file_leaves_them_out(reader_client, released):
    text = text_of(reader_client, version_fields="false")

    data = yaml.safe_load(text)
    assert "version" not in data
    assert "content_hash" not in data
    assert data["templates"] == yaml.safe_load(text_of(reader_client))["templates"]


def test_files_are_read_in_a_fixed_number_of_queries(
    reader_client, released, django_assert_max_num_queries
):
    for n in range(5):
        make_version(PromptFactory(key=f"extra.p{n}"))
    # The key, the page's count, the versions, their variables and templates; none per prompt.
    with django_assert_max_num_queries(8):
        assert len(listed(reader_client)) == 6


def test_an_unknown_environment_is_a_404(reader_client, released):
    assert_problem(
        reader_client.get(FILES, {"environment": "nowhere"}), 404, "/problems/environment-not-found"
    )


def test_a_key_limited_to_staging_may_not_read_productions_files(make_client, released):
    client = make_client("prompts:read", environments=("staging",))

    assert_problem(
        client.get(FILES, {"environment": "production"}), 403, "/problems/environment-forbidden"
    )
    assert listed(client, environment="staging")


def test_listing_files_needs_a_key(anonymous_client, released):
    assert_problem(anonymous_client.get(FILES), 401, "/problems/unauthenticated")


# --- POST /prompt-files/plan ------------------------------------------------------------------


def test_a_file_as_exported_plans_nothing(reader_client, released):
    (item,) = plan(reader_client, (NAME, text_of(reader_client)))

    assert item | {"summary": None} == {
        "name": NAME,
        "key": KEY,
        "action": "unchanged",
        "version_change": "none",
        "version": 3,
        "committed": True,
        "from_version": 3,
        "prompt_changes": [],
        "summary": None,
    }
    assert item["summary"] == f"unchanged {KEY} (version 3)"


def test_a_changed_file_plans_a_draft_or_with_commit_a_version(reader_client, released):
    text = edited(text_of(reader_client))
    before = registry_state()

    (as_draft,) = plan(reader_client, (NAME, text))
    (as_version,) = plan(reader_client, (NAME, text), commit=True)

    assert (as_draft["version_change"], as_draft["version"], as_draft["committed"]) == (
        "open_draft",
        4,
        False,
    )
    assert as_draft["summary"] == f"update {KEY}: draft 4 (from version 3)"
    assert (as_version["version_change"], as_version["summary"]) == (
        "commit",
        f"update {KEY}: version 3 -> 4",
    )
    assert registry_state() == before


def test_one_bad_file_names_the_file_its_line_and_changes_nothing(author_client, released):
    good = edited(text_of(author_client))
    bad = text_of(author_client).replace("Greet {{ customer_name }}", "Greet {{ customer_name }")
    before = registry_state()

    for url in (PLAN, IMPORT):
        response = send(author_client, url, ("a.first.yaml", "key: a.first\n"), (NAME, good))
        body = assert_problem(response, 400, "/problems/invalid-prompt-files")
        assert {e["file"] for e in body["errors"]} == {"a.first.yaml"}
        response = send(author_client, url, (NAME, bad))
        body = assert_problem(response, 400, "/problems/invalid-prompt-files")
        (error,) = [e for e in body["errors"] if e["code"] == "template_syntax"]
        assert error["file"] == NAME
        assert bad.splitlines()[error["line"] - 1].lstrip().startswith("instruction:")

    assert registry_state() == before


def test_a_file_named_for_another_key_is_refused(reader_client, released):
    response = send(reader_client, PLAN, ("support.other.yaml", text_of(reader_client)))

    body = assert_problem(response, 400, "/problems/invalid-prompt-files")
    assert [e["code"] for e in body["errors"]] == ["wrong_file_name"]


@pytest.mark.parametrize(
    ("files", "pointer"),
    [
        ([{"name": "../x.yaml", "text": ""}], "/files/0/name"),
        ([{"name": "x.yml", "text": ""}], "/files/0/name"),
        ([{"name": "x.yaml", "text": ""}, {"name": "x.yaml", "text": ""}], "/files/1/name"),
        ([], "/files"),
    ],
)
def test_a_body_that_is_no_set_of_files_is_a_validation_error(reader_client, files, pointer):
    response = reader_client.post(PLAN, {"files": files}, format="json")

    body = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in body["errors"]] == [pointer]


def test_a_file_over_the_size_limit_is_refused_unparsed(reader_client, released, settings):
    settings.PROMPT_FILE_MAX_BYTES = 100

    response = send(reader_client, PLAN, (NAME, "key: x\n" + "#" * 200))

    body = assert_problem(response, 400, "/problems/invalid-prompt-files")
    assert [e["code"] for e in body["errors"]] == ["file_too_large"]


# --- POST /prompt-files/import ------------------------------------------------------------------


def test_a_changed_file_opens_a_draft_and_then_replaces_the_keys_own_draft(author_client, released):
    text = text_of(author_client)

    first = imported(author_client, (NAME, edited(text)))
    again = imported(author_client, (NAME, edited(text, "Greet {{ customer_name }} twice.")))

    assert (first["applied"], first["changes"]) == (True, 1)
    assert [f["version_change"] for f in (*first["files"], *again["files"])] == [
        "open_draft",
        "replace_draft",
    ]
    assert versions() == [(1, "committed"), (2, "committed"), (3, "committed"), (4, "draft")]
    draft = PromptVersion.objects.get(prompt__key=KEY, number=4)
    assert version_content(draft).templates["en"].instruction == "Greet {{ customer_name }} twice."
    assert draft.author_label == f"key:author-ci#{author_client.key.pk}"


def test_the_same_file_with_commit_commits_the_draft_it_opened(author_client, released):
    text = edited(text_of(author_client))
    imported(author_client, (NAME, text))

    (unchanged,) = imported(author_client, (NAME, text))["files"]
    (item,) = imported(author_client, (NAME, text), commit=True)["files"]

    assert (unchanged["action"], unchanged["summary"]) == (
        "unchanged",
        f"unchanged {KEY} (draft 4)",
    )
    assert (item["version_change"], item["version"], item["committed"]) == (
        "commit_draft",
        4,
        True,
    )
    assert versions()[-1] == (4, "committed")


def test_someone_elses_draft_is_never_overwritten_nor_committed_around(author_client, released):
    make_version(released.prompt, commit=False, message="Alice's idea.")
    text = edited(text_of(author_client))
    before = registry_state()

    for commit in (False, True):
        response = send(author_client, IMPORT, (NAME, text), commit=commit)
        body = assert_problem(response, 400, "/problems/invalid-prompt-files")
        assert [e["code"] for e in body["errors"]] == ["draft_open"]
        assert "open draft (version 4, by tests)" in body["errors"][0]["detail"]

    assert registry_state() == before


def test_a_new_key_becomes_a_prompt_with_draft_1(author_client, released):
    text = text_of(author_client).replace(f"key: {KEY}", "key: support.new-one")

    (item,) = imported(author_client, ("support.new-one.yaml", text))["files"]

    assert (item["action"], item["summary"]) == (
        "create",
        "create support.new-one (draft 1) from support.new-one.yaml",
    )
    prompt = Prompt.objects.get(key="support.new-one")
    assert list(prompt.versions.values_list("number", "status")) == [(1, "draft")]


def test_importing_needs_the_write_scope(reader_client, released):
    response = send(reader_client, IMPORT, (NAME, edited(text_of(reader_client))))

    body = assert_problem(response, 403, "/problems/insufficient-scope")
    assert body["required_scope"] == "prompts:write"


def test_commit_replaces_the_keys_own_draft_then_commits_it(author_client, released):
    text = text_of(author_client)
    imported(author_client, (NAME, edited(text)))

    result = imported(
        author_client, (NAME, edited(text, "Greet {{ customer_name }} twice.")), commit=True
    )

    (item,) = result["files"]
    assert (item["version_change"], item["summary"]) == (
        "replace_and_commit_draft",
        f"update {KEY}: draft 4 replaced and committed",
    )
    assert versions()[-1] == (4, "committed")


def test_a_draft_someone_edited_since_is_theirs(author_client, released):
    text = text_of(author_client)
    imported(author_client, (NAME, edited(text)))
    draft = PromptVersion.objects.get(prompt__key=KEY, number=4)
    version_draft_update(version=draft, actor=AUTHOR, message="Alice took it over.")

    response = send(author_client, IMPORT, (NAME, edited(text, "Hi {{ customer_name }}.")))

    body = assert_problem(response, 400, "/problems/invalid-prompt-files")
    assert [e["code"] for e in body["errors"]] == ["draft_open"]
