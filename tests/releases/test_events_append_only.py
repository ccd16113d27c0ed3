"""The audit log is append-only for every writer (STYLE R5): the database itself refuses to
change or delete a release event, on PostgreSQL and on SQLite. And who may do what: the
"Release managers" group changes releases and never prompt content; authors never release."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction

from releases.models import ReleaseEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PERMISSIONS = import_module(
    "releases.migrations.0003_default_environments_and_release_managers"
).PERMISSIONS


@pytest.fixture
def event(released) -> ReleaseEvent:
    return ReleaseEvent.objects.filter(release=released.release("production")).latest("id")


def refused(action) -> None:
    # A savepoint, so that PostgreSQL's aborted statement does not poison the test transaction.
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        action()


def test_a_queryset_update_is_refused(event):
    refused(lambda: ReleaseEvent.objects.filter(pk=event.pk).update(reason="Rewritten."))

    assert ReleaseEvent.objects.get(pk=event.pk).reason == "setup"


def test_a_queryset_delete_is_refused(event):
    refused(lambda: ReleaseEvent.objects.filter(pk=event.pk).delete())

    assert ReleaseEvent.objects.filter(pk=event.pk).exists()


def test_saving_a_changed_event_is_refused(event):
    event.after = {"stable": 3}

    refused(event.save)

    assert ReleaseEvent.objects.get(pk=event.pk).after["stable"] == 1


def test_raw_sql_is_refused_too(event):
    table = ReleaseEvent._meta.db_table

    def delete_everything() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table}")

    refused(delete_everything)

    assert ReleaseEvent.objects.count() == 3


def test_appending_still_works(released, event):
    count = ReleaseEvent.objects.count()

    ReleaseEvent.objects.create(
        release=event.release,
        action=ReleaseEvent.Action.DEPLOY,
        revision=event.revision + 1,
        actor_label="tests",
        before=event.after,
        after=event.after,
    )

    assert ReleaseEvent.objects.count() == count + 1


# --- groups --------------------------------------------------------------------------------------


def codenames(group: Group) -> set[str]:
    return {
        f"{p.content_type.app_label}.{p.codename}"
        for p in group.permissions.select_related("content_type")
    }


def test_release_managers_have_exactly_the_permissions_of_their_migrations(db):
    from importlib import import_module

    runs = import_module("runs.migrations.0003_release_managers_read_calls")
    overrides = import_module("releases.migrations.0006_release_managers_override_gates")
    evaluations = import_module("evaluations.migrations.0004_eval_and_analysis_permissions")
    expected = (
        {
            f"{app}.{action}_{model}"
            for app, models in PERMISSIONS.items()
            for model, actions in models.items()
            for action in actions
        }
        | {f"runs.{codename}" for codename in runs.CODENAMES}
        | {f"releases.{overrides.CODENAME}"}
        | {f"evaluations.{c}" for c in evaluations.GRANTS["Release managers"]}
    )

    assert codenames(Group.objects.get(name="Release managers")) == expected


@pytest.fixture
def release_manager(db):
    """Bob ships releases: deploys, ramps, rolls back; reads prompts, never edits them."""
    user = UserFactory(username="bob", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    return user


@pytest.mark.parametrize(
    "permission", ["releases.deploy_release", "releases.rollback_release", "releases.view_release"]
)
def test_a_release_manager_may_release(release_manager, permission):
    assert release_manager.has_perm(permission)


@pytest.mark.parametrize(
    "permission",
    [
        "registry.add_prompt",
        "registry.change_prompt",
        "registry.delete_prompt",
        "registry.add_promptversion",
        "registry.change_promptversion",
        "registry.commit_promptversion",
        "registry.change_localizedtemplate",
        "registry.change_variable",
        "releases.change_releaseevent",
        "releases.delete_releaseevent",
        "releases.delete_release",
    ],
)
def test_a_release_manager_cannot_change_prompt_content_or_history(release_manager, permission):
    assert not release_manager.has_perm(permission)


@pytest.mark.parametrize(
    "permission",
    [
        "releases.change_release",
        "releases.deploy_release",
        "releases.rollback_release",
        "releases.add_releaseevent",
    ],
)
def test_an_author_cannot_change_releases(author, permission):
    assert not author.has_perm(permission)
