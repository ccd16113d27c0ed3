"""The suite's own shortcuts (tests/conftest.py) leave each test the database it would have had
without them."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from registry.models import PromptVersion
from releases.models import ReleaseEvent
from tests.factories import PromptFactory, make_version


def row_counts() -> dict[str, int]:
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    with connection.cursor() as cursor:
        counts = {}
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
            counts[table] = cursor.fetchone()[0]
    return counts


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_flush_after_a_transactional_test_empties_every_table_and_leaves_the_triggers_on(
    released,
):
    assert ReleaseEvent.objects.exists()  # rows the triggers protect from DELETE

    # What a transactional test's teardown runs (TransactionTestCase._fixture_teardown).
    with CaptureQueriesContext(connection) as flushed:
        call_command(
            "flush",
            verbosity=0,
            interactive=False,
            reset_sequences=False,
            allow_cascade=False,
            inhibit_post_migrate=True,
        )

    statements = [query["sql"] for query in flushed.captured_queries]
    assert "SET LOCAL session_replication_role = replica" in statements
    assert not [sql for sql in statements if sql.startswith("TRUNCATE")]
    assert {table: count for table, count in row_counts().items() if count} == {}
    # The role was the flush transaction's alone: the triggers refuse a DELETE again.
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone()[0] == "origin"
    version = make_version(PromptFactory())
    with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
        PromptVersion.objects.filter(pk=version.pk).delete()


# --- the shared ``released`` (SharedReleased) -----------------------------------------------------


def test_the_shared_released_is_built_once_and_each_test_gets_it_as_built(
    django_db_blocker, monkeypatch
):
    """Three tests in a row sharing it, each in a savepoint of the build as pytest-django makes
    it; then one that cannot share it. No test sees what one before it wrote or changed in its
    copy, and the last one finds no trace of the build."""
    from django.db import connection
    from django.test import TestCase

    from registry.models import Prompt
    from releases.models import Release
    from tests.conftest import SharedReleased

    shared = SharedReleased(django_db_blocker)
    monkeypatch.setattr(SharedReleased, "current", shared)
    first, second, third, other = object(), object(), object(), object()

    def in_a_test(item, body) -> None:
        shared.enter(item)
        with django_db_blocker.unblock():
            atomics = TestCase._enter_atomics()
            try:
                body(SharedReleased.copy_for(item))
            finally:
                TestCase._rollback_atomics(atomics)

    def first_test(released) -> None:
        assert released.release("staging").stable_version.number == 2
        Release.objects.filter(prompt=released.prompt).update(revision=99)
        released.prompt.description = "Changed by the first test."
        released.environments["production"].requires_review = True

    def a_later_test(released) -> None:
        assert shared.built is not None
        assert released is not shared.built
        assert set(Release.objects.values_list("revision", flat=True)) == {2, 1}
        assert released.prompt.description == "Replies to a customer."
        assert released.environments["production"].requires_review is False
        assert SharedReleased.copy_for(other) is None  # a copy for its own test alone

    try:
        in_a_test(first, first_test)
        built = shared.built
        in_a_test(second, a_later_test)
        # A test that closed the connection, and the transaction with it: the next one gets a
        # build of its own.
        in_a_test(third, lambda released: connection.close())
        in_a_test(first, a_later_test)
        assert shared.built is not built
    finally:
        shared.leave()

    assert SharedReleased.copy_for(first) is None
    with django_db_blocker.unblock():
        assert not Prompt.objects.filter(key="support.refund-reply").exists()
        assert connection.get_autocommit()


def test_a_test_with_only_users_keys_and_clients_before_released_shares_it(
    request, author, releaser_client, released, prompt, environments
):
    from tests.conftest import released_shareable

    assert released_shareable(request.node)
    # Built from the same prompt and environments the test gets.
    assert released.prompt is prompt
    assert released.environments is environments


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_builds_its_own_released(request, released):
    from tests.conftest import SharedReleased, released_shareable

    assert not released_shareable(request.node)
    assert SharedReleased.copy_for(request.node) is None


def test_a_fixture_not_known_to_leave_the_build_alone_makes_the_test_build_its_own(
    request, model_server, released
):
    from tests.conftest import SharedReleased, released_shareable

    assert not released_shareable(request.node)
    assert SharedReleased.copy_for(request.node) is None
