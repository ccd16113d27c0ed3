"""The admin of calls and shadow runs, and the shadow report: read-only records, list filters,
readable and escaped detail pages, the report's numbers, and who may read what.

Personas (each with what it may do):
- ``rita`` (``release_manager``): in "Release managers", which holds ``runs.view_call`` and
  ``runs.view_shadowrun`` (granted by runs migration 0003): reads calls,
  shadow runs and the shadow report; changes none of them.
- ``alice`` (``author``, tests/conftest.py): in "Prompt authors": no runs permission, so every
  page here answers 403.
- ``root``: a superuser; still cannot add, change or delete a record.

Data: the ``released`` fixture (support.refund-reply v1, v2, v3; v2 stable in staging), with
calls and shadow runs written by the factory of tests/runs/test_selectors.py.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from runs.models import Call, ShadowRun
from tests.factories import UserFactory
from tests.runs.test_selectors import known_shadow, make_call, make_shadow, shadow_v3

pytestmark = pytest.mark.django_db

RUNS_VIEW = ["view_call", "view_shadowrun"]  # what the "Release managers" group holds
SCRIPT = '<script>alert("owned")</script>'
IMAGE = "<img src=x onerror=alert(1)>"


# --- personas -----------------------------------------------------------------------------------


def test_release_managers_may_read_calls_and_shadow_runs_by_migration() -> None:
    granted = Group.objects.get(name="Release managers").permissions.filter(
        content_type__app_label="runs"
    )
    assert sorted(granted.values_list("codename", flat=True)) == RUNS_VIEW


@pytest.fixture
def release_manager(db):
    user = UserFactory(username="rita", is_staff=True)
    user.groups.add(Group.objects.get(name="Release managers"))
    return user


@pytest.fixture
def rita(client: Client, release_manager) -> Client:
    client.force_login(release_manager)
    return client


@pytest.fixture
def root(client: Client) -> Client:
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


def url(name: str, *args: object) -> str:
    return reverse(f"admin:runs_{name}", args=args)


def report_url(release, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return url("shadowrun_report", release.pk) + (f"?{query}" if query else "")


def text(response) -> str:
    """The page's visible text, spaces collapsed: assertions read like the page does."""
    body = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", response.content.decode(), flags=re.S)
    body = re.sub(r"<[^>]+>", " ", body)
    body = body.replace("&nbsp;", " ").replace("&amp;", "&").replace("&quot;", '"')
    return re.sub(r"\s+", " ", body)


def listed(response) -> list[str]:
    """The request ids of the changelist's rows, in order."""
    assert response.status_code == 200
    return [
        row.request_id if isinstance(row, Call) else row.call.request_id
        for row in response.context["cl"].result_list
    ]


# --- the call list ------------------------------------------------------------------------------


def test_the_call_list_shows_what_each_call_was(rita, released):
    make_call(
        released,
        request_id="req-shown",
        latency_ms=1234.0,
        input_tokens=1500,
        output_tokens=42,
        cost=Decimal("0.00123"),
        feedback=0.5,
    )

    page = text(rita.get(url("call_changelist")))

    row = re.search(r"support\.refund-reply v2 staging stable Ok echo-1 .*? 0\.5", page)
    assert row is not None, page
    assert "1,234 ms" in row.group(0)
    assert "1,500 / 42" in row.group(0)  # under the column "Tokens in / out"
    assert "0.00123" in row.group(0)


def call_list_queries(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url("call_changelist"))
    assert response.status_code == 200
    return len(queries)


def test_the_call_list_costs_the_same_queries_for_3_and_30_calls(
    rita, released, django_assert_max_num_queries
):
    for _ in range(3):
        make_call(released)
    few = call_list_queries(rita)
    for i in range(27):
        make_call(released, version=1 + i % 3, environment=("staging", "production")[i % 2])

    with django_assert_max_num_queries(few):
        response = rita.get(url("call_changelist"))

    assert len(listed(response)) == 30


@pytest.fixture
def assorted(released) -> dict[str, Call]:
    now = timezone.now()
    return {
        "stable": make_call(released, request_id="stable", created_at=now - timedelta(minutes=1)),
        "canary": make_call(
            released,
            request_id="canary",
            version=3,
            variant="canary",
            created_at=now - timedelta(minutes=2),
        ),
        "failed": make_call(
            released,
            request_id="failed",
            status=Call.Status.ERROR,
            error_class="ProviderUnavailable",
            created_at=now - timedelta(hours=3),
        ),
        "reported": make_call(
            released,
            request_id="reported",
            version=1,
            environment="production",
            source=Call.Source.REPORTED,
            variant="B",
            created_at=now - timedelta(days=2),
        ),
    }


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["stable", "canary", "failed", "reported"]),
        ({"status__exact": "error"}, ["failed"]),
        ({"variant": "canary"}, ["canary"]),
        ({"variant": "B"}, ["reported"]),
        ({"source__exact": "reported"}, ["reported"]),
        ({"within": "1h"}, ["stable", "canary"]),
        ({"within": "24h"}, ["stable", "canary", "failed"]),
        ({"within": "7d"}, ["stable", "canary", "failed", "reported"]),
        ({"environment": "production"}, ["reported"]),
        ({"prompt": True, "version": 3}, ["canary"]),
    ],
)
def test_the_call_list_filters(rita, released, assorted, params, expected):
    query = dict(params)
    if query.pop("prompt", None):
        query["prompt__id__exact"] = released.prompt.pk
    if "version" in query:
        query["version"] = released.versions[query["version"]].pk
    if "environment" in query:
        query["environment__id__exact"] = released.environments[query.pop("environment")].pk

    assert listed(rita.get(url("call_changelist"), query)) == expected


def filter_choices(response, title: str) -> list[str]:
    spec = next((s for s in response.context["cl"].filter_specs if s.title == title), None)
    if spec is None or not spec.has_output():
        return []
    return [choice["display"] for choice in spec.choices(response.context["cl"])]


def test_versions_are_offered_once_a_prompt_is_chosen_and_variants_from_recent_calls(
    rita, released, assorted
):
    everything = rita.get(url("call_changelist"))
    one_prompt = rita.get(url("call_changelist"), {"prompt__id__exact": released.prompt.pk})

    assert filter_choices(everything, "version") == []
    assert filter_choices(one_prompt, "version") == ["All", "v3", "v2", "v1"]
    assert filter_choices(everything, "variant") == ["All", "stable", "canary", "B"]
    assert filter_choices(everything, "time") == [
        "All",
        "Last hour",
        "Last 24 hours",
        "Last 7 days",
    ]


def test_the_search_finds_a_call_by_its_exact_request_id(rita, released, assorted):
    assert listed(rita.get(url("call_changelist"), {"q": " failed "})) == ["failed"]
    assert listed(rita.get(url("call_changelist"), {"q": "fail"})) == []


# --- a call's page ------------------------------------------------------------------------------


def test_a_call_page_shows_inputs_output_attempts_and_its_shadow_runs(rita, released):
    release = shadow_v3(released)
    call = make_call(
        released,
        inputs={"customer_name": "Ada", "order_total": 12.5},
        conversation=[{"role": "user", "content": "Where is my refund?"}],
        output="Dear Ada,\nyour refund of 12.50 is on its way.",
        attempts=[
            {
                "provider": "local",
                "model": "echo-1",
                "outcome": "timeout",
                "detail": "no answer in 30 s",
                "latency_ms": 30000.0,
            },
            {
                "provider": "local",
                "model": "echo-2",
                "outcome": "ok",
                "detail": "",
                "latency_ms": 812.0,
            },
        ],
    )
    make_shadow(released, call, version=3, exact_match=False, output="Hi Ada. Refund sent.")

    response = rita.get(url("call_change", call.pk))

    page, html = text(response), response.content.decode()
    assert response.status_code == 200
    assert (
        "{\n  &quot;customer_name&quot;: &quot;Ada&quot;,\n  &quot;order_total&quot;: 12.5\n}"
        in html
    )
    assert "&quot;content&quot;: &quot;Where is my refund?&quot;" in html  # the conversation
    assert "Dear Ada,\nyour refund of 12.50 is on its way." in html  # in a <pre>, lines kept
    assert "local/echo-1 timeout no answer in 30 s 30 s" in page
    assert "local/echo-2 ok 812 ms" in page
    assert "Candidate v3 Ok 0.5 100 ms 0.002 Hi Ada. Refund sent." in page  # the inline
    assert report_url(release) in html
    assert 'name="_save"' not in html  # read-only: nothing to save


def test_nobody_adds_changes_or_deletes_a_call_not_even_a_superuser(root, released):
    call = make_call(released)

    add = root.get(url("call_add"))
    change = root.post(url("call_change", call.pk), {"output": "rewritten"})
    delete = root.post(url("call_delete", call.pk), {"post": "yes"})

    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    call.refresh_from_db()
    assert call.output == "Hello Ada, your refund is on its way."


def test_an_author_sees_no_call_and_no_shadow_run(client, author, released):
    call = make_call(released)
    run = make_shadow(released, call, version=3)
    client.force_login(author)

    responses = [
        client.get(url("call_changelist")),
        client.get(url("call_change", call.pk)),
        client.get(url("shadowrun_changelist")),
        client.get(url("shadowrun_change", run.pk)),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403, 403]


# --- the shadow run list --------------------------------------------------------------------------


def test_the_shadow_run_list_filters_by_release_and_kind_and_links_the_report(rita, released):
    release = shadow_v3(released)
    call = make_call(released, request_id="shadowed")
    make_shadow(released, call, version=3)
    make_shadow(released, call, version=2, kind=ShadowRun.Kind.NOISE)
    production = make_call(released, request_id="prod", environment="production")
    make_shadow(released, production, version=1, kind=ShadowRun.Kind.NOISE)

    every = rita.get(url("shadowrun_changelist"))
    staging = rita.get(url("shadowrun_changelist"), {"release": release.pk})
    noise = rita.get(url("shadowrun_changelist"), {"kind__exact": "noise"})

    assert sorted(listed(every)) == ["prod", "shadowed", "shadowed"]
    assert listed(staging) == ["shadowed", "shadowed"]
    assert sorted(listed(noise)) == ["prod", "shadowed"]
    assert filter_choices(every, "release") == [
        "All",
        "support.refund-reply @ staging",
        "support.refund-reply @ production",
    ]
    assert report_url(release) in every.content.decode()


def test_the_shadow_run_list_costs_the_same_queries_for_2_and_20_runs(
    rita, released, django_assert_max_num_queries
):
    shadow_v3(released)
    for _ in range(2):
        make_shadow(released, make_call(released), version=3)
    with CaptureQueriesContext(connection) as queries:
        rita.get(url("shadowrun_changelist"))
    for _ in range(18):
        make_shadow(released, make_call(released, environment="production"), version=1)

    with django_assert_max_num_queries(len(queries)):
        response = rita.get(url("shadowrun_changelist"))

    assert len(listed(response)) == 20


def test_a_shadow_run_page_shows_both_answers_and_the_json_differences(rita, released):
    shadow_v3(released)
    call = make_call(released, output='{"amount": 12, "currency": "EUR"}')
    run = make_shadow(
        released,
        call,
        version=3,
        exact_match=False,
        output='{"amount": 13, "currency": "EUR"}',
        similarity=0.9,
        structure_diff=["/amount"],
    )

    response = rita.get(url("shadowrun_change", run.pk))

    page = text(response)
    assert response.status_code == 200
    assert 'Live (v2) {"amount": 12, "currency": "EUR"}' in page
    assert 'Candidate (v3) {"amount": 13, "currency": "EUR"}' in page
    assert "Differences: /amount" in page.replace("Differences /amount", "Differences: /amount")
    assert call.request_id in page


# --- the shadow report ----------------------------------------------------------------------------


def test_the_report_shows_live_candidates_and_the_noise_floor_side_by_side(rita, released):
    release = known_shadow(released)

    response = rita.get(report_url(release))

    page = text(response)
    assert response.status_code == 200
    assert "Shadow report: support.refund-reply @ staging" in page
    assert "Live (v2) Candidate v3 Noise floor (v2 again)" in page
    assert "Runs Live: the calls that were shadowed. 44 44 40" in page
    assert "Skipped (over budget) — 1 0" in page
    assert "the reference 47.6 % (20 of 42) 90 % (36 of 40)" in page
    assert "Mean similarity 0 (unlike) to 1 (identical), over answered runs. — 0.75 0.98" in page
    assert "Latency p50 220 ms 200 ms 5 ms" in page
    assert (
        "Latency p95 Over the latest answered runs (at most 5,000 per side). 420 ms 380 ms 5 ms"
        in page
    )
    assert "Mean cost per run 0.001 0.002 0.001" in page
    assert "Total cost 0.044 0.08 0.04" in page
    assert "Tokens 4,400 in / 880 out 4,000 in / 1,200 out 4,000 in / 1,200 out" in page
    assert "differs more than the noise floor z = 4.12" in page


def test_the_report_lists_the_disagreeing_pairs_side_by_side(rita, released):
    release = shadow_v3(released)
    call = make_call(
        released, request_id="req-pair", output='{"amount": 12}', inputs={"customer_name": "Ada"}
    )
    make_shadow(
        released,
        call,
        version=3,
        exact_match=False,
        output='{"amount": 13}',
        similarity=0.875,
        structure_diff=["/amount"],
    )
    noisy = make_call(released, request_id="req-noise")
    make_shadow(released, noisy, version=2, kind=ShadowRun.Kind.NOISE, exact_match=False)

    candidates = text(rita.get(report_url(release)))
    noise = text(rita.get(report_url(release, pairs="noise")))

    assert "request req-pair · live v2 vs candidate v3 · similarity 0.875" in candidates
    assert 'Live answer (v2) {"amount": 12} Shadow answer (v3) {"amount": 13}' in candidates
    assert "JSON differences /amount" in candidates
    assert '"customer_name": "Ada"' in candidates
    assert "req-noise" not in candidates
    assert "request req-noise · live v2 vs noise floor v2" in noise
    assert "req-pair" not in noise


def test_the_time_window_selects_the_runs(rita, released):
    release = shadow_v3(released)
    old = make_call(released, request_id="req-old", created_at=timezone.now() - timedelta(days=3))
    make_shadow(released, old, version=3, exact_match=False)

    last_hour = rita.get(report_url(release, window="1h"))
    everything = rita.get(report_url(release, window="all"))
    nonsense = rita.get(report_url(release, window="forever"))

    assert "No shadow runs in this window." in text(last_hour)
    assert "req-old" not in text(last_hour)
    assert "req-old" in text(everything)
    assert "Every run." in text(everything)
    assert nonsense.context["window"] == "7d"  # an unknown window falls back to the default
    assert "req-old" in text(nonsense)


def test_the_report_costs_the_same_queries_for_few_and_many_runs(
    rita, released, django_assert_max_num_queries
):
    release = shadow_v3(released)
    make_shadow(released, make_call(released), version=3, exact_match=False)
    with CaptureQueriesContext(connection) as queries:
        rita.get(report_url(release))
    for i in range(40):
        call = make_call(released)
        make_shadow(released, call, version=3, exact_match=i % 2 == 0)
        make_shadow(released, call, version=2, kind=ShadowRun.Kind.NOISE, exact_match=i % 4 == 0)

    with django_assert_max_num_queries(len(queries)):
        response = rita.get(report_url(release))

    assert response.status_code == 200


def test_outputs_are_escaped_never_marked_safe(rita, released):
    release = shadow_v3(released)
    call = make_call(released, output=SCRIPT, inputs={"customer_name": IMAGE})
    run = make_shadow(
        released, call, version=3, exact_match=False, output=IMAGE, structure_diff=[SCRIPT]
    )

    pages = [
        rita.get(report_url(release)),
        rita.get(url("call_change", call.pk)),
        rita.get(url("shadowrun_change", run.pk)),
    ]

    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert SCRIPT not in html
        assert IMAGE not in html
        assert "&lt;script&gt;alert(" in html or "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[0].content.decode()
    assert "&lt;script&gt;alert(" in pages[0].content.decode()


@pytest.mark.parametrize("persona", ["author", "outsider", "calls_only"])
def test_the_report_needs_both_view_permissions(client, released, author, persona):
    release = shadow_v3(released)
    call = make_call(released, request_id="req-secret")
    make_shadow(released, call, version=3, exact_match=False)
    user = {
        "author": author,
        "outsider": UserFactory(username="carol", is_staff=True),
        "calls_only": UserFactory(username="dave", is_staff=True),
    }[persona]
    if persona == "calls_only":
        user.user_permissions.add(Permission.objects.get(codename="view_call"))
    client.force_login(user)

    response = client.get(report_url(release))

    assert response.status_code == 403
    assert "req-secret" not in response.content.decode()


def test_anonymous_visitors_are_sent_to_the_login_page(client, released):
    release = shadow_v3(released)

    response = client.get(report_url(release))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_an_unknown_release_has_no_report(rita, released):
    assert rita.get(url("shadowrun_report", 999_999)).status_code == 404


# --- the link from the release page -------------------------------------------------------------


def test_the_release_page_links_the_report_where_there_are_or_were_shadows(rita, released):
    staging = shadow_v3(released)
    production = released.release("production")
    release_page = "admin:releases_release_change"

    shadowed = rita.get(reverse(release_page, args=[staging.pk])).content.decode()
    never = rita.get(reverse(release_page, args=[production.pk])).content.decode()
    make_shadow(released, make_call(released, environment="production"), version=1)
    had_runs = rita.get(reverse(release_page, args=[production.pk])).content.decode()

    assert f'href="{report_url(staging)}"' in shadowed
    assert url("shadowrun_report", production.pk) not in never
    assert f'href="{report_url(production)}"' in had_runs
