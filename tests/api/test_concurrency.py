"""Races between API clients, on PostgreSQL with one connection per client (STYLE R3, R4).

Each test starts its requests from threads held at a barrier, so they reach the server together;
whatever the interleaving, the database's locks and constraints must leave exactly one winner, and
the loser must get the same 409 problem a late request would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from registry.models import Prompt, PromptVersion
from tests.api.helpers import assert_problem
from tests.factories import PromptFactory, content_data, make_version

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 5


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` in threads released together; each thread closes its connection."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        try:
            barrier.wait(timeout=10)
            return call()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [f.result(timeout=60) for f in futures]


def by_status(responses: list[Any]) -> dict[int, list[Any]]:
    found: dict[int, list[Any]] = {}
    for response in responses:
        found.setdefault(response.status_code, []).append(response)
    return found


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_authors_opening_a_draft_at_once_get_one_draft(make_client, round_):
    prompt = PromptFactory(key=f"support.race-{round_}")
    make_version(prompt)
    alice, bob = (
        make_client("prompts:write", name="alice"),
        make_client("prompts:write", name="bob"),
    )
    url = f"/api/v1/prompts/{prompt.key}/versions"

    def open_draft(client, words: str):
        body = content_data(templates={"en": {"instruction": f"{words} {{{{ customer_name }}}}."}})
        return lambda: client.post(url, {"message": words, **body}, format="json")

    responses = race(open_draft(alice, "Hello"), open_draft(bob, "Hi"))

    statuses = by_status(responses)
    assert sorted(statuses) == [201, 409], [r.content for r in responses]
    [loser] = statuses[409]
    problem = assert_problem(loser, 409, "/problems/draft-exists")
    assert problem["draft_number"] == 2
    drafts = PromptVersion.objects.filter(prompt=prompt, status="draft")
    assert list(drafts.values_list("number", flat=True)) == [2]
    assert drafts.get().message == statuses[201][0].json()["message"]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_edits_of_the_same_draft_read_get_one_200_and_one_409(make_client, round_):
    prompt = PromptFactory(key=f"support.race-{round_}")
    make_version(prompt)
    draft = make_version(prompt, commit=False)
    read = f'"{draft.edit_tag}"'
    alice, bob = (
        make_client("prompts:write", name="alice"),
        make_client("prompts:write", name="bob"),
    )
    url = f"/api/v1/prompts/{prompt.key}/versions/{draft.number}"

    def edit(client, words: str):
        templates = {"en": {"instruction": f"{words} {{{{ customer_name }}}}."}}
        return lambda: client.patch(
            url, {"templates": templates}, format="json", HTTP_IF_MATCH=read
        )

    responses = race(edit(alice, "Hello"), edit(bob, "Hi"))

    statuses = by_status(responses)
    assert sorted(statuses) == [200, 409], [r.content for r in responses]
    [winner], [loser] = statuses[200], statuses[409]
    problem = assert_problem(loser, 409, "/problems/draft-changed")
    draft.refresh_from_db()
    assert problem["current_tag"] == draft.edit_tag
    assert draft.content_hash == winner.json()["content_hash"]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_creates_of_one_key_get_one_prompt(make_client, round_):
    alice, bob = (
        make_client("prompts:write", name="alice"),
        make_client("prompts:write", name="bob"),
    )
    key = f"support.race-{round_}"

    def create(client, description: str):
        return lambda: client.post(
            "/api/v1/prompts", {"key": key, "description": description}, format="json"
        )

    responses = race(create(alice, "Alice's."), create(bob, "Bob's."))

    statuses = by_status(responses)
    assert sorted(statuses) == [201, 409], [r.content for r in responses]
    assert_problem(statuses[409][0], 409, "/problems/prompt-exists")
    assert Prompt.objects.get(key=key).description == statuses[201][0].json()["description"]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_draft_discarded_while_it_is_edited_never_fails_with_a_500(make_client, round_):
    prompt = PromptFactory(key=f"support.race-{round_}")
    make_version(prompt)
    draft = make_version(prompt, commit=False)
    alice, bob = (
        make_client("prompts:write", name="alice"),
        make_client("prompts:write", name="bob"),
    )
    url = f"/api/v1/prompts/{prompt.key}/versions/{draft.number}"
    templates = {"en": {"instruction": "Hello {{ customer_name }}."}}

    discard, edit = race(
        lambda: alice.delete(url),
        lambda: bob.patch(url, {"templates": templates}, format="json"),
    )

    assert discard.status_code == 204
    # The edit ran first (and was discarded with the draft), or found the draft gone.
    if edit.status_code != 200:
        assert_problem(edit, 404, "/problems/version-not-found")
    assert not PromptVersion.objects.filter(pk=draft.pk).exists()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_discards_of_one_draft_get_one_204_and_one_404(make_client, round_):
    prompt = PromptFactory(key=f"support.race-{round_}")
    draft = make_version(prompt, commit=False)
    alice, bob = (
        make_client("prompts:write", name="alice"),
        make_client("prompts:write", name="bob"),
    )
    url = f"/api/v1/prompts/{prompt.key}/versions/{draft.number}"

    responses = race(lambda: alice.delete(url), lambda: bob.delete(url))

    statuses = by_status(responses)
    assert sorted(statuses) == [204, 404], [r.content for r in responses]
    assert_problem(statuses[404][0], 404, "/problems/version-not-found")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_edit_racing_a_commit_never_changes_the_committed_version(make_client, round_):
    prompt = PromptFactory(key=f"support.race-{round_}")
    make_version(prompt)
    draft = make_version(prompt, commit=False, message="Ready.")
    alice, bob = (
        make_client("prompts:write", name="alice"),
        make_client("prompts:write", name="bob"),
    )
    url = f"/api/v1/prompts/{prompt.key}/versions/{draft.number}"
    templates = {"en": {"instruction": "Hello {{ customer_name }}."}}

    commit, edit = race(
        lambda: alice.post(f"{url}/commit", {}, format="json"),
        lambda: bob.patch(url, {"templates": templates}, format="json"),
    )

    assert commit.status_code == 200, commit.content
    if edit.status_code != 200:
        assert_problem(edit, 409, "/problems/version-immutable")
    draft.refresh_from_db()
    assert draft.status == PromptVersion.Status.COMMITTED
    # What was committed is what the commit answered, whichever request went first.
    assert draft.content_hash == commit.json()["content_hash"]
