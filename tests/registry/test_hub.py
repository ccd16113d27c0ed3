"""The prompt list as a dashboard and a prompt's page as a hub (issue 13, item 2).

Personas (STYLE R14):
- ``root``: a superuser; sees every column and panel.
- ``rita`` (Release managers): reads prompts, releases, calls and A/B results; no datasets.
- ``alice`` (``author``, Prompt authors): writes prompts and versions, datasets and eval runs;
  reads no release and no call, so neither the environments' columns nor those panels show.

Data: the ``released`` fixture (tests/conftest.py): support.refund-reply with committed v1–v3,
v2 stable in staging, v1 stable in production, development never released.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.evalruns.services import eval_run_start
from registry.actors import Actor
from registry.models import Prompt
from registry.selectors import prompt_list
from releases import services
from runs.events import events_ingest
from tests.evaluations.evalrun_scene import CASES, jsonl
from tests.factories import PromptFactory, UserFactory, event, make_version
from tests.releases.test_admin import text

pytestmark = pytest.mark.django_db

MANAGER = Actor(label="release-manager")


@pytest.fixture
def root(client: Client) -> Client:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def rita(client: Client) -> Client:
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    client.force_login(user)
    return client


@pytest.fixture
def alice(client: Client, author) -> Client:
    client.force_login(author)
    return client


def result_table(response) -> str:
    """The changelist's table alone (the sidebar links every app too)."""
    body = response.content.decode()
    start = body.index('<table id="result_list"')
    return body[start : body.index("</table>", start)]


def changelist() -> str:
    return reverse("admin:registry_prompt_changelist")


def page(prompt: Prompt) -> str:
    return reverse("admin:registry_prompt_change", args=[prompt.pk])


def release_url(released, environment: str) -> str:
    return reverse("admin:releases_release_change", args=[released.release(environment).pk])


def busy(released) -> None:
    """Production as a release manager leaves it mid-week: a canary, an experiment, a shadow."""
    production = released.environments["production"]
    prompt = released.prompt
    services.release_canary_start(
        prompt=prompt,
        environment=production,
        version=2,
        percent=Decimal(25),
        actor=MANAGER,
        override_gates=True,
        reason="tests",
    )
    services.release_shadow_start(
        prompt=prompt,
        environment=released.environments["staging"],
        versions=[3],
        sample_percent=Decimal(10),
        actor=MANAGER,
    )
    services.release_experiment_start(
        prompt=prompt,
        environment=released.environments["staging"],
        name="tone",
        variants=[("plain", 1, Decimal(50)), ("warm", 2, Decimal(50))],
        actor=MANAGER,
        override_gates=True,
        reason="tests",
    )


# --- the prompt list ------------------------------------------------------------------------


def test_the_list_has_a_column_per_environment_with_what_is_served(root: Client, released) -> None:
    busy(released)
    PromptFactory(key="sales.follow-up")

    response = root.get(changelist())

    body = response.content.decode()
    headers = [h.lower() for h in ("development", "staging", "production")]
    assert all(f"column-env_{h}" in body for h in headers)
    row = text(response).split("support.refund-reply", 1)[1].split("sales.follow-up")[0]
    # staging: v2 stable, a shadow of v3 and the experiment; production: v1 and the canary at 25 %
    assert "v2 experiment tone shadows v3 @ 10 %" in row
    assert "v1 canary v2 @ 25 %" in row
    assert release_url(released, "production") in body
    assert release_url(released, "staging") in body


def test_a_prompt_never_released_shows_dashes(root: Client, environments) -> None:
    prompt = PromptFactory(key="sales.follow-up")

    response = root.get(changelist())

    table = result_table(response)
    assert [p.pk for p in response.context["cl"].result_list] == [prompt.pk]
    assert table.count('<td class="field-env_') == 3
    assert table.count(">—</td>") == 3  # nothing served in any environment
    assert reverse("admin:releases_release_changelist") not in table


def test_the_list_costs_the_same_queries_for_2_or_20_released_prompts(
    root: Client, environments, django_assert_max_num_queries
) -> None:
    def released_prompts(n: int) -> None:
        for _ in range(n):
            prompt = PromptFactory()
            make_version(prompt)
            for name in ("staging", "production"):
                services.release_deploy(
                    prompt=prompt, environment=environments[name], version=1, actor=MANAGER
                )

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = root.get(changelist())
        assert response.status_code == 200
        return len(queries)

    released_prompts(2)
    few = count()
    released_prompts(18)
    many = count()

    assert few == many
    with django_assert_max_num_queries(10):
        root.get(changelist())


def test_authors_who_may_not_read_releases_get_no_environment_columns(
    alice: Client, released
) -> None:
    response = alice.get(changelist())

    assert response.status_code == 200
    assert "column-env_" not in response.content.decode()


def test_search_covers_key_description_and_tags(root: Client, environments) -> None:
    PromptFactory(key="support.refund-reply", description="Answers refunds.", tags=["billing"])
    PromptFactory(key="sales.follow-up", description="Follows up a lead.", tags=["sales", "crm"])
    PromptFactory(key="search.rewrite", description="Rewrites queries.", tags=["search"])

    def keys(query: str) -> list[str]:
        response = root.get(changelist(), {"q": query})
        assert response.status_code == 200
        return [p.key for p in response.context["cl"].result_list]

    assert keys("billing") == ["support.refund-reply"]  # a tag
    assert keys("CRM") == ["sales.follow-up"]  # a tag, any case
    assert keys("lead") == ["sales.follow-up"]  # the description
    assert keys("rewrite") == ["search.rewrite"]  # the key
    assert keys("sales lead") == ["sales.follow-up"]  # every word must match
    assert keys("sales refunds") == []
    assert keys("nothing-like-this") == []


def test_the_selector_searches_tags_too(db) -> None:
    PromptFactory(key="a", description="One.", tags=["billing"])
    PromptFactory(key="b", description="Two.", tags=["support"])

    assert [p.key for p in prompt_list(search="bill")] == ["a"]
    assert [p.key for p in prompt_list(search="port")] == ["b"]


# --- the prompt's page ----------------------------------------------------------------------


def measured(released) -> None:
    """A dataset, a queued eval run, a few reported calls and the experiment (``busy``)."""
    busy(released)
    golden = dataset_create(prompt=released.prompt, name="golden", actor=MANAGER)
    dataset_import(dataset=golden, content=jsonl(CASES), format="jsonl")
    eval_run_start(prompt=released.prompt, version=3, dataset_name="golden", actor=MANAGER)
    result = events_ingest(events=[event(), event(status="error"), event(version=1)])
    assert len(result.accepted) == 3


def test_the_page_shows_every_panel_to_a_superuser(root: Client, released) -> None:
    measured(released)

    response = root.get(page(released.prompt))

    assert response.status_code == 200
    titles = [p.title for p in response.context["panels"]]
    assert titles == [
        "Releases",
        "Versions",
        "Datasets",
        "Recent eval runs",
        "Recent calls",
        "A/B results",
    ]
    shown = text(response)
    assert "development never released" in shown
    assert "staging v2 — tone: plain v1 @ 50 %, warm v2 @ 50 % v3 @ 10 %" in shown
    assert "production v1 v2 @ 25 % — —" in shown
    body = response.content.decode()
    for environment in ("staging", "production"):
        assert release_url(released, environment) in body
    assert reverse("admin:releases_release_prompt_history", args=[released.prompt.pk]) in body
    assert "golden 6 1 1" in shown  # cases, holdout, must pass
    assert "v3 golden Author run Queued" in shown
    for call in ("staging v2 — ok", "staging v2 — error", "staging v1 — ok"):
        assert call in shown
    assert (
        reverse("admin:runs_call_changelist") + f"?prompt__id__exact={released.prompt.pk}" in body
    )
    assert (
        reverse("admin:evaluations_experiment_results", args=[released.release("staging").pk])
        in body
    )
    assert "staging tone 1" in shown


def test_a_release_manager_sees_releases_runs_calls_and_ab_results_not_datasets(
    rita: Client, released
) -> None:
    measured(released)

    response = rita.get(page(released.prompt))

    titles = [p.title for p in response.context["panels"]]
    assert titles == ["Releases", "Versions", "Recent eval runs", "Recent calls", "A/B results"]
    stop = reverse("admin:releases_release_experiment_stop", args=[released.release("staging").pk])
    assert stop in response.content.decode()


def test_an_author_sees_versions_datasets_and_eval_runs_and_the_next_step(
    alice: Client, released
) -> None:
    measured(released)

    response = alice.get(page(released.prompt))

    titles = [p.title for p in response.context["panels"]]
    assert titles == ["Versions", "Datasets", "Recent eval runs"]
    assert response.context["next_step"].label == "New draft from v3"
    assert "Add a dataset" in text(response)


def test_the_page_costs_the_same_queries_for_few_or_many_calls(
    root: Client, released, django_assert_max_num_queries
) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            response = root.get(page(released.prompt))
        assert response.status_code == 200
        return len(queries)

    events_ingest(events=[event()])
    count()  # the first page of a process also fills Django's content type cache
    few = count()
    events_ingest(events=[event() for _ in range(30)])
    dataset_create(prompt=released.prompt, name="second", actor=MANAGER)
    many = count()

    assert few == many
    assert len(root.get(page(released.prompt)).context["panels"][4].rows) == 10


def test_a_page_with_nothing_yet_says_so(root: Client, environments) -> None:
    prompt = PromptFactory(key="sales.follow-up")

    response = root.get(page(prompt))

    shown = text(response)
    assert "No version yet: write the first one." in shown
    assert "No dataset yet" in shown
    assert "No call yet" in shown
    assert "No experiment yet" in shown
    assert shown.count("never released") == 3


# --- after adding a prompt --------------------------------------------------------------------


def test_after_adding_a_prompt_writing_its_first_version_is_one_click(
    alice: Client, environments
) -> None:
    response = alice.post(
        reverse("admin:registry_prompt_add"),
        {
            "key": "sales.follow-up",
            "description": "Follows up.",
            "default_locale": "en",
            "tags": "",
        },
        follow=True,
    )

    prompt = Prompt.objects.get(key="sales.follow-up")
    assert response.redirect_chain == [(page(prompt), 302)]
    first = f"{reverse('admin:registry_promptversion_add')}?prompt={prompt.pk}"
    assert response.context["next_step"].url == first
    assert response.context["next_step"].label == "Write the first version"
    assert f'href="{first}"' in response.content.decode()
    [message] = [str(m) for m in get_messages(response.wsgi_request)] or [""]
    assert "write its first version" in message
    assert alice.get(first).status_code == 200


def test_save_and_add_another_still_adds_another(alice: Client, environments) -> None:
    response = alice.post(
        reverse("admin:registry_prompt_add"),
        {
            "key": "sales.follow-up",
            "description": "",
            "default_locale": "en",
            "tags": "",
            "_addanother": "1",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:registry_prompt_add")


def test_a_refused_prompt_stays_on_the_add_page(alice: Client, environments) -> None:
    response = alice.post(
        reverse("admin:registry_prompt_add"),
        {"key": "Not A Key!", "description": "", "default_locale": "en", "tags": ""},
    )

    assert response.status_code == 200
    assert "key" in response.context["adminform"].form.errors
    assert not Prompt.objects.exists()


def test_the_draft_column_is_the_next_step(alice: Client, released) -> None:
    make_version(released.prompt, commit=False)
    fresh = PromptFactory(key="sales.follow-up")

    body = alice.get(changelist()).content.decode()

    by_number = reverse("admin:registry_promptversion_by_number", args=[released.prompt.pk, 4])
    assert f'href="{by_number}"' in body
    assert "v4 (draft)" in body
    assert f"{reverse('admin:registry_promptversion_add')}?prompt={fresh.pk}" in body
