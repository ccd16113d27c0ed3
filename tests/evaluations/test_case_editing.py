"""Cases as a working tool (issue 13, item 8): one case added, edited and removed in the admin,
checked as an imported row is; a call added to a dataset from its page; and what an edit must not
do: rewrite what an earlier eval run's report shows, or let a stale run count for a gate.

Personas (STYLE R14):
- ``author`` (alice, tests/conftest.py): in "Prompt authors": adds, changes and removes cases
  (migrations evaluations/0002 and 0009), never sees a holdout case's content.
- ``both`` (rita): in "Release managers" and "Prompt authors": reads calls and holdout cases, adds
  cases; the one who adds a call to a dataset.
- ``manager_only`` (mo): "Release managers" alone: reads calls, may not add a case.
- ``outsider`` (carol): staff in no group.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from evaluations.datasets.casefiles import cases_parse
from evaluations.datasets.selectors import dataset_declared_variables
from evaluations.datasets.services import (
    CaseInvalid,
    case_add,
    case_remove,
    case_update,
    dataset_create,
    dataset_import,
)
from evaluations.evalruns.report import eval_run_report
from evaluations.models import Case, Dataset, EvalResult
from registry.actors import Actor
from tests.factories import PromptFactory, UserFactory, make_version
from tests.runs.test_selectors import make_call

pytestmark = pytest.mark.django_db

ACTOR = Actor(label="tests")


def case(name: str, **extra) -> dict:
    return {
        "variables": {"customer_name": name},
        "expectation": {"scorer": "contains", "value": name},
        **extra,
    }


@pytest.fixture
def dataset(released) -> Dataset:
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)
    dataset_import(
        dataset=dataset,
        content="".join(
            json.dumps(row) + "\n"
            for row in (case("Ada", key="ada"), case("Ed", key="held", holdout=True))
        ),
        format="jsonl",
    )
    return dataset


def user_in(username: str, *groups: str):
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def author_client(author) -> Client:
    return logged_in(author)


@pytest.fixture
def both_client(db) -> Client:
    return logged_in(user_in("rita", "Release managers", "Prompt authors"))


def form_data(**fields) -> dict:
    data = {
        "key": "",
        "variables": json.dumps({"customer_name": "Bo"}),
        "expectation": json.dumps({"scorer": "contains", "value": "Bo"}),
        "locale": "",
    }
    data.update(fields)
    return {name: value for name, value in data.items() if value is not False}


def add_url() -> str:
    return reverse("admin:evaluations_case_add")


def change_url(obj: Case) -> str:
    return reverse("admin:evaluations_case_change", args=[obj.pk])


def dataset_url(dataset: Dataset) -> str:
    return reverse("admin:evaluations_dataset_change", args=[dataset.pk])


# --- the services: one validation path ----------------------------------------------------------


def test_a_case_is_checked_as_an_imported_row_is_and_nothing_is_stored(dataset):
    bad = {
        "key": "bad key",
        "variables": {"customer_nam": "Bo"},
        "expectation": {"scorer": "contains"},
        "locale": "xx-!!",
        "colour": "red",
    }
    _, imported = cases_parse(
        content=json.dumps(bad) + "\n",
        format="jsonl",
        specs=dataset_declared_variables(prompt=dataset.prompt),
    )

    with pytest.raises(CaseInvalid) as refused:
        case_add(dataset=dataset, data=bad, actor=ACTOR)

    assert [(p.code, p.detail, p.pointer) for p in refused.value.problems] == [
        (p.code, p.detail, p.pointer) for p in imported
    ]
    assert {p.pointer.split("/")[1] for p in refused.value.problems} >= {
        "key",
        "variables",
        "expectation",
        "locale",
        "colour",
    }
    assert dataset.cases.count() == 2


def test_a_key_the_dataset_has_is_refused(dataset):
    with pytest.raises(CaseInvalid) as refused:
        case_add(dataset=dataset, data=case("Bo", key="ada"), actor=ACTOR)

    assert [p.code for p in refused.value.problems] == ["key_exists"]
    assert dataset.cases.get(key="ada").variables == {"customer_name": "Ada"}


def test_an_added_case_comes_last_with_a_generated_key_and_moves_the_dataset_on(dataset):
    before = Dataset.objects.get(pk=dataset.pk).updated_at

    added = case_add(dataset=dataset, data=case("Bo"), actor=ACTOR)

    assert added.key.startswith("case-")
    assert list(dataset.cases.order_by("position").values_list("key", flat=True)) == [
        "ada",
        "held",
        added.key,
    ]
    assert Dataset.objects.get(pk=dataset.pk).updated_at > before


def test_an_edit_keeps_the_key_and_an_unchanged_save_leaves_the_dataset_alone(dataset):
    ada = dataset.cases.get(key="ada")
    before = Dataset.objects.get(pk=dataset.pk).updated_at

    unchanged = case_update(case=ada, data=case("Ada"), actor=ACTOR)
    assert not unchanged
    assert Dataset.objects.get(pk=dataset.pk).updated_at == before

    changed = case_update(case=ada, data=case("Ada", key="renamed", must_pass=True), actor=ACTOR)

    ada.refresh_from_db()
    assert changed
    assert (ada.key, ada.must_pass) == ("ada", True)
    assert Dataset.objects.get(pk=dataset.pk).updated_at > before


def test_an_edit_is_refused_whole_when_the_case_is_not_valid(dataset):
    ada = dataset.cases.get(key="ada")

    with pytest.raises(CaseInvalid) as refused:
        case_update(case=ada, data={"variables": {}, "expectation": {"scorer": "x"}}, actor=ACTOR)

    assert {p.pointer for p in refused.value.problems} == {
        "/variables/customer_name",
        "/expectation/scorer",
    }
    ada.refresh_from_db()
    assert ada.variables == {"customer_name": "Ada"}


@pytest.mark.usefixtures("eager")
def test_an_edit_after_a_run_does_not_rewrite_its_report_and_the_run_stops_counting(
    released, golden, run_now
):
    run = run_now(prompt=released.prompt, version=1)
    greet = golden.cases.get(key="greet-ada")
    scored = EvalResult.objects.get(run=run, case_key="greet-ada")
    assert (scored.variables, scored.expectation) == (greet.variables, greet.expectation)

    case_update(
        case=greet,
        data={
            "variables": {"customer_name": "Zed"},
            "expectation": {"scorer": "contains", "value": "Zed"},
        },
        actor=ACTOR,
    )
    case_remove(case=golden.cases.get(key="name-cy"), actor=ACTOR)

    rows = {row.key: row for row in eval_run_report(run).rows}
    assert rows["greet-ada"].variables == {"customer_name": "Ada"}  # as it was scored
    assert rows["name-cy"].variables == {"customer_name": "Cy"}  # removed since: still shown
    assert EvalResult.objects.get(run=run, case_key="name-cy").case is None
    golden.refresh_from_db()
    assert run.dataset_updated_at != golden.updated_at  # a gate no longer counts this run


# --- the admin: add, edit, remove a case ---------------------------------------------------------


def test_prompt_authors_may_remove_cases_by_migration(author):
    assert author.has_perm("evaluations.delete_case")
    assert not author.has_perm("evaluations.delete_dataset")


def test_an_author_adds_a_case_from_the_dataset_page(author_client, dataset):
    page = author_client.get(dataset_url(dataset)).content.decode()
    assert f'href="{add_url()}?dataset={dataset.pk}"' in page
    form = author_client.get(add_url(), {"dataset": dataset.pk})
    assert form.context["adminform"].form.initial["dataset"] == str(dataset.pk)

    response = author_client.post(add_url(), form_data(dataset=dataset.pk, key="bo"))

    assert response.status_code == 302
    assert response["Location"] == dataset_url(dataset)
    added = dataset.cases.get(key="bo")
    assert (added.variables, added.position) == ({"customer_name": "Bo"}, 2)
    entry = LogEntry.objects.get(object_id=str(added.pk), content_type__model="case")
    assert (entry.action_flag, entry.user.username) == (ADDITION, "alice")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"variables": "{'customer_name': 'Bo'}"}, "variables", "not valid JSON"),
        ({"variables": '{"customer_nam": "Bo"}'}, "variables", "customer_nam"),
        ({"expectation": '{"scorer": "sounds-like"}'}, "expectation", "Unknown scorer"),
        ({"expectation": "[1, 2]"}, "expectation", "must be a JSON object"),
        ({"key": "ada"}, "key", "has a case 'ada' already"),
        ({"key": "no spaces"}, "key", "must be at most"),
        ({"locale": "not a locale!"}, "locale", ""),
    ],
)
def test_a_bad_case_is_refused_in_place_and_nothing_changes(
    author_client, dataset, fields, field, message
):
    response = author_client.post(add_url(), form_data(dataset=dataset.pk, **fields))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors, errors
    assert message in " ".join(errors[field])
    assert dataset.cases.count() == 2


def test_a_case_of_a_prompt_with_nothing_committed_is_refused(author_client):
    prompt = PromptFactory()
    empty = dataset_create(prompt=prompt, name="golden", actor=ACTOR)

    response = author_client.post(add_url(), form_data(dataset=empty.pk))

    assert response.status_code == 200
    assert "no committed version yet" in str(response.context["adminform"].form.non_field_errors())
    assert not empty.cases.exists()


def test_an_author_edits_a_case_but_not_its_key(author_client, dataset):
    ada = dataset.cases.get(key="ada")
    page = author_client.get(change_url(ada))
    assert "key" not in page.context["adminform"].form.fields  # shown, read-only

    response = author_client.post(
        change_url(ada),
        form_data(
            key="changed",
            variables='{"customer_name": "Ada", "order_total": 12.5}',
            must_pass="on",
        ),
    )

    assert response.status_code == 302
    ada.refresh_from_db()
    assert (ada.key, ada.variables, ada.must_pass) == (
        "ada",
        {"customer_name": "Ada", "order_total": 12.5},
        True,
    )
    assert LogEntry.objects.filter(object_id=str(ada.pk), action_flag=CHANGE).exists()


def test_an_author_may_not_change_or_remove_a_holdout_case_a_release_manager_may(
    author_client, both_client, dataset
):
    held = dataset.cases.get(key="held")

    page = author_client.get(change_url(held)).content.decode()
    assert "frozen: a holdout case" in page
    assert "Ed" not in page
    refused = author_client.post(change_url(held), form_data(holdout="on"))
    assert refused.status_code == 403
    delete = reverse("admin:evaluations_case_delete", args=[held.pk])
    assert author_client.post(delete, {"post": "yes"}).status_code == 403

    assert both_client.post(change_url(held), form_data(holdout="on")).status_code == 302
    held.refresh_from_db()
    assert held.variables == {"customer_name": "Bo"}


def test_an_author_removes_a_case_through_the_service(author_client, dataset):
    ada = dataset.cases.get(key="ada")
    before = Dataset.objects.get(pk=dataset.pk).updated_at

    response = author_client.post(
        reverse("admin:evaluations_case_delete", args=[ada.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not dataset.cases.filter(key="ada").exists()
    assert Dataset.objects.get(pk=dataset.pk).updated_at > before
    assert LogEntry.objects.filter(object_id=str(ada.pk), action_flag=DELETION).exists()


def test_staff_without_case_permissions_may_not_add_one(dataset):
    outsider = logged_in(user_in("carol"))

    assert outsider.get(add_url()).status_code == 403
    assert outsider.post(add_url(), form_data(dataset=dataset.pk)).status_code == 403
    assert dataset.cases.count() == 2


# --- a call, added to a dataset -------------------------------------------------------------------


def from_call_url(call) -> str:
    return reverse("admin:evaluations_case_from_call", args=[call.pk])


def call_url(call) -> str:
    return reverse("admin:runs_call_change", args=[call.pk])


def test_a_call_is_added_to_a_dataset_from_its_page(both_client, released, dataset):
    call = make_call(
        released,
        inputs={"customer_name": "Flo", "order_total": 9.5},
        output="Hello Flo, <b>your refund</b> is on its way.",
    )

    page = both_client.get(call_url(call)).content.decode()
    assert f'href="{from_call_url(call)}"' in page
    form = both_client.get(from_call_url(call))
    assert form.status_code == 200
    initial = form.context["form"].initial
    assert json.loads(initial["variables"]) == {"customer_name": "Flo", "order_total": 9.5}
    assert json.loads(initial["expectation"]) == {
        "scorer": "similarity",
        "value": "Hello Flo, <b>your refund</b> is on its way.",
        "threshold": 0.8,
    }
    assert "Hello Flo, &lt;b&gt;your refund&lt;/b&gt;" in form.content.decode()
    assert "<b>your refund</b>" not in form.content.decode()

    response = both_client.post(
        from_call_url(call),
        {
            "dataset": dataset.pk,
            "key": "flo-refund",
            "variables": initial["variables"],
            "expectation": json.dumps({"scorer": "contains", "value": "refund"}),
            "locale": "",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == dataset_url(dataset)
    added = dataset.cases.get(key="flo-refund")
    assert added.variables == {"customer_name": "Flo", "order_total": 9.5}
    entry = LogEntry.objects.get(object_id=str(added.pk), content_type__model="case")
    assert (entry.action_flag, entry.user.username) == (ADDITION, "rita")


def test_a_call_is_not_added_to_another_prompts_dataset(both_client, released, dataset):
    other = PromptFactory()
    make_version(other)
    elsewhere = dataset_create(prompt=other, name="golden", actor=ACTOR)
    call = make_call(released)

    response = both_client.post(
        from_call_url(call),
        {
            "dataset": elsewhere.pk,
            "variables": '{"customer_name": "Ada"}',
            "expectation": '{"scorer": "contains", "value": "Ada"}',
        },
    )

    assert response.status_code == 400
    assert "dataset" in response.context["form"].errors
    assert [d.pk for d in response.context["form"].fields["dataset"].queryset] == [dataset.pk]
    assert not elsewhere.cases.exists()


def test_a_call_with_a_bad_case_or_a_duplicate_is_refused_in_place(both_client, released, dataset):
    call = make_call(released, inputs={"customer_name": "Ada", "shoe_size": 42})

    unknown = both_client.post(
        from_call_url(call),
        {
            "dataset": dataset.pk,
            "variables": json.dumps(call.inputs),
            "expectation": '{"scorer": "contains", "value": "Ada"}',
        },
    )
    duplicate = both_client.post(
        from_call_url(call),
        {
            "dataset": dataset.pk,
            "key": "ada",
            "variables": '{"customer_name": "Ada"}',
            "expectation": '{"scorer": "contains", "value": "Ada"}',
        },
    )

    assert unknown.status_code == duplicate.status_code == 400
    assert "shoe_size" in " ".join(unknown.context["form"].errors["variables"])
    assert "has a case 'ada' already" in " ".join(duplicate.context["form"].errors["key"])
    assert dataset.cases.count() == 2


def test_adding_a_call_needs_both_reading_calls_and_adding_cases(released, dataset):
    call = make_call(released)
    manager_only = logged_in(user_in("mo", "Release managers"))
    author_only = logged_in(user_in("al", "Prompt authors"))

    assert manager_only.get(call_url(call)).status_code == 200
    assert from_call_url(call) not in manager_only.get(call_url(call)).content.decode()
    assert manager_only.get(from_call_url(call)).status_code == 403
    assert author_only.get(from_call_url(call)).status_code == 403
    payload = {"dataset": dataset.pk, "variables": "{}", "expectation": "{}"}
    assert manager_only.post(from_call_url(call), payload).status_code == 403
    assert dataset.cases.count() == 2


def test_a_call_of_a_prompt_without_a_dataset_says_so(both_client, released):
    call = make_call(released)

    response = both_client.get(from_call_url(call))

    page = response.content.decode()
    assert "support.refund-reply has no dataset yet" in page
    assert '<form method="post"' not in page
