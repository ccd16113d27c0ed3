"""The database itself refuses to change a committed version (migration 0002, STYLE R5).

These tests bypass the services on purpose: a shell, a raw ``QuerySet.update()`` or a future bug
must meet the same wall. Both vendors refuse an UPDATE of a committed version's content and any
INSERT or UPDATE of its variables and templates; PostgreSQL also refuses their DELETE.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import IntegrityError, transaction

from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable
from tests.factories import UserFactory, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def committed(prompt) -> PromptVersion:
    return make_version(prompt, templates={"en": {"instruction": "Hi {{ customer_name }}."}})


@pytest.fixture
def draft(committed) -> PromptVersion:
    return make_version(committed.prompt, commit=False)


def refused(action) -> None:
    """Runs ``action`` in a savepoint and expects the database to refuse it."""
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        action()


@pytest.mark.parametrize(
    "changes",
    [
        {"message": "Rewritten history."},
        {"content_hash": "0" * 64},
        {"parameters": {"temperature": 1.5}},
        {"model_name": "another-model"},
        {"provider": "elsewhere"},
        {"fallbacks": [{"provider": "local", "model": "echo-small"}]},
        {"response_schema": {"type": "object"}},
        {"tools": [{"type": "function", "function": {"name": "added_later"}}]},
        {"tool_choice": "required"},
        {"parallel_tool_calls": False},
        {"cache": {"exact": {"ttl_seconds": 60}}},
        {"status": "draft", "committed_at": None},
        {"number": 99},
        {"author_label": "someone else"},
    ],
    ids=lambda changes: ",".join(changes),
)
def test_an_update_of_a_committed_version_is_refused(committed, changes: dict[str, Any]):
    refused(lambda: PromptVersion.objects.filter(pk=committed.pk).update(**changes))

    committed_row = PromptVersion.objects.get(pk=committed.pk)
    assert committed_row.message == "A version."
    assert committed_row.content_hash == committed.content_hash


def test_an_update_of_a_committed_versions_template_is_refused(committed):
    refused(
        lambda: LocalizedTemplate.objects.filter(version=committed).update(instruction="Changed.")
    )

    assert committed.templates.get().instruction == "Hi {{ customer_name }}."


def test_moving_a_template_onto_a_committed_version_is_refused(committed, draft):
    refused(lambda: LocalizedTemplate.objects.filter(version=draft).update(version=committed))


def test_an_update_of_a_committed_versions_variable_is_refused(committed):
    refused(lambda: Variable.objects.filter(version=committed).update(type="integer"))

    assert committed.variables.get().type == "string"


def test_adding_a_template_to_a_committed_version_is_refused(committed):
    refused(
        lambda: LocalizedTemplate.objects.create(
            version=committed, locale="fr", instruction="Salut.", source_hash="x"
        )
    )

    assert list(committed.templates.values_list("locale", flat=True)) == ["en"]


def test_adding_a_variable_to_a_committed_version_is_refused(committed):
    refused(lambda: Variable.objects.create(version=committed, name="tone", position=1))

    assert committed.variables.count() == 1


@pytest.mark.postgres
def test_deleting_a_committed_versions_templates_and_variables_is_refused(committed):
    refused(lambda: LocalizedTemplate.objects.filter(version=committed).delete())
    refused(lambda: Variable.objects.filter(version=committed).delete())

    assert committed.templates.count() == committed.variables.count() == 1


@pytest.mark.postgres
def test_deleting_a_committed_version_is_refused(committed):
    refused(lambda: PromptVersion.objects.filter(pk=committed.pk).delete())
    refused(lambda: Prompt.objects.filter(pk=committed.prompt_id).delete())

    assert PromptVersion.objects.filter(pk=committed.pk).exists()


def test_a_draft_stays_freely_editable_through_the_orm(draft, committed):
    PromptVersion.objects.filter(pk=draft.pk).update(message="Edited.", parameters={"seed": 1})
    LocalizedTemplate.objects.filter(version=draft).update(instruction="Edited.")
    Variable.objects.filter(version=draft).update(description="Edited.")
    LocalizedTemplate.objects.create(version=draft, locale="fr", source_hash="x")
    Variable.objects.create(version=draft, name="tone", position=1)
    LocalizedTemplate.objects.filter(version=draft, locale="fr").delete()
    Variable.objects.filter(version=draft, name="tone").delete()

    draft.refresh_from_db()
    assert (draft.message, draft.parameters) == ("Edited.", {"seed": 1})
    assert draft.templates.get().instruction == "Edited."
    PromptVersion.objects.filter(pk=draft.pk).delete()
    assert not PromptVersion.objects.filter(pk=draft.pk).exists()


def test_committing_a_draft_through_the_orm_is_allowed_and_freezes_it(draft):
    from django.utils import timezone

    PromptVersion.objects.filter(pk=draft.pk).update(
        status="committed", committed_at=timezone.now()
    )

    refused(lambda: PromptVersion.objects.filter(pk=draft.pk).update(message="Later."))


def test_deleting_the_author_of_a_committed_version_keeps_the_label(prompt):
    from registry.actors import Actor

    alice = UserFactory(username="alice")
    version = make_version(prompt, actor=Actor.for_user(alice))
    assert (version.author_id, version.committed_by_id) == (alice.pk, alice.pk)

    alice.delete()

    version.refresh_from_db()
    assert (version.author_id, version.committed_by_id) == (None, None)
    assert (version.author_label, version.committed_by_label) == ("alice", "alice")


def test_prompt_authors_have_exactly_the_permissions_of_their_migrations():
    migration = importlib.import_module("registry.migrations.0003_prompt_authors_group")
    datasets = importlib.import_module("evaluations.migrations.0002_prompt_authors_write_datasets")
    evals = importlib.import_module("evaluations.migrations.0004_eval_and_analysis_permissions")
    cases = importlib.import_module("evaluations.migrations.0009_prompt_authors_remove_cases")
    playground = importlib.import_module("runs.migrations.0007_prompt_authors_run_the_playground")
    expected = {
        f"{action}_{model}" for model, actions in migration.PERMISSIONS for action in actions
    }

    group = Group.objects.get(name="Prompt authors")

    granted = set(group.permissions.values_list("content_type__app_label", "codename"))
    assert granted == {("registry", codename) for codename in expected} | {
        ("evaluations", codename)
        for codename in (*datasets.CODENAMES, *evals.GRANTS["Prompt authors"], *cases.CODENAMES)
    } | {("runs", codename) for codename in playground.CODENAMES}
    assert "commit_promptversion" in expected
    assert not {"delete_prompt", "add_group"} & {codename for _app, codename in granted}
    assert Permission.objects.filter(codename="commit_promptversion").exists()
