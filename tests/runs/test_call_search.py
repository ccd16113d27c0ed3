"""The calls list's search (issue 13, item 8): by request id, prompt key and version, and by text
in the redacted inputs and output, the text looked for only among the newest
``CALL_TEXT_SEARCH_WINDOW`` calls the list's filters select (there is no index for "contains").

Persona: ``rita`` (Release managers: reads calls; tests/runs/test_admin.py).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs import selectors
from runs.selectors import call_search_parse
from tests.factories import PromptFactory, make_version
from tests.runs.test_admin import listed, release_manager, rita, url  # noqa: F401
from tests.runs.test_selectors import make_call

pytestmark = pytest.mark.django_db


@pytest.fixture
def calls(released) -> list:
    now = timezone.now()
    return [
        make_call(
            released,
            request_id="ada-v2",
            inputs={"customer_name": "Ada Lovelace", "order_total": 12},
            output="Hello Ada, your refund of 12 EUR is on its way.",
            created_at=now - timedelta(minutes=1),
        ),
        make_call(
            released,
            request_id="bob-v3",
            version=3,
            inputs={"customer_name": "Bob"},
            output="Dear Bob, the card gets the money within 5 days.",
            created_at=now - timedelta(minutes=2),
        ),
        make_call(
            released,
            request_id="zoe-v1",
            version=1,
            environment="production",
            inputs={"customer_name": "Zoé"},
            output="Bonjour Zoé, <b>remboursement</b> en cours.",
            created_at=now - timedelta(days=3),
        ),
    ]


def search(client, term: str, **filters: str) -> list[str]:
    return listed(client.get(url("call_changelist"), {"q": term, **filters}))


def test_a_term_is_read_as_prompt_keys_versions_and_text(released):
    assert call_search_parse("support.refund-reply v3 refund on its way") == (
        selectors.CallSearch(("support.refund-reply",), (3,), "refund on its way")
    )
    assert call_search_parse("  ") == selectors.CallSearch((), (), "")
    assert call_search_parse("no.such-prompt").text == "no.such-prompt"


def test_calls_are_found_by_prompt_and_version(rita, calls):  # noqa: F811
    other = PromptFactory(key="other.prompt")
    make_version(other)

    assert search(rita, "support.refund-reply") == ["ada-v2", "bob-v3", "zoe-v1"]
    assert search(rita, "other.prompt") == []
    assert search(rita, "v3") == ["bob-v3"]
    assert search(rita, "support.refund-reply V1") == ["zoe-v1"]


def test_calls_are_found_by_text_in_their_redacted_inputs_and_output(rita, calls):  # noqa: F811
    assert search(rita, "refund of 12") == ["ada-v2"]  # the output
    assert search(rita, "lovelace") == ["ada-v2"]  # the inputs, any case
    assert search(rita, "<b>remboursement</b>") == ["zoe-v1"]  # markup is text
    assert search(rita, "v2 card") == []  # the text, within version 2
    assert search(rita, "bob-v3") == ["bob-v3"]  # a request id, exactly
    assert search(rita, "bob-v") == []  # never a part of one


@pytest.mark.postgres
def test_text_in_any_script_is_found_in_the_inputs(rita, calls):  # noqa: F811
    # jsonb's text keeps "é"; SQLite's JSON text escapes it (\u00e9), so this runs on PostgreSQL.
    assert search(rita, "zoé") == ["zoe-v1"]


def test_text_is_looked_for_among_the_newest_calls_the_filters_select(
    rita,  # noqa: F811
    calls,
    monkeypatch,
):
    monkeypatch.setattr(selectors, "CALL_TEXT_SEARCH_WINDOW", 2)

    assert search(rita, "remboursement") == []  # the third newest: outside the window
    assert search(rita, "remboursement", within="7d") == []  # all three are in the last 7 days
    production = calls[2].environment_id
    assert search(rita, "remboursement", environment__id__exact=str(production)) == ["zoe-v1"]
    assert search(rita, "support.refund-reply") == ["ada-v2", "bob-v3", "zoe-v1"]  # not text


def test_a_text_search_costs_the_same_queries_however_many_calls_match(
    rita,  # noqa: F811
    released,
):
    make_call(released, output="a refund")
    rita.get(url("call_changelist"), {"q": "refund"})  # warm up session and permission caches
    with CaptureQueriesContext(connection) as one:
        assert search(rita, "refund") != []
    for _ in range(20):
        make_call(released, output="another refund")
    with CaptureQueriesContext(connection) as many:
        assert len(search(rita, "refund")) == 21

    assert len(many) == len(one)
