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
