"""The admin for golden datasets: the dataset list, a dataset's page with its cases, the "Import
cases" page (dry run, every problem, all or nothing), and the case list's filters.

Personas (STYLE R14):
- ``author`` (alice, tests/conftest.py): in "Prompt authors"; adds and changes datasets, imports
  cases (migration evaluations/0002 gives the group add/change/view on datasets and cases, 0009
  delete on cases; adding, editing and removing one case: test_case_editing.py).
- ``viewer`` (dave): staff with view permissions on datasets and cases only: reads, never imports.
- ``outsider`` (carol): staff in no group: every dataset page answers 403.
"""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client, RequestFactory, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from evaluations.admin import datasets as evaluations_admin
from evaluations.datasets.casefiles import case_file_read
from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.models import Case, Dataset
from registry.actors import Actor
from tests.factories import PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db

ACTOR = Actor(label="tests")


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def case(name: str, **extra) -> dict:
    return {
        "variables": {"customer_name": name},
        "expectation": {"scorer": "contains", "value": name},
        **extra,
    }


@pytest.fixture
def dataset(released) -> Dataset:
    return dataset_create(prompt=released.prompt, name="golden", actor=ACTOR)


@pytest.fixture
def author_client(client: Client, author) -> Client:
    client.force_login(author)
    return client


@pytest.fixture
def viewer(db):
    """Staff who may read datasets and cases, and nothing else."""
    user = UserFactory(username="dave", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="evaluations", codename__in=["view_dataset", "view_case"]
        )
    )
    return user


@pytest.fixture
def outsider(db):
    """Staff without any group: may log in to the admin, sees no dataset page."""
    return UserFactory(username="carol", is_staff=True)


def import_url(dataset: Dataset) -> str:
    return reverse("admin:evaluations_dataset_import", args=[dataset.pk])


def upload(text: str, name: str = "cases.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode("utf-8"))


def test_prompt_authors_may_add_change_and_view_datasets_and_cases_and_remove_cases(author):
    for codename in ("add", "change", "view"):
        assert author.has_perm(f"evaluations.{codename}_dataset")
        assert author.has_perm(f"evaluations.{codename}_case")
    assert not author.has_perm("evaluations.delete_dataset")
    assert author.has_perm("evaluations.delete_case")  # evaluations/0009


def test_an_author_creates_a_dataset_through_the_service(author_client, released):
    response = author_client.post(
        reverse("admin:evaluations_dataset_add"),
        {"prompt": released.prompt.pk, "name": "golden", "description": "Real tickets."},
    )
    assert response.status_code == 302
    dataset = Dataset.objects.get()
    assert (dataset.name, dataset.created_by_label) == ("golden", "alice")

    again = author_client.post(
        reverse("admin:evaluations_dataset_add"),
        {"prompt": released.prompt.pk, "name": "golden", "description": ""},
    )
    assert again.status_code == 200  # the form shows the unique-name error
    assert Dataset.objects.count() == 1


def test_the_dataset_page_lists_its_cases_and_offers_the_import(author_client, dataset):
    dataset_import(
        dataset=dataset,
        content=jsonl(case("Ada", key="ada"), case("Bob", key="bob", holdout=True)),
        format="jsonl",
    )
    response = author_client.get(reverse("admin:evaluations_dataset_change", args=[dataset.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "ada" in page
    assert "bob" in page
    assert "&quot;customer_name&quot;: &quot;Ada&quot;" in page
    assert import_url(dataset) in page
    # Bob is frozen: an author sees the case and its flags, not what it holds.
    assert "&quot;Bob&quot;" not in page
    assert "frozen: a holdout case" in page


def test_release_managers_read_the_holdout_authors_do_not(author_client, dataset):
    from django.contrib.auth.models import Group
    from django.test import Client

    from tests.factories import UserFactory

    dataset_import(
        dataset=dataset, content=jsonl(case("Bob", key="bob", holdout=True)), format="jsonl"
    )
    held = dataset.cases.get()
    manager = UserFactory(username="rita", is_staff=True)
    manager.groups.add(
        Group.objects.get(name="Release managers"), Group.objects.get(name="Prompt authors")
    )
    client = Client()  # not the ``client`` fixture: author_client is that one
    client.force_login(manager)

    for url in (
        reverse("admin:evaluations_case_change", args=[held.pk]),
        reverse("admin:evaluations_dataset_change", args=[dataset.pk]),
    ):
        assert "Bob" not in author_client.get(url).content.decode()
        assert "Bob" in client.get(url).content.decode()


def test_the_dataset_list_costs_the_same_queries_for_one_dataset_or_many(author_client, released):
    dataset_create(prompt=released.prompt, name="one", actor=ACTOR)
    url = reverse("admin:evaluations_dataset_changelist")
    author_client.get(url)  # warm up session and permission caches
    with CaptureQueriesContext(connection) as one:
        assert author_client.get(url).status_code == 200
    for n in range(5):
        other = PromptFactory()
        make_version(other)
        dataset = dataset_create(prompt=other, name=f"set-{n}", actor=ACTOR)
        dataset_import(dataset=dataset, content=jsonl(case("Ada")), format="jsonl")
    with CaptureQueriesContext(connection) as many:
        response = author_client.get(url)
    assert "set-4" in response.content.decode()
    assert len(many) == len(one)


def test_a_dry_run_shows_every_case_and_stores_nothing(author_client, dataset):
    response = author_client.post(
        import_url(dataset),
        {
            "file": upload(jsonl(case("Ada", key="ada"), case("Bob", must_pass=True))),
            "dry_run": "on",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Dry run: nothing was stored" in page
    assert "Would import 2 case(s)" in page
    assert "(generated)" in page
    assert not Case.objects.exists()


def test_an_import_stores_the_cases_and_goes_back_to_the_dataset(author_client, dataset):
    content = (
        "key,var.customer_name,expectation,holdout\n"
        'ada,Ada,"{""scorer"": ""exact"", ""value"": ""Hi Ada""}",true\n'
    )
    response = author_client.post(
        import_url(dataset), {"file": upload(content, "golden.csv"), "format": ""}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:evaluations_dataset_change", args=[dataset.pk])
    stored = Case.objects.get()
    assert (stored.key, stored.holdout) == ("ada", True)
    messages = [str(m) for m in get_messages(response.wsgi_request)]
    assert messages == [
        f"Imported 1 case(s) into {dataset}: 1 new, 0 changed, 0 unchanged, 0 removed."
    ]


def test_replace_from_the_admin_removes_cases_absent_from_the_file(author_client, dataset):
    dataset_import(
        dataset=dataset, content=jsonl(case("Ada", key="a"), case("Bob", key="b")), format="jsonl"
    )
    response = author_client.post(
        import_url(dataset), {"file": upload(jsonl(case("Ada", key="a"))), "replace": "on"}
    )
    assert response.status_code == 302
    assert list(Case.objects.values_list("key", flat=True)) == ["a"]


def test_a_refused_file_lists_every_problem_with_its_line(author_client, dataset):
    content = jsonl(case("Ada")) + "{broken\n" + jsonl({"variables": {"customer_nam": "x"}})
    response = author_client.post(import_url(dataset), {"file": upload(content)})
    assert response.status_code == 400
    problems = response.context["problems"]
    assert [(p.line, p.code) for p in problems] == [
        (2, "invalid_json"),
        (3, "unknown_variable"),
        (3, "missing_variable"),
        (3, "missing_expectation"),
    ]
    page = response.content.decode()
    assert "The cases could not be imported; nothing was stored." in page
    assert "/variables/customer_nam" in page
    assert not Case.objects.exists()


def test_the_format_must_be_known(author_client, dataset):
    response = author_client.post(import_url(dataset), {"file": upload("x", "cases.txt")})
    assert response.status_code == 400
    assert "Cannot tell the format" in response.content.decode()


def test_a_viewer_reads_datasets_but_may_not_import(client, viewer, dataset):
    client.force_login(viewer)
    change = reverse("admin:evaluations_dataset_change", args=[dataset.pk])
    page = client.get(change)
    assert page.status_code == 200
    assert import_url(dataset) not in page.content.decode()
    assert client.get(import_url(dataset)).status_code == 403
    response = client.post(import_url(dataset), {"file": upload(jsonl(case("Ada")))})
    assert response.status_code == 403
    assert not Case.objects.exists()


def test_an_outsider_sees_no_dataset_page(client, outsider, dataset):
    client.force_login(outsider)
    assert client.get(reverse("admin:evaluations_dataset_changelist")).status_code == 403
    assert client.get(import_url(dataset)).status_code == 403


def test_the_import_page_answers_404_for_a_missing_dataset(author_client, db):
    response = author_client.get(reverse("admin:evaluations_dataset_import", args=[999_999]))
    assert response.status_code == 404


def test_the_case_list_filters_holdout_and_must_pass_cases(author_client, dataset):
    dataset_import(
        dataset=dataset,
        content=jsonl(
            case("Ada", key="plain"),
            case("Bob", key="held", holdout=True),
            case("Cy", key="must", must_pass=True),
        ),
        format="jsonl",
    )
    url = reverse("admin:evaluations_case_changelist")

    def keys(query: str) -> set[str]:
        response = author_client.get(f"{url}?{query}")
        assert response.status_code == 200
        return {c.key for c in response.context["cl"].result_list}

    assert keys("holdout__exact=1") == {"held"}
    assert keys("must_pass__exact=1") == {"must"}
    assert keys("holdout__exact=0&must_pass__exact=0") == {"plain"}


def test_a_case_page_never_renames_the_case_nor_stores_half_of_a_case(author_client, dataset):
    """Cases are edited on their own page now (test_case_editing.py); a post without an
    expectation is refused whole, and the key is fixed."""
    dataset_import(dataset=dataset, content=jsonl(case("Ada", key="a")), format="jsonl")
    stored = Case.objects.get()
    change = reverse("admin:evaluations_case_change", args=[stored.pk])
    assert author_client.get(change).status_code == 200
    refused = author_client.post(change, {"key": "renamed", "holdout": "on"})
    assert refused.status_code == 200
    assert "expectation" in refused.context["adminform"].form.errors
    stored.refresh_from_db()
    assert (stored.key, stored.holdout) == ("a", False)


def test_an_author_changes_a_datasets_description_but_not_its_name(author_client, dataset):
    change = reverse("admin:evaluations_dataset_change", args=[dataset.pk])
    response = author_client.post(
        change,
        {
            "name": "renamed",
            "description": "Real tickets from May.",
            "cases-TOTAL_FORMS": "0",
            "cases-INITIAL_FORMS": "0",
            "cases-MIN_NUM_FORMS": "0",
            "cases-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert (dataset.name, dataset.description) == ("golden", "Real tickets from May.")


# --- uploads over the size limit (DATASET_FILE_MAX_BYTES) -------------------------------------


@override_settings(DATASET_FILE_MAX_BYTES=1024)
def test_an_upload_over_the_limit_is_refused_by_its_size_before_it_is_read(
    author_client, dataset, monkeypatch
):
    def never(**kwargs):
        raise AssertionError("the import must not see a file over the limit")

    monkeypatch.setattr(evaluations_admin, "dataset_import", never)
    rows = jsonl(*(case(f"Ada {i}", key=f"k{i}") for i in range(200)))
    assert len(rows) > 4 * 1024

    response = author_client.post(import_url(dataset), {"file": upload(rows), "dry_run": "on"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "The file is over 1,024 bytes; an import takes at most 1,024" in page
    assert not Case.objects.exists()


@override_settings(DATASET_FILE_MAX_BYTES=1024)
def test_no_uploaded_file_is_stored_past_the_limit():
    body = b"x" * 100_000
    request = RequestFactory().post("/upload/", {"file": SimpleUploadedFile("big.jsonl", body)})

    stored = request.FILES["file"]

    assert stored.size == 1025  # one byte over: the form refuses it as too large
    assert stored.read() == body[:1025]


def test_the_import_reads_at_most_one_byte_past_the_limit():
    file = io.BytesIO(b"x" * 10_000)
    with override_settings(DATASET_FILE_MAX_BYTES=1024):
        assert len(case_file_read(file)) == 1025


def test_an_upload_of_several_files_is_refused(author_client, dataset):
    files = [upload(jsonl(case("Ada")), f"cases{i}.jsonl") for i in range(2)]

    response = author_client.post(import_url(dataset), {"file": files, "dry_run": "on"})

    # Each file would be stored up to the limit: one file a request, as the form takes.
    assert response.status_code == 400
    assert not Case.objects.exists()
