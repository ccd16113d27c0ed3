"""``manage.py prompts export DIR`` / ``prompts import DIR [--dry-run]``: prompts as YAML in git."""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import override_settings

from registry.actors import Actor
from registry.errors import DraftExists
from registry.models import Prompt, PromptVersion
from registry.selectors import version_content, version_get
from registry.services import prompt_create
from registry.sync import SyncInvalid, prompts_import_apply, prompts_import_plan
from registry.yamlfiles import LiteralDumper
from tests.factories import PromptFactory, make_version

pytestmark = pytest.mark.django_db

TWO_LOCALES = {
    "en": {
        "system": "You are a courteous support agent.\nYou never promise dates.",
        "instruction": "Greet {{ customer_name }}.",
        "format": "Two short paragraphs.\n",
    },
    "fr-CA": {"instruction": "Salue {{ customer_name }}."},
}


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("prompts", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def export(directory: Path) -> str:
    return run("export", str(directory))[0]


def load(directory: Path, *extra: str) -> tuple[str, str]:
    return run("import", str(directory), *extra)


def read(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def snapshot() -> list[tuple[Any, ...]]:
    """Everything an import could change, to assert that nothing did."""
    prompts = list(Prompt.objects.values_list("key", "description", "tags", "updated_at"))
    versions = list(
        PromptVersion.objects.values_list("prompt__key", "number", "status", "content_hash")
    )
    return sorted(prompts) + sorted(versions)


@contextlib.contextmanager
def rolled_back() -> Iterator[None]:
    """Whatever the block writes to the database is undone (files written stay)."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


def make_refund() -> Prompt:
    """support.refund-reply: v1, then v2 in English and Canadian French."""
    prompt = PromptFactory(
        key="support.refund-reply",
        description="Answers an approved refund.",
        tags=["customer-facing", "support"],
    )
    make_version(prompt, message="First.")
    make_version(prompt, message="Canadian French.", templates=TWO_LOCALES)
    return prompt


@pytest.fixture
def refund(db) -> Prompt:
    return make_refund()


# --- export -------------------------------------------------------------------------------------------


def test_export_writes_one_file_per_prompt_with_a_committed_version(tmp_path, refund):
    make_version(PromptFactory(key="sales.recap"))
    PromptFactory(key="drafts.only")
    make_version(PromptFactory(key="drafts.only-too"), commit=False)

    out = export(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sales.recap.yaml",
        "support.refund-reply.yaml",
    ]
    assert "Exported 2 prompt(s)" in out


def test_export_holds_the_latest_committed_version_and_the_prompts_fields(tmp_path, refund):
    make_version(
        refund, commit=False, templates={"en": {"instruction": "Draft {{ customer_name }}"}}
    )

    export(tmp_path)

    data = read(tmp_path / "support.refund-reply.yaml")
    v2 = version_get(prompt=refund, number=2)
    assert data["key"] == "support.refund-reply"
    assert data["description"] == "Answers an approved refund."
    assert data["default_locale"] == "en"
    assert data["tags"] == ["customer-facing", "support"]
    assert (data["version"], data["message"], data["content_hash"]) == (
        2,
        "Canadian French.",
        v2.content_hash,
    )
    assert data["templates"]["fr-CA"]["instruction"] == "Salue {{ customer_name }}."
    assert data["templates"]["en"]["system"] == TWO_LOCALES["en"]["system"]


def test_export_writes_multi_line_text_as_block_scalars(tmp_path, refund):
    export(tmp_path)

    text = (tmp_path / "support.refund-reply.yaml").read_text(encoding="utf-8")
    assert (
        "    system: |-\n      You are a courteous support agent.\n      You never promise" in text
    )
    assert "    format: |\n      Two short paragraphs.\n" in text


def test_export_keeps_text_that_a_block_scalar_cannot_hold(tmp_path, prompt):
    tricky = {
        "system": "Trailing spaces   \nthen a line",
        "context": "  leading spaces\nand\ttabs",
        "instruction": "Greet {{ customer_name }}: « ça va ? » 🙂\n\n\n",
    }
    make_version(prompt, templates={"en": tricky})
    export(tmp_path)

    assert read(tmp_path / "support.refund-reply.yaml")["templates"]["en"] == {
        "format": "",
        **tricky,
    }


# --- import: round trip and plans -----------------------------------------------------------------------


def test_export_then_import_into_an_empty_registry_recreates_equal_content(tmp_path):
    with rolled_back():
        make_refund()
        make_version(PromptFactory(key="drafts.only"), commit=False)
        make_version(
            PromptFactory(key="support.triage", default_locale="fr", tags=["support"]),
            variables=[{"name": "ticket", "type": "string"}],
            model={
                "provider": "local",
                "model": "echo-1",
                "parameters": {"temperature": 0, "seed": 7, "stop": ["\n"]},
                "response_schema": {"type": "object", "required": ["category"]},
                "fallbacks": [{"provider": "local", "model": "echo-small", "parameters": {}}],
            },
            templates={"fr": {"instruction": "Trie :\n{{ ticket }}"}},
        )
        hashes = {
            key: PromptVersion.objects.filter(prompt__key=key, status="committed")
            .order_by("-number")
            .values_list("content_hash", flat=True)
            .first()
            for key in ["support.refund-reply", "support.triage"]
        }
        export(tmp_path)
    assert not Prompt.objects.exists()

    out, _err = load(tmp_path)

    assert "create support.refund-reply (version 1)" in out
    refund_again = Prompt.objects.get(key="support.refund-reply")
    triage = Prompt.objects.get(key="support.triage")
    assert (refund_again.description, refund_again.tags) == (
        "Answers an approved refund.",
        ["customer-facing", "support"],
    )
    assert (triage.default_locale, triage.tags) == ("fr", ["support"])
    assert [
        (v.number, v.status, v.message, v.content_hash, v.committed_by_label)
        for v in refund_again.versions.order_by("number")
    ] == [(1, "committed", "Canadian French.", hashes["support.refund-reply"], "import")]
    assert triage.versions.get().content_hash == hashes["support.triage"]


CHAT_VARIABLES = [
    {"name": "question", "type": "string"},
    {
        "name": "examples",
        "type": "messages",
        "required": False,
        "after": "system",
        "default": [
            {"role": "user", "content": "Is 7 prime?"},
            {"role": "assistant", "content": "Yes.\nIt has no divisor but 1 and 7."},
        ],
    },
    {"name": "history", "type": "messages", "required": False},
]


def test_a_history_variable_goes_to_a_file_and_back_with_its_place_and_default(tmp_path):
    with rolled_back():
        version = make_version(
            PromptFactory(key="support.chat"),
            variables=CHAT_VARIABLES,
            templates={"en": {"system": "One line.", "instruction": "{{ question }}"}},
        )
        content_hash = version.content_hash
        export(tmp_path)
    data = read(tmp_path / "support.chat.yaml")
    assert data["variables"][1:] == [
        {**CHAT_VARIABLES[1], "description": ""},
        {**CHAT_VARIABLES[2], "default": None, "description": "", "after": "context"},
    ]
    assert "after" not in data["variables"][0]

    out, _err = load(tmp_path)

    assert "create support.chat (version 1)" in out
    imported = Prompt.objects.get(key="support.chat").versions.get()
    assert imported.content_hash == content_hash
    assert version_content(imported).variables[1].after == "system"
    assert load(tmp_path)[0].endswith("Imported: 0 change(s).\n")


def test_importing_what_was_just_exported_changes_nothing(tmp_path, refund):
    make_version(PromptFactory(key="sales.recap"))
    export(tmp_path)
    before = snapshot()

    out, _err = load(tmp_path)

    assert snapshot() == before
    assert "unchanged support.refund-reply (version 2)" in out
    assert "Imported: 0 change(s)." in out


def test_changed_content_becomes_exactly_one_new_committed_version(tmp_path, refund):
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["templates"]["en"]["instruction"] = "Greet {{ customer_name }} by name."
    data["message"] = "Use the customer's name."
    write(path, data)

    out, _err = load(tmp_path, "--actor", "ci")

    assert "update support.refund-reply: version 2 -> 3" in out
    latest = refund.versions.order_by("-number").first()
    assert (latest.number, latest.status, latest.message, latest.committed_by_label) == (
        3,
        "committed",
        "Use the customer's name.",
        "ci",
    )
    assert latest.parent.number == 2
    content = version_content(version_get(prompt=refund, number=3))
    assert content.templates["en"].instruction == "Greet {{ customer_name }} by name."
    assert content.templates["fr-CA"].instruction == "Salue {{ customer_name }}."
    # Importing the same files again finds nothing to do.
    load(tmp_path)
    assert refund.versions.count() == 3


def test_a_new_description_or_tags_update_the_prompt_without_a_version(tmp_path, refund):
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["description"] = "Answers a refund, any amount."
    data["tags"] = ["support", "refunds"]
    write(path, data)

    out, _err = load(tmp_path)

    assert "update support.refund-reply: description changed, tags changed" in out
    refund.refresh_from_db()
    assert (refund.description, refund.tags) == (
        "Answers a refund, any amount.",
        ["refunds", "support"],
    )
    assert refund.versions.count() == 2


def test_tags_in_another_order_are_not_a_change(tmp_path, refund):
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["tags"] = ["support", "customer-facing"]
    write(path, data)
    before = snapshot()

    out, _err = load(tmp_path)

    assert "unchanged support.refund-reply" in out
    assert snapshot() == before


def test_locales_spelled_differently_are_the_same_content(tmp_path, refund):
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["default_locale"] = "EN"
    data["templates"] = {"EN": data["templates"]["en"], "fr_ca": data["templates"]["fr-CA"]}
    write(path, data)
    before = snapshot()

    out, _err = load(tmp_path)

    assert "unchanged support.refund-reply" in out
    assert snapshot() == before


def test_an_unknown_key_creates_the_prompt_with_version_1(tmp_path, refund):
    export(tmp_path)
    data = read(tmp_path / "support.refund-reply.yaml")
    data |= {"key": "support.apology", "message": "", "tags": []}
    del data["version"], data["content_hash"]
    write(tmp_path / "support.apology.yaml", data)

    out, _err = load(tmp_path)

    assert "create support.apology (version 1) from support.apology.yaml" in out
    version = Prompt.objects.get(key="support.apology").versions.get()
    assert (version.number, version.status) == (1, "committed")
    assert version.message == "Imported from support.apology.yaml."


def test_a_dry_run_prints_the_plan_and_writes_nothing(tmp_path, refund):
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["templates"]["en"]["format"] = "One paragraph."
    write(path, data)
    new = dict(data, key="support.new")
    write(tmp_path / "support.new.yaml", new)
    before = snapshot()

    out, err = load(tmp_path, "--dry-run")

    assert out.splitlines() == [
        "create support.new (version 1) from support.new.yaml",
        "update support.refund-reply: version 2 -> 3",
        "Dry run: 2 change(s) planned, nothing written.",
    ]
    assert err == ""
    assert snapshot() == before


# --- import: refusals -----------------------------------------------------------------------------------

VALID = {
    "key": "support.valid",
    "description": "A valid prompt.",
    "default_locale": "en",
    "tags": ["support"],
    "message": "Valid.",
    "variables": [{"name": "customer_name", "type": "string"}],
    "model": {"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.2}},
    "templates": {"en": {"instruction": "Greet {{ customer_name }}."}},
}


def _without(name: str) -> dict[str, Any]:
    data = dict(VALID, key="support.bad")
    del data[name]
    return data


BAD_FILES = {
    "bad yaml": (
        "key: support.bad\ntemplates:\n  en: [unclosed\n",
        "support.bad.yaml:4: Not valid",
    ),
    "not a mapping": ("- a list\n", "must hold a mapping"),
    "empty": ("", "must hold a mapping"),
    "missing model": (_without("model"), "The field 'model' is required. (/model)"),
    "missing templates": (_without("templates"), "'templates' is required"),
    "unknown field": (dict(VALID, key="support.bad", owner="alice"), "Unknown field 'owner'"),
    "wrong file name": (dict(VALID, key="support.other"), "must be named support.other.yaml"),
    "wrong type": (dict(VALID, key="support.bad", tags="support"), "'tags' must be a list"),
    "invalid template": (
        dict(VALID, key="support.bad", templates={"en": {"instruction": "Hi {% if %}"}}),
        "The instruction section (en), line 1: Expected an expression",
    ),
    "undeclared variable": (
        dict(VALID, key="support.bad", templates={"en": {"instruction": "Hi {{ name }}."}}),
        "'name' is not a declared variable. (/templates/en/instruction)",
    ),
    "unknown section": (
        dict(VALID, key="support.bad", templates={"en": {"instructions": "Hi."}}),
        "'instructions' is not a section",
    ),
    "section not text": (
        dict(VALID, key="support.bad", templates={"en": {"instruction": ["Hi."]}}),
        "The instruction section must be text. (/templates/en/instruction)",
    ),
    "locale not a mapping": (
        dict(VALID, key="support.bad", templates={"en": "Hi."}),
        "(/templates/en)",
    ),
    "variable not a mapping": (
        dict(VALID, key="support.bad", variables=["customer_name"]),
        "(/variables/0)",
    ),
    "provider not text": (
        dict(VALID, key="support.bad", model={"provider": 3, "model": "echo-1"}),
        "(/model/provider)",
    ),
    "parameters not a mapping": (
        dict(VALID, key="support.bad", model={**VALID["model"], "parameters": [1]}),
        "(/model/parameters)",
    ),
    "fallback not a mapping": (
        dict(VALID, key="support.bad", model={**VALID["model"], "fallbacks": ["echo-small"]}),
        "(/model/fallbacks/0)",
    ),
    "variable field misspelled": (
        dict(VALID, key="support.bad", variables=[{"name": "customer_name", "requird": False}]),
        "Unknown field 'requird'",
    ),
    "not a JSON value": (
        dict(
            VALID,
            key="support.bad",
            model={**VALID["model"], "response_schema": {"examples": [datetime.date(2024, 1, 1)]}},
        ),
        "is not a JSON value (text, number, true/false, null, list or mapping); quote it to make "
        "it text. (/model/response_schema/examples/0)",
    ),
    # Issue 12, finding 2: a schema never names a file or a URL, nor runs a backtracking regex.
    "schema naming a file": (
        dict(
            VALID,
            key="support.bad",
            model={**VALID["model"], "response_schema": {"$ref": "file:///etc/passwd"}},
        ),
        "leaves the schema: only references inside the schema ('#/$defs/name' or '#anchor') are "
        "followed, never a file or a URL. (/model/response_schema/$ref)",
    ),
    "schema naming a URL": (
        dict(
            VALID,
            key="support.bad",
            model={
                **VALID["model"],
                "response_schema": {"items": {"$ref": "http://169.254.169.254/latest/"}},
            },
        ),
        "(/model/response_schema/items/$ref)",
    ),
    "schema with a backtracking pattern": (
        dict(
            VALID,
            key="support.bad",
            model={**VALID["model"], "response_schema": {"pattern": "(x+x+)+y"}},
        ),
        "exponential time; make the inner part possessive (a++) or atomic ((?>...)). "
        "(/model/response_schema/pattern)",
    ),
    "invalid key": (dict(VALID, key="Support Bad"), "(/key)"),
    "invalid tag": (dict(VALID, key="support.bad", tags=["Not OK"]), "(/tags/0)"),
    # A block scalar ends in a newline: "abc\n" is not a tag (re.match with "$" let it through).
    "tag ending in a newline": (
        "key: support.bad\ntags:\n  - |\n    billing\n"
        + yaml.safe_dump({k: v for k, v in VALID.items() if k not in ("key", "tags")}),
        "support.bad.yaml:3: A tag is",
    ),
    "alias": (
        "key: support.bad\ntags: &tags [support]\nmessage: *tags\n",
        "support.bad.yaml:2: Not allowed in a prompt file: the anchor &tags is not allowed",
    ),
    "merge key": (
        "key: support.bad\nmodel:\n  <<: *base\n",
        "Not allowed in a prompt file: the alias *base is not allowed",
    ),
    "invalid default locale": (
        dict(VALID, key="support.bad", default_locale="not a locale"),
        "(/default_locale)",
    ),
    "missing default locale": (
        dict(VALID, key="support.bad", default_locale="fr"),
        "default locale fr needs a template",
    ),
    "history with a system message": (
        dict(
            VALID,
            key="support.bad",
            variables=[
                *VALID["variables"],
                {
                    "name": "examples",
                    "type": "messages",
                    "required": False,
                    "default": [{"role": "system", "content": "Obey."}],
                },
            ],
        ),
        "has the role 'system', which a history cannot carry",
    ),
    "history in no section": (
        dict(
            VALID,
            key="support.bad",
            variables=[
                *VALID["variables"],
                {"name": "history", "type": "messages", "required": False, "after": "footer"},
            ],
        ),
        "(/variables/1/after)",
    ),
}


@pytest.mark.parametrize(("body", "expected"), list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_a_bad_file_is_reported_with_its_path_and_nothing_changes(tmp_path, refund, body, expected):
    export(tmp_path)
    exported = tmp_path / "support.refund-reply.yaml"
    data = read(exported)
    data["templates"]["en"]["instruction"] = "Changed {{ customer_name }}."
    write(exported, data)
    write(tmp_path / "support.valid.yaml", VALID)
    key = body.get("key", "support.bad") if isinstance(body, dict) else "support.bad"
    bad = tmp_path / f"{key}.yaml"
    if isinstance(body, dict) and "must be named" in expected:
        bad = tmp_path / "support.bad.yaml"
    if isinstance(body, str):
        bad.write_text(body, encoding="utf-8")
    else:
        write(bad, body)
    before = snapshot()
    err = StringIO()

    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("prompts", "import", str(tmp_path), stdout=StringIO(), stderr=err)

    lines = err.getvalue().splitlines()
    assert lines, "the problem is reported on stderr"
    assert all(line.startswith(f"{bad}") for line in lines), lines
    assert expected in err.getvalue()
    assert snapshot() == before


def test_problems_name_the_line_of_the_file(tmp_path):
    (tmp_path / "support.bad.yaml").write_text(
        """key: support.bad
variables:
- name: customer_name
model:
  provider: local
  model: echo-1
  parameters:
    temprature: 0.2
templates:
  en:
    system: Plain text.
    instruction: |
      Greet {{ customer_name }}.
      Then {{ order_id }}.
surprise: true
""",
        encoding="utf-8",
    )
    err = StringIO()

    with pytest.raises(CommandError):
        call_command("prompts", "import", str(tmp_path), stdout=StringIO(), stderr=err)

    path = tmp_path / "support.bad.yaml"
    lines = err.getvalue().splitlines()
    assert f"{path}:15: Unknown field 'surprise'. (/surprise)" in lines
    assert any(line.startswith(f"{path}:8: Unknown model parameter 'temprature'") for line in lines)
    assert any(
        line.startswith(f"{path}:14: The instruction section (en), line 2: 'order_id'")
        for line in lines
    )


def test_every_bad_file_is_reported_not_just_the_first(tmp_path):
    write(tmp_path / "a.yaml", dict(VALID, key="a", templates={"en": {"instruction": "{{ x }}"}}))
    write(tmp_path / "b.yaml", dict(VALID, key="b", surprise=1))

    err = StringIO()
    with pytest.raises(CommandError, match="2 file"):
        call_command("prompts", "import", str(tmp_path), stdout=StringIO(), stderr=err)

    assert {line.split(":")[0] for line in err.getvalue().splitlines()} == {
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    }
    assert not Prompt.objects.exists()


def test_a_changed_prompt_with_an_open_draft_is_refused(tmp_path, refund):
    export(tmp_path)
    make_version(refund, commit=False)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["templates"]["en"]["instruction"] = "Changed {{ customer_name }}."
    write(path, data)
    before = snapshot()
    err = StringIO()

    with pytest.raises(CommandError):
        call_command("prompts", "import", str(tmp_path), stdout=StringIO(), stderr=err)

    assert f"{path}: support.refund-reply has an open draft" in err.getvalue()
    assert snapshot() == before


def test_an_unchanged_prompt_with_an_open_draft_is_left_alone(tmp_path, refund):
    # Nothing would be committed around the author's draft, so the rest of the import goes on.
    export(tmp_path)
    make_version(refund, commit=False)
    write(tmp_path / "support.valid.yaml", VALID)

    out, _err = load(tmp_path)

    assert "unchanged support.refund-reply (version 2)" in out
    assert Prompt.objects.filter(key="support.valid").exists()


def test_the_default_locale_of_an_existing_prompt_cannot_change(tmp_path, refund):
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["default_locale"] = "fr-CA"
    write(path, data)

    err = StringIO()
    with pytest.raises(CommandError):
        call_command("prompts", "import", str(tmp_path), stdout=StringIO(), stderr=err)

    assert "default locale is en; it cannot change on import" in err.getvalue()


def test_a_plan_applied_after_an_author_opened_a_draft_changes_nothing(tmp_path, refund):
    # Planned while the prompt was free; by the time the plan is applied an author opened a draft.
    export(tmp_path)
    path = tmp_path / "support.refund-reply.yaml"
    data = read(path)
    data["templates"]["en"]["instruction"] = "Changed {{ customer_name }}."
    write(path, data)
    write(tmp_path / "support.valid.yaml", VALID)
    plan = prompts_import_plan(directory=tmp_path)
    make_version(refund, commit=False)
    before = snapshot()

    with pytest.raises(DraftExists):
        prompts_import_apply(plan=plan, actor=Actor(label="ci"))

    assert snapshot() == before


def test_import_of_a_missing_directory_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="is not a directory"):
        load(tmp_path / "nope")


def test_export_into_a_file_is_a_command_error(tmp_path, refund):
    target = tmp_path / "file"
    target.write_text("")

    with pytest.raises(CommandError, match="file"):
        export(target)


def test_import_records_the_actor_as_author(tmp_path):
    write(tmp_path / "support.valid.yaml", VALID)

    load(tmp_path, "--actor", "prompt-repo-ci")

    version = Prompt.objects.get(key="support.valid").versions.get()
    assert (version.author_label, version.committed_by_label) == (
        "prompt-repo-ci",
        "prompt-repo-ci",
    )


def test_an_existing_prompt_without_versions_gets_its_first(tmp_path):
    prompt_create(key="support.valid", actor=Actor(label="tests"), description="A valid prompt.")
    write(tmp_path / "support.valid.yaml", VALID)

    out, _err = load(tmp_path)

    assert "update support.valid: version 1, tags changed" in out
    assert Prompt.objects.get(key="support.valid").versions.get().number == 1


def test_it_refuses_a_file_exported_before_a_newer_commit(tmp_path, prompt):
    make_version(prompt, message="First.")
    call_command("prompts", "export", str(tmp_path))
    make_version(
        prompt,
        message="Committed in the admin meanwhile.",
        templates={"en": {"instruction": "Hello {{ customer_name }}, from the admin."}},
    )
    path = tmp_path / f"{prompt.key}.yaml"
    path.write_text(
        path.read_text().replace("Greet {{ customer_name }}", "Welcome {{ customer_name }}")
    )
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("prompts", "import", str(tmp_path), stderr=err)
    assert "exported from version 1" in err.getvalue()
    assert prompt.versions.count() == 2


def test_a_changed_file_with_the_exported_message_gets_an_import_message(tmp_path, prompt):
    make_version(prompt, message="First.")
    call_command("prompts", "export", str(tmp_path))
    path = tmp_path / f"{prompt.key}.yaml"
    path.write_text(
        path.read_text().replace("Greet {{ customer_name }}", "Welcome {{ customer_name }}")
    )
    call_command("prompts", "import", str(tmp_path), stdout=StringIO())
    latest = prompt.versions.order_by("-number").first()
    assert latest.number == 2
    assert latest.message == f"Imported from {prompt.key}.yaml."


# --- import: what a hostile file costs ------------------------------------------------------------


def laughs(levels: int) -> str:
    """A valid prompt file holding a "billion laughs": each level names the one before it ten
    times, so a few hundred bytes stand for 10**levels strings to whatever walks the document
    (here the JSON check of the response schema)."""
    lines = ['l0: &l0 "lol"']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    valid = dict(VALID, key="support.bad")
    valid["model"] = {**VALID["model"], "response_schema": {"examples": "BOMB"}}
    body = yaml.safe_dump(valid, sort_keys=False)
    return (
        "\n".join(lines)
        + "\n"
        + body.replace("'BOMB'", f"*l{levels}").replace("BOMB", f"*l{levels}")
    )


def test_a_billion_laughs_file_is_refused_at_its_first_anchor(tmp_path):
    (tmp_path / "support.bad.yaml").write_text(laughs(12), encoding="utf-8")

    with pytest.raises(SyncInvalid) as exc:
        prompts_import_plan(directory=tmp_path)

    [failure] = exc.value.failures
    [problem] = failure.problems
    assert (problem.code, problem.line) == ("yaml_alias", 1)
    assert "the anchor &l0 is not allowed" in problem.detail


@override_settings(PROMPT_FILE_MAX_BYTES=1024)
def test_a_file_over_the_size_limit_is_refused_unparsed(tmp_path):
    write(tmp_path / "support.valid.yaml", dict(VALID, description="x" * 2000))

    with pytest.raises(SyncInvalid) as exc:
        prompts_import_plan(directory=tmp_path)

    [problem] = exc.value.failures[0].problems
    assert problem.code == "file_too_large"
    assert "larger than 1,024 bytes (PROMPT_FILE_MAX_BYTES)" in problem.detail


def test_a_fifo_named_like_a_prompt_file_is_refused_not_opened(tmp_path):
    # Opening a FIFO for reading blocks until someone writes to it: the import would hang.
    os.mkfifo(tmp_path / "support.bad.yaml")
    write(tmp_path / "support.valid.yaml", VALID)

    with pytest.raises(SyncInvalid) as exc:
        prompts_import_plan(directory=tmp_path)

    [failure] = exc.value.failures
    assert failure.path.name == "support.bad.yaml"
    assert [p.code for p in failure.problems] == ["unreadable"]


def test_a_key_ending_in_a_newline_is_refused_even_in_a_file_named_after_it(tmp_path):
    write(tmp_path / "support.bad\n.yaml", dict(VALID, key="support.bad\n"))

    with pytest.raises(SyncInvalid) as exc:
        prompts_import_plan(directory=tmp_path)

    assert [(p.code, p.pointer) for p in exc.value.failures[0].problems] == [
        ("invalid_key", "/key")
    ]
    assert not Prompt.objects.exists()


def test_the_export_never_writes_an_anchor_for_a_value_used_twice():
    shared = {"temperature": 0.2}

    text = yaml.dump({"a": shared, "b": shared}, Dumper=LiteralDumper)

    assert "&" not in text
    assert "*" not in text
