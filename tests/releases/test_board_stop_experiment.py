"""The release board's row of a running experiment offers "Stop experiment" (issue 13, item 9),
leading to the stop's confirmation page; other rows and readers without the deploy permission
get no such button.

Data: the ``released`` fixture (tests/conftest.py); staging runs an experiment of v1 against v2.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from registry.actors import Actor
from releases import services
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment(released):
    return services.release_experiment_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        name="tone",
        variants=[("plain", 1, Decimal(50)), ("warm", 2, Decimal(50))],
        actor=Actor(label="release-manager"),
        override_gates=True,
        reason="tests",
    )


def board(client: Client, environment: str) -> str:
    response = client.get(
        reverse("admin:releases_release_changelist"), {"environment": environment}
    )
    assert response.status_code == 200
    return response.content.decode()


def stop_url(release) -> str:
    return reverse("admin:releases_release_experiment_stop", args=[release.pk])


def test_a_running_experiments_row_offers_to_stop_it(client: Client, released, experiment) -> None:
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(user)

    staging = board(client, "staging")
    production = board(client, "production")

    assert f'href="{stop_url(experiment)}">Stop experiment</a>' in staging
    # "Roll back" stays the row's last button.
    row = staging.split(stop_url(experiment), 1)[1]
    assert reverse("admin:releases_release_rollback", args=[experiment.pk]) in row
    assert "Stop experiment" not in production
    page = client.get(stop_url(experiment))
    assert page.status_code == 200
    assert "Stop the experiment" in page.content.decode()


def test_readers_who_may_not_deploy_get_no_stop_button(
    client: Client, released, experiment
) -> None:
    reader = UserFactory(username="viewer", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(codename="view_release"))
    client.force_login(reader)

    staging = board(client, "staging")

    assert "tone" in staging
    assert stop_url(experiment) not in staging
