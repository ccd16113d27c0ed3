"""Guardrails in the calls admin (issue 19, decision 0052): the checks that fired on a call's page,
a marker and filters on the calls list, and the guardrails page counting them per prompt, check
and action over a window, linking to the filtered list.

Personas as in tests/runs/test_admin.py: ``rita`` (a release manager: reads calls), an author
(no runs permission: 403), an anonymous visitor (sent to log in).

Data: the ``released`` fixture's calls, written as runs.execution records them (``guardrails``:
a list of ``{stage, check, action, source, detail}``).
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.guardrail_records import guardrail_counts
from runs.models import Call
from tests.factories import PromptFactory, make_version
from tests.runs.test_admin import IMAGE, call_list_queries, listed, url
from tests.runs.test_admin import release_manager as release_manager  # the fixtures
from tests.runs.test_admin import rita as rita  # rita, logged in
from tests.runs.test_admin import text as page_text
from tests.runs.test_selectors import make_call

pytestmark = pytest.mark.django_db


def text(response) -> str:
    """The page's visible text (tests/runs/test_admin.py's), every entity read back."""
    return html.unescape(page_text(response))


def fired(stage: str, check: str, action: str, detail: str = "", source: str = "version") -> dict:
    return {"stage": stage, "check": check, "action": action, "source": source, "detail": detail}


INJECTION = fired("input", "injection", "refuse", "looks like override")
EMAIL = fired("input", "pii", "redact", "email ×1")
PHONE_FLAGGED = fired("input", "pii", "flag", "phone ×1", source="environment")
LEAK = fired("output", "pii", "redact", "email ×1")
DENIED = fired("output", "deny_patterns", "fallback", "pattern #0")


@pytest.fixture
def guarded(released) -> dict[str, Call]:
    now = timezone.now()
    made: dict[str, Call] = {}

    def call(request_id: str, record: list[dict], **fields) -> None:
        # Listed newest first: clean, redacted, flagged, refused, fallback.
        at = now - timedelta(minutes=1 + len(made))
        made[request_id] = make_call(
            released, request_id=request_id, guardrails=record, created_at=at, **fields
        )

    call("clean", [])
    call("redacted", [EMAIL])
    call("flagged", [PHONE_FLAGGED, LEAK])
    call(
        "refused",
        [INJECTION],
        status=Call.Status.REFUSED,
        error_class="guardrail_input_injection",
        output="",
    )
    call("fallback", [DENIED], output="Sorry.")
    return made


# --- a call's page ------------------------------------------------------------------------------


def test_a_call_page_shows_each_check_that_fired_in_a_table(rita, guarded):
    response = rita.get(url("call_change", guarded["flagged"].pk))

    page = text(response)
    assert response.status_code == 200
    assert "Stage Check Action Policy Found" in page
    assert "input pii flag the environment's floor phone ×1" in page
    assert "output pii redact the version's email ×1" in page


def test_a_call_no_check_fired_on_says_so(rita, guarded):
    page = text(rita.get(url("call_change", guarded["clean"].pk)))

    assert "Checks that fired: No check fired." in page


def test_what_a_check_found_is_escaped(rita, released):
    call = make_call(released, guardrails=[fired("output", "moderation", "flag", IMAGE)])

    html = rita.get(url("call_change", call.pk)).content.decode()

    assert IMAGE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


# --- the calls list -----------------------------------------------------------------------------


def test_the_list_marks_the_calls_a_check_fired_on_with_the_actions_taken(rita, guarded):
    html = rita.get(url("call_changelist")).content.decode()

    marks = re.findall(r'<small class="runs-guardrail-mark" title="([^"]*)">([^<]*)</small>', html)
    assert sorted(marks) == sorted(
        [
            ("input injection: refuse", "guardrails: refuse"),
            ("input pii: redact", "guardrails: redact"),
            ("input pii: flag; output pii: redact", "guardrails: redact, flag"),
            ("output deny_patterns: fallback", "guardrails: fallback"),
        ]
    )
    assert "Refused" in text(rita.get(url("call_changelist"), {"status__exact": "refused"}))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"guardrails": "any"}, ["redacted", "flagged", "refused", "fallback"]),
        ({"guardrails": "refuse"}, ["refused"]),
        ({"guardrails": "fallback"}, ["fallback"]),
        ({"guardrails": "redact"}, ["redacted", "flagged"]),
        ({"guardrails": "flag"}, ["flagged"]),
        ({"status__exact": "refused"}, ["refused"]),
        ({"guardrail_check": "input.pii"}, ["redacted", "flagged"]),
        ({"guardrail_check": "output.pii"}, ["flagged"]),
        # One check that took one action: the flagged call's input pii flagged, it did not redact.
        ({"guardrail_check": "input.pii", "guardrails": "redact"}, ["redacted"]),
        ({"guardrail_check": "input.pii", "guardrails": "flag"}, ["flagged"]),
        # No such check: nothing narrowed.
        (
            {"guardrail_check": "output.injection"},
            ["clean", "redacted", "flagged", "refused", "fallback"],
        ),
    ],
)
def test_the_list_filters_by_what_the_guardrails_did(rita, guarded, params, expected):
    assert listed(rita.get(url("call_changelist"), params)) == expected


def test_the_filters_offer_each_action_and_each_check(rita, guarded):
    response = rita.get(url("call_changelist"))
    specs = {s.title: s for s in response.context["cl"].filter_specs}

    def choices(title: str) -> list[str]:
        return [c["display"] for c in specs[title].choices(response.context["cl"])]

    assert choices("guardrails") == [
        "All",
        "Any check fired",
        "A check refused",
        "Answered with the fallback",
        "A check redacted",
        "A check flagged",
    ]
    assert choices("guardrail check") == [
        "All",
        "input max_tokens",
        "input deny_patterns",
        "input pii",
        "input injection",
        "output deny_patterns",
        "output pii",
        "output moderation",
    ]


def test_the_filtered_list_costs_the_same_queries_for_few_and_many_calls(
    rita, released, django_assert_max_num_queries
):
    for i in range(3):
        make_call(released, guardrails=[EMAIL, LEAK][: 1 + i % 2])
    few = call_list_queries(rita)
    for i in range(27):
        make_call(released, guardrails=[INJECTION] if i % 2 else [EMAIL, PHONE_FLAGGED])

    with django_assert_max_num_queries(few):
        response = rita.get(url("call_changelist"), {"guardrails": "any"})

    assert len(listed(response)) == 30


# --- the guardrails page ------------------------------------------------------------------------


def counted(response) -> list[tuple[str, str, str, str, int]]:
    return [
        (row.prompt, row.stage, row.check, row.action, row.calls)
        for row, _ in response.context["rows"]
    ]


def test_the_page_counts_calls_per_prompt_check_and_action_over_7_days(rita, released, guarded):
    other = PromptFactory(key="support.other")
    version = make_version(other)
    for _ in range(3):
        Call.objects.create(
            request_id="other",
            source=Call.Source.RUN,
            created_at=timezone.now(),
            prompt=other,
            version=version,
            environment=released.environments["staging"],
            status=Call.Status.REFUSED,
            guardrails=[INJECTION],
        )
    make_call(released, guardrails=[EMAIL], created_at=timezone.now() - timedelta(days=8))
    make_call(released, guardrails=[EMAIL], source=Call.Source.PLAYGROUND)
    # The floor and the version both redacting emails: one call, counted once.
    make_call(released, guardrails=[EMAIL, {**EMAIL, "source": "environment"}])

    response = rita.get(url("call_guardrails"))

    assert response.status_code == 200
    assert counted(response) == [
        ("support.other", "input", "injection", "refuse", 3),
        ("support.refund-reply", "input", "pii", "redact", 2),
        ("support.refund-reply", "input", "injection", "refuse", 1),
        ("support.refund-reply", "input", "pii", "flag", 1),
        ("support.refund-reply", "output", "deny_patterns", "fallback", 1),
        ("support.refund-reply", "output", "pii", "redact", 1),
    ]
    page = text(response)
    assert "support.other input injection refuse 3" in page
    assert "Last 7 days" in page


def test_each_count_links_to_the_calls_it_counted(rita, released, guarded):
    response = rita.get(url("call_guardrails"))

    for row, link in response.context["rows"]:
        query = {k: v[0] for k, v in parse_qs(urlparse(link).query).items()}
        assert query == {
            "prompt__id__exact": str(row.prompt_id),
            "within": "7d",
            "guardrails": row.action,
            "guardrail_check": f"{row.stage}.{row.check}",
        }
        assert len(listed(rita.get(link))) == row.calls, link
    assert f'href="{response.context["all_url"]}"' in response.content.decode().replace(
        "&amp;", "&"
    )


def test_the_window_chooses_the_calls_counted(rita, released):
    make_call(released, guardrails=[EMAIL], created_at=timezone.now() - timedelta(hours=3))
    make_call(released, guardrails=[INJECTION], created_at=timezone.now() - timedelta(minutes=5))

    hour = rita.get(url("call_guardrails"), {"within": "1h"})
    day = rita.get(url("call_guardrails"), {"within": "24h"})
    unknown = rita.get(url("call_guardrails"), {"within": "1y"})

    assert [r[2] for r in counted(hour)] == ["injection"]
    assert sorted(r[2] for r in counted(day)) == ["injection", "pii"]
    assert unknown.context["window"] == "7d"


def test_a_quiet_window_says_no_check_fired(rita, released):
    make_call(released)

    assert "No guardrail check fired in this window." in text(rita.get(url("call_guardrails")))


def test_the_page_costs_the_same_queries_for_few_and_many_calls(
    rita, released, django_assert_max_num_queries
):
    make_call(released, guardrails=[EMAIL])
    with CaptureQueriesContext(connection) as few:
        rita.get(url("call_guardrails"))
    for i in range(30):
        make_call(released, guardrails=[INJECTION if i % 2 else LEAK, DENIED])

    with django_assert_max_num_queries(len(few)):
        response = rita.get(url("call_guardrails"))

    assert sum(r[4] for r in counted(response)) == 61


def test_counting_reads_a_bounded_number_of_calls_and_says_when_there_were_more(released):
    for _ in range(4):
        make_call(released, guardrails=[EMAIL])

    counts = guardrail_counts(since=timezone.now() - timedelta(days=1), sample=3)

    assert (counts.calls, counts.truncated) == (3, True)
    assert [r.calls for r in counts.rows] == [3]


def test_the_call_list_links_the_page(rita, released):
    html = rita.get(url("call_changelist")).content.decode()

    assert f'href="{url("call_guardrails")}"' in html


def test_only_those_who_may_read_calls_see_the_page(client, author, released):
    client.force_login(author)
    assert client.get(url("call_guardrails")).status_code == 403
    client.logout()
    anonymous = client.get(url("call_guardrails"))
    assert anonymous.status_code == 302
    assert "/login/" in anonymous["Location"]
