"""registry.services: prompts, drafts, commits, branches, discards and translation staleness.

Everything goes through the services against the real database; the only thing these tests make
up is the content authors would write.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test import override_settings

from registry.actors import Actor
from registry.content import VersionContent
from registry.errors import (
    ContentInvalid,
    DraftConflict,
    DraftExists,
    PromptExists,
    PromptInvalid,
    VersionImmutable,
    VersionNotFound,
)
from registry.models import LocalizedTemplate, Prompt, PromptVersion
from registry.selectors import (
    TranslationState,
    version_content,
    version_get,
    version_translation_status,
)
from registry.services import (
    prompt_create,
    prompt_update,
    version_branch,
    version_commit,
    version_create,
    version_draft_create,
    version_draft_discard,
    version_draft_update,
)
from tests.factories import PromptFactory, UserFactory, content_data, make_version

pytestmark = pytest.mark.django_db

EN = {"system": "You are a courteous support agent.", "instruction": "Greet {{ customer_name }}."}
FR = {"system": "Tu es un agent courtois.", "instruction": "Salue {{ customer_name }}."}


def content(**overrides: Any) -> VersionContent:
    return VersionContent.from_dict(content_data(**overrides))


def codes(error: Exception) -> list[str]:
    return [p.code for p in error.problems]


# --- prompt_create / prompt_update ------------------------------------------------------------


def test_prompt_create_creates_a_prompt_owned_by_the_acting_user():
    user = UserFactory(username="alice")

    prompt = prompt_create(
        key="support.refund-reply",
        actor=Actor.for_user(user),
        description="Answers an approved refund.",
        default_locale="EN-gb",
        tags=["support", "customer-facing", "support"],
    )

    prompt.refresh_from_db()
    assert prompt.key == "support.refund-reply"
    assert prompt.owner == user
    assert prompt.default_locale == "en-GB"
    assert prompt.tags == ["customer-facing", "support"]


def test_prompt_create_lists_every_problem_of_key_locale_and_tags(actor):
    with pytest.raises(PromptInvalid) as exc_info:
        prompt_create(
            key="Support..Refund",
            actor=actor,
            default_locale="english please",
            tags=["ok", "Not OK", ""],
        )

    problems = [(p.code, p.pointer) for p in exc_info.value.problems]
    assert problems == [
        ("invalid_key", "/key"),
        ("invalid_locale", "/default_locale"),
        ("invalid_tag", "/tags/1"),
        ("invalid_tag", "/tags/2"),
    ]
    assert not Prompt.objects.exists()


def test_prompt_create_refuses_a_key_that_exists(actor, prompt):
    with pytest.raises(PromptExists, match=r"support\.refund-reply"):
        prompt_create(key=prompt.key, actor=actor)

    assert Prompt.objects.count() == 1


def _wait_for_a_lock_wait(timeout: float = 5.0) -> None:
    """Waits until another session of this database waits on a lock (our insert racing)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            # Activity is snapshotted per transaction; clear it to see the other session move.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_prompt_create_losing_a_race_on_the_key_raises_prompt_exists(actor):
    # Another writer inserted the key and has not committed yet: our existence check cannot see
    # its row, our INSERT waits on the unique index, and fails once the other one commits.
    outcome: dict[str, object] = {}

    def create() -> None:
        try:
            outcome["prompt"] = prompt_create(key="support.race", actor=actor)
        except Exception as exc:  # the assertion below says which one was expected
            outcome["error"] = exc
        finally:
            connections.close_all()

    with transaction.atomic():
        Prompt.objects.create(key="support.race")
        creator = threading.Thread(target=create)
        creator.start()
        _wait_for_a_lock_wait()
    creator.join(timeout=10)

    assert "prompt" not in outcome
    assert isinstance(outcome["error"], PromptExists)
    assert isinstance(outcome["error"].__cause__, IntegrityError)  # the race path, not the check
    assert Prompt.objects.filter(key="support.race").count() == 1


def test_prompt_update_changes_description_tags_and_owner(actor, prompt):
    owner = UserFactory()

    prompt_update(
        prompt=prompt, actor=actor, description="New words.", tags=["b", "a"], owner_id=owner.pk
    )

    prompt.refresh_from_db()
    assert (prompt.description, prompt.tags, prompt.owner_id) == (
        "New words.",
        ["a", "b"],
        owner.pk,
    )


def test_prompt_update_leaves_out_what_is_not_given(actor, prompt):
    prompt_update(prompt=prompt, actor=actor, description="Only this.")

    prompt.refresh_from_db()
    assert prompt.description == "Only this."
    assert prompt.tags == ["support"]


def test_prompt_update_refuses_bad_tags_and_changes_nothing(actor, prompt):
    with pytest.raises(PromptInvalid) as exc_info:
        prompt_update(prompt=prompt, actor=actor, description="x" * 2001, tags=["BAD"])

    assert codes(exc_info.value) == ["description_too_long", "invalid_tag"]
    prompt.refresh_from_db()
    assert prompt.description == "Replies to a customer."


# --- version_draft_create -------------------------------------------------------------------------


def test_the_first_draft_is_version_1_without_a_parent(actor, prompt):
    draft = version_draft_create(prompt=prompt, actor=actor, content=content(), message="Hello.")

    assert (draft.number, draft.status, draft.parent, draft.message) == (
        1,
        PromptVersion.Status.DRAFT,
        None,
        "Hello.",
    )
    assert draft.author_label == "tests"
    assert version_content(version_get(prompt=prompt, number=1)) == content()


def test_the_next_draft_takes_the_next_number_and_the_latest_commit_as_parent(actor, prompt):
    make_version(prompt)
    v2 = make_version(prompt)

    draft = version_draft_create(prompt=prompt, actor=actor, content=content())

    assert draft.number == 3
    assert draft.parent == v2


def test_a_second_draft_is_refused_while_one_is_open(actor, prompt):
    make_version(prompt)
    make_version(prompt, commit=False)

    with pytest.raises(DraftExists) as exc_info:
        version_draft_create(prompt=prompt, actor=actor, content=content())

    assert exc_info.value.draft_number == 2
    assert prompt.versions.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_authors_opening_a_draft_at_once_get_one_draft_and_one_draft_exists(actor):
    prompt = PromptFactory()
    barrier = threading.Barrier(2)

    def open_draft(label: str) -> str:
        try:
            barrier.wait(timeout=5)
            version_draft_create(prompt=prompt, actor=Actor(label=label), content=content())
            return "draft"
        except DraftExists:
            return "draft exists"
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = sorted(pool.map(open_draft, ["alice", "bob"]))

    assert results == ["draft", "draft exists"]
    assert list(prompt.versions.values_list("number", "status")) == [(1, "draft")]


def test_a_draft_with_bad_content_lists_every_problem_and_is_not_created(actor, prompt):
    bad = content(
        variables=[{"name": "1st", "type": "text"}],
        model={"provider": "local", "model": "echo-1", "parameters": {"temprature": 0.2}},
        templates={
            "fr": {"instruction": "Salue {{ customer_name }}."},
            "not a locale": {"instruction": "Hi."},
        },
    )

    with pytest.raises(ContentInvalid) as exc_info:
        version_draft_create(prompt=prompt, actor=actor, content=bad)

    assert codes(exc_info.value) == [
        "invalid_name",
        "invalid_type",
        "unknown_parameter",
        "undeclared_variable",
        "invalid_locale",
        "missing_default_locale",
    ]
    assert not prompt.versions.exists()


def test_a_draft_stores_locales_normalized(actor, prompt):
    draft = version_draft_create(
        prompt=prompt, actor=actor, content=content(templates={"EN": EN, "FR-ca": FR})
    )

    assert sorted(draft.templates.values_list("locale", flat=True)) == ["en", "fr-CA"]
    assert draft.content_hash == content(templates={"en": EN, "fr-CA": FR}).content_hash


def test_a_draft_stores_the_hash_of_its_content(actor, prompt):
    draft = version_draft_create(prompt=prompt, actor=actor, content=content())

    stored = version_get(prompt=prompt, number=draft.number)
    assert stored.content_hash == content().content_hash
    assert version_content(stored).content_hash == stored.content_hash


# --- version_draft_update ------------------------------------------------------------------------


def test_a_draft_update_replaces_content_and_message(prompt):
    draft = make_version(prompt, commit=False)
    new = content(templates={"en": {"instruction": "Answer {{ customer_name }} briefly."}})

    updated = version_draft_update(
        version=draft, actor=Actor(label="bob"), content=new, message="Shorter."
    )

    stored = version_get(prompt=prompt, number=draft.number)
    assert version_content(stored) == new
    assert (stored.message, stored.content_hash, stored.author_label) == (
        "Shorter.",
        new.content_hash,
        "bob",
    )
    assert updated.content_hash == new.content_hash


def test_a_draft_update_with_the_current_tag_applies(actor, prompt):
    draft = make_version(prompt, commit=False)

    version_draft_update(
        version=draft, actor=actor, message="Reworded.", expected_tag=draft.edit_tag
    )

    draft.refresh_from_db()
    assert draft.message == "Reworded."


def test_a_draft_update_against_a_stale_hash_is_a_conflict_and_changes_nothing(actor, prompt):
    draft = make_version(prompt, commit=False)
    read_hash = draft.content_hash
    second = content(templates={"en": {"instruction": "Welcome {{ customer_name }}."}})
    version_draft_update(version=draft, actor=Actor(label="bob"), content=second)

    with pytest.raises(DraftConflict) as exc_info:
        version_draft_update(version=draft, actor=actor, message="Mine.", expected_tag=read_hash)

    assert exc_info.value.current_tag == PromptVersion.objects.get(pk=draft.pk).edit_tag
    draft.refresh_from_db()
    assert (draft.message, draft.content_hash, draft.author_label) == (
        "A version.",
        second.content_hash,
        "bob",
    )


def test_a_committed_version_refuses_an_update_and_nothing_changes(actor, prompt):
    committed = make_version(prompt)

    with pytest.raises(VersionImmutable):
        version_draft_update(
            version=committed,
            actor=actor,
            content=content(templates={"en": {"instruction": "Hi {{ customer_name }}."}}),
            message="Sneaky.",
        )

    stored = version_get(prompt=prompt, number=committed.number)
    assert stored.message == "A version."
    assert version_content(stored) == content()


def test_a_draft_update_with_bad_content_lists_problems_and_keeps_the_draft(actor, prompt):
    draft = make_version(prompt, commit=False)

    with pytest.raises(ContentInvalid) as exc_info:
        version_draft_update(
            version=draft,
            actor=actor,
            content=content(templates={"en": {"instruction": "{{ who }} {% if %}"}}),
        )

    assert "template_syntax" in codes(exc_info.value)
    assert version_content(version_get(prompt=prompt, number=draft.number)) == content()


# --- version_commit / version_create ------------------------------------------------------------


def test_commit_freezes_the_draft_with_who_and_when(prompt):
    alice = UserFactory(username="alice")
    draft = make_version(prompt, commit=False, message="")

    committed = version_commit(version=draft, actor=Actor.for_user(alice), message="Ship it.")

    committed.refresh_from_db()
    assert committed.status == PromptVersion.Status.COMMITTED
    assert committed.committed_at is not None
    assert (committed.committed_by, committed.committed_by_label) == (alice, "alice")
    assert committed.message == "Ship it."


def test_commit_without_a_message_is_refused(actor, prompt):
    draft = make_version(prompt, commit=False, message="   ")

    with pytest.raises(ContentInvalid) as exc_info:
        version_commit(version=draft, actor=actor)

    assert [(p.code, p.pointer) for p in exc_info.value.problems] == [
        ("missing_message", "/message")
    ]
    draft.refresh_from_db()
    assert draft.status == PromptVersion.Status.DRAFT


def test_commit_validates_the_content_again(actor, prompt):
    draft = make_version(prompt, commit=False)

    # The rules tightened since the draft was saved: its sections are now too long.
    with override_settings(PROMPT_SECTION_MAX_CHARS=10), pytest.raises(ContentInvalid) as exc:
        version_commit(version=draft, actor=actor)

    assert set(codes(exc.value)) == {"section_too_long"}
    draft.refresh_from_db()
    assert draft.status == PromptVersion.Status.DRAFT


def test_a_committed_version_cannot_be_committed_again(actor, prompt):
    committed = make_version(prompt)

    with pytest.raises(VersionImmutable):
        version_commit(version=committed, actor=actor, message="Again.")


def test_commit_refuses_a_stale_hash(actor, prompt):
    draft = make_version(prompt, commit=False)

    with pytest.raises(DraftConflict):
        version_commit(version=draft, actor=actor, expected_tag="0" * 64)

    draft.refresh_from_db()
    assert draft.status == PromptVersion.Status.DRAFT


def test_version_create_with_commit_makes_a_committed_version_in_one_step(actor, prompt):
    version = version_create(
        prompt=prompt, actor=actor, content=content(), message="v1", commit=True
    )

    version.refresh_from_db()
    assert (version.number, version.status, version.committed_by_label) == (
        1,
        PromptVersion.Status.COMMITTED,
        "tests",
    )


def test_version_create_with_commit_and_no_message_leaves_no_draft_behind(actor, prompt):
    with pytest.raises(ContentInvalid):
        version_create(prompt=prompt, actor=actor, content=content(), commit=True)

    assert not prompt.versions.exists()


# --- version_branch / version_draft_discard --------------------------------------------------------


def test_branch_starts_a_draft_that_copies_the_source_with_it_as_parent(actor, prompt):
    v1 = make_version(prompt, templates={"en": EN, "fr": FR})
    make_version(prompt, templates={"en": {"instruction": "Hello {{ customer_name }}."}})

    draft = version_branch(source=v1, actor=actor)

    assert (draft.number, draft.parent, draft.status) == (3, v1, PromptVersion.Status.DRAFT)
    assert draft.message == "Started from version 1."
    assert draft.content_hash == v1.content_hash
    stored = version_get(prompt=prompt, number=3)
    assert version_content(stored) == version_content(version_get(prompt=prompt, number=1))


def test_branch_is_refused_while_a_draft_is_open(actor, prompt):
    v1 = make_version(prompt)
    make_version(prompt, commit=False)

    with pytest.raises(DraftExists):
        version_branch(source=v1, actor=actor)


def test_discarding_a_draft_frees_its_number_for_the_next_draft(actor, prompt):
    make_version(prompt)
    draft = make_version(prompt, commit=False)
    assert draft.number == 2

    version_draft_discard(version=draft, actor=actor)

    assert not PromptVersion.objects.filter(pk=draft.pk).exists()
    assert not LocalizedTemplate.objects.filter(version_id=draft.pk).exists()
    assert version_draft_create(prompt=prompt, actor=actor, content=content()).number == 2


def test_a_draft_discarded_meanwhile_is_not_found(actor, prompt):
    draft = make_version(prompt, commit=False)
    stale = PromptVersion.objects.get(pk=draft.pk)
    version_draft_discard(version=draft, actor=actor)

    with pytest.raises(VersionNotFound, match="no version 1"):
        version_draft_update(version=stale, actor=actor, message="Too late.")
    with pytest.raises(VersionNotFound):
        version_commit(version=stale, actor=actor, message="Too late.")


def test_a_committed_version_cannot_be_discarded(actor, prompt):
    committed = make_version(prompt)

    with pytest.raises(VersionImmutable):
        version_draft_discard(version=committed, actor=actor)

    assert PromptVersion.objects.filter(pk=committed.pk).exists()


# --- content_hash -----------------------------------------------------------------------------------


def test_equal_content_has_equal_hashes_whoever_wrote_it_and_whatever_the_message(prompt):
    other = PromptFactory()
    mine = make_version(prompt, message="Mine.", actor=Actor(label="alice"))
    theirs = make_version(other, message="Theirs.", actor=Actor(label="bob", user_id=None))

    assert mine.content_hash == theirs.content_hash == content().content_hash
    assert len(mine.content_hash) == 64


def _variable(**changes: Any) -> dict[str, Any]:
    base = content_data()["variables"][0]
    return {**base, **changes}


def _model(**changes: Any) -> dict[str, Any]:
    return {**content_data()["model"], **changes}


def _en(**changes: Any) -> dict[str, Any]:
    return {"en": {**content_data()["templates"]["en"], **changes}}


OPTIONAL_TONE = {"name": "tone", "type": "string", "required": False, "default": "warm"}
CHANGES = {
    "variable description": {"variables": [_variable(description="Another description.")]},
    "variable type": {"variables": [_variable(type="object")]},
    "variable required": {"variables": [_variable(required=False)]},
    "variable default": {"variables": [_variable(required=False, default="friend")]},
    "variable added": {"variables": [_variable(), OPTIONAL_TONE]},
    "variable order": {"variables": [OPTIONAL_TONE, _variable()]},
    "provider": {"model": _model(provider="openai")},
    "model": {"model": _model(model="echo-2")},
    "parameter value": {"model": _model(parameters={"temperature": 0.3})},
    "parameter added": {"model": _model(parameters={"temperature": 0.2, "seed": 1})},
    "response schema": {"model": _model(response_schema={"type": "object"})},
    "fallbacks": {"model": _model(fallbacks=[{"provider": "local", "model": "echo-small"}])},
    "system section": {"templates": _en(system="You are terse.")},
    "context section": {"templates": _en(context="It is Monday.")},
    "instruction section": {"templates": _en(instruction="Greet {{ customer_name }}!")},
    "format section": {"templates": _en(format="One line.")},
    "locale added": {"templates": {**_en(), "fr": FR}},
}


@pytest.mark.parametrize("overrides", list(CHANGES.values()), ids=list(CHANGES))
def test_any_change_of_content_changes_the_hash(prompt, overrides):
    before = make_version(prompt)

    after = make_version(prompt, **overrides)

    assert after.content_hash != before.content_hash
    assert after.content_hash == content(**overrides).content_hash


# --- translation staleness --------------------------------------------------------------------------


def states(version: PromptVersion) -> dict[str, TranslationState]:
    fresh = version_get(prompt=version.prompt, number=version.number)
    return {s.locale: s.state for s in version_translation_status(fresh)}


EN_1 = {"instruction": "Greet {{ customer_name }}."}
EN_2 = {"instruction": "Greet {{ customer_name }} warmly."}
FR_1 = {"instruction": "Salue {{ customer_name }}."}
FR_2 = {"instruction": "Salue {{ customer_name }} chaleureusement."}


def test_a_translation_goes_stale_when_the_default_text_changes_without_it(prompt):
    v1 = make_version(prompt, templates={"en": EN_1, "fr": FR_1})
    assert states(v1) == {"en": TranslationState.SOURCE, "fr": TranslationState.CURRENT}

    v2 = make_version(prompt, templates={"en": EN_2, "fr": FR_1})
    assert states(v2)["fr"] is TranslationState.STALE

    # Nothing changes: the French text is still the one written for the first English text.
    v3 = make_version(prompt, templates={"en": EN_2, "fr": FR_1})
    assert states(v3)["fr"] is TranslationState.STALE

    v4 = make_version(prompt, templates={"en": EN_2, "fr": FR_2})
    assert states(v4)["fr"] is TranslationState.CURRENT
    # History keeps what each version was.
    assert states(v2)["fr"] is TranslationState.STALE


def test_a_translation_changed_with_the_default_text_stays_current(prompt):
    make_version(prompt, templates={"en": EN_1, "fr": FR_1})

    v2 = make_version(prompt, templates={"en": EN_2, "fr": FR_2})

    assert states(v2)["fr"] is TranslationState.CURRENT


def test_a_translation_added_later_is_current(prompt):
    make_version(prompt, templates={"en": EN_1})

    v2 = make_version(prompt, templates={"en": EN_1, "fr": FR_1})

    assert states(v2) == {"en": TranslationState.SOURCE, "fr": TranslationState.CURRENT}


def test_staleness_follows_a_draft_through_several_updates(actor, prompt):
    make_version(prompt, templates={"en": EN_1, "fr": FR_1})
    draft = make_version(prompt, commit=False, templates={"en": EN_1, "fr": FR_1})
    assert states(draft)["fr"] is TranslationState.CURRENT

    version_draft_update(
        version=draft, actor=actor, content=content(templates={"en": EN_2, "fr": FR_1})
    )
    assert states(draft)["fr"] is TranslationState.STALE

    # Saving again without touching French keeps it stale: it was written for EN_1.
    version_draft_update(
        version=draft, actor=actor, content=content(templates={"en": EN_2, "fr": FR_1})
    )
    assert states(draft)["fr"] is TranslationState.STALE

    version_draft_update(
        version=draft, actor=actor, content=content(templates={"en": EN_2, "fr": FR_2})
    )
    assert states(draft)["fr"] is TranslationState.CURRENT

    # English moves on again while French stays: stale once more, and the commit keeps that.
    version_draft_update(
        version=draft,
        actor=actor,
        content=content(templates={"en": {"instruction": "Hi {{ customer_name }}."}, "fr": FR_2}),
    )
    committed = version_commit(version=draft, actor=actor)
    assert states(committed)["fr"] is TranslationState.STALE


def test_a_branch_keeps_the_staleness_of_its_source(actor, prompt):
    v1 = make_version(prompt, templates={"en": EN_1, "fr": FR_1})
    v2 = make_version(prompt, templates={"en": EN_2, "fr": FR_1})

    assert states(version_branch(source=v2, actor=actor))["fr"] is TranslationState.STALE
    version_draft_discard(version=prompt.versions.get(number=3), actor=actor)
    assert states(version_branch(source=v1, actor=actor))["fr"] is TranslationState.CURRENT


def test_a_message_only_edit_moves_the_drafts_tag_so_a_second_writer_is_refused(prompt, actor):
    draft = make_version(prompt, commit=False, message="First words.")
    seen = draft.edit_tag
    version_draft_update(version=draft, actor=actor, message="Alice's words.", expected_tag=seen)
    with pytest.raises(DraftConflict):
        version_draft_update(version=draft, actor=actor, message="Bob's words.", expected_tag=seen)
    draft.refresh_from_db()
    assert draft.message == "Alice's words."


def test_it_refuses_nul_characters_that_postgresql_cannot_store(prompt, actor):
    data = content_data(templates={"en": {"instruction": "Hi {{ customer_name }}\x00"}})
    with pytest.raises(ContentInvalid) as caught:
        version_create(prompt=prompt, actor=actor, content=VersionContent.from_dict(data))
    assert [p.code for p in caught.value.problems] == ["nul_character"]
    assert caught.value.problems[0].pointer == "/templates/en/instruction"
