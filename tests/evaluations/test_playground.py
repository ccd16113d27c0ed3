"""The admin's playground (issue 15, item 5; decision 0036): a version or a draft run on the run
path from the admin, streamed; two side by side; an input and its output saved as a case; the
calls recorded with their own source and left out of release traffic.

Personas (STYLE R14): ``author`` (in "Prompt authors": may run the playground and add cases),
``manager_user`` (in "Release managers" only: reads calls and versions, may not run), ``outsider``
(staff in no group). The model is the local fake (``model_server``): every run is real.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from evaluations.datasets.services import dataset_create, dataset_import
from evaluations.models import Case, Dataset
from registry.models import PromptVersion
from releases.models import Environment
from runs.execution import run_call
from runs.models import Call, ModelPrice, Provider
from runs.playground import PlaygroundInvalid, Target, playground_prepare, playground_record
from tests.api.helpers import PROBLEM_JSON, sse_events
from tests.conftest import RELEASED_VARIABLES
from tests.evaluations.test_case_editing import logged_in, user_in
from tests.factories import AUTHOR, ORDER_LOOKUP, PromptFactory, UserFactory, make_version

pytestmark = pytest.mark.django_db

GOOD = {"var_customer_name": "Ada", "var_order_total": "12.5", "locale": ""}


@pytest.fixture
def author_client(author) -> Client:
    return logged_in(author)


@pytest.fixture
def v3(released) -> PromptVersion:
    return released.versions[3]


@pytest.fixture
def golden(released) -> Dataset:
    dataset = dataset_create(prompt=released.prompt, name="golden", actor=AUTHOR)
    rows = [
        {"key": "bo", "variables": {"customer_name": "Bo"}, "locale": "fr"},
        {"key": "held", "variables": {"customer_name": "Hidden"}, "holdout": True},
    ]
    content = "".join(
        json.dumps({**row, "expectation": {"scorer": "contains", "value": "x"}}) + "\n"
        for row in rows
    )
    dataset_import(dataset=dataset, content=content, format="jsonl")
    return dataset


def page_url(version: PromptVersion) -> str:
    return reverse("admin:playground", args=[version.pk])


def run(client: Client, page: PromptVersion, **fields: str):
    """One column's run from ``page``'s playground (``version=<id>``: another version)."""
    return client.post(reverse("admin:playground_run", args=[page.pk]), {**GOOD, **fields})


def save_case(client: Client, version: PromptVersion, **doc):
    return client.post(
        reverse("admin:playground_case", args=[version.pk]),
        json.dumps(doc),
        content_type="application/json",
    )


def problem(response, status: int) -> dict:
    assert response["Content-Type"] == PROBLEM_JSON, response.status_code
    assert response.status_code == status, response.content[:2000]
    body = response.json()
    assert body["type"].startswith("/problems/")
    assert body["title"]
    assert body["detail"]
    return body


# --- who may run it -------------------------------------------------------------------------------


def test_prompt_authors_may_run_the_playground_release_managers_may_not():
    authors = Group.objects.get(name="Prompt authors")
    managers = Group.objects.get(name="Release managers")
    assert authors.permissions.filter(codename="run_playground").exists()
    assert not managers.permissions.filter(codename="run_playground").exists()


def test_only_those_who_may_run_it_see_the_page_and_its_link(author_client, v3, model_server):
    assert author_client.get(page_url(v3)).status_code == 200
    version_page = author_client.get(reverse("admin:registry_promptversion_change", args=[v3.pk]))
    assert page_url(v3).encode() in version_page.content

    for user in (user_in("rita", "Release managers"), user_in("olaf")):
        client = logged_in(user)
        assert client.get(page_url(v3)).status_code == 403
        assert run(client, v3).status_code == 403
        assert save_case(client, v3, output="x").status_code == 403
    version_page = logged_in(user_in("rita2", "Release managers")).get(
        reverse("admin:registry_promptversion_change", args=[v3.pk])
    )
    assert version_page.status_code == 200
    assert page_url(v3).encode() not in version_page.content
    assert not Call.objects.exists()


# --- the page's starting values ---------------------------------------------------------------


def test_the_inputs_start_from_the_last_preview_then_from_a_picked_case(author_client, v3, golden):
    preview = reverse("admin:registry_promptversion_preview", args=[v3.pk])
    author_client.get(preview, {"render": "1", "locale": "fr", "var_customer_name": "Zoé"})

    page = author_client.get(page_url(v3))
    assert page.context["start"] == "your last preview"
    assert page.context["form"]["var_customer_name"].value() == "Zoé"
    assert page.context["form"]["locale"].value() == "fr"

    bo = golden.cases.get(key="bo")
    page = author_client.get(page_url(v3), {"case": bo.pk})
    assert page.context["start"] == "case 'bo' of golden"
    assert page.context["form"]["var_customer_name"].value() == "Bo"
    # Authors never see a holdout case: not offered, and not taken when asked for by id.
    assert [c.key for c in page.context["cases"]] == ["bo"]
    held = golden.cases.get(key="held")
    page = author_client.get(page_url(v3), {"case": held.pk})
    assert page.context["case"] is None
    assert b"Hidden" not in page.content


def test_a_drafts_workbench_preview_is_remembered_for_its_playground(author_client, released):
    draft = make_version(released.prompt, commit=False, variables=RELEASED_VARIABLES)
    body = {
        "prompt": released.prompt.pk,
        "version": draft.pk,
        "locale": "en",
        "values": {"customer_name": "Wren"},
        "content": {
            "variables": RELEASED_VARIABLES,
            "model": {"provider": "local", "model": "echo-1"},
            "templates": {"en": {"instruction": "Hi {{ customer_name }}"}},
        },
    }
    answer = author_client.post(
        reverse("admin:registry_promptversion_workbench_preview"),
        json.dumps(body),
        content_type="application/json",
    )
    assert answer.status_code == 200

    page = author_client.get(page_url(draft))
    assert page.context["form"]["var_customer_name"].value() == "Wren"
    assert b"A draft runs as last saved." in page.content


# --- a run ----------------------------------------------------------------------------------------


def test_a_run_streams_its_answer_and_is_recorded_as_a_playground_call(
    author_client, v3, model_server
):
    local = Provider.objects.get(name="local")
    ModelPrice.objects.create(
        provider=local, model="echo-1", input_per_million=1, output_per_million=2
    )

    response = run(author_client, v3)

    assert response["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert (kinds[0], kinds[-1]) == ("start", "done")
    assert "token" in kinds
    start, done = events[0][1], events[-1][1]
    assert (start["version"], start["provider"], start["model"]) == (3, "local", "echo-1")
    assert start["variables"] == {"customer_name": "Ada", "order_total": 12.5}
    streamed = "".join(data["text"] for kind, data in events if kind == "token")
    assert streamed == done["output"]
    assert "Ada" in done["output"]
    assert done["usage"]["input_tokens"] > 0
    assert done["usage"]["output_tokens"] > 0
    assert Decimal(done["cost"]) > 0
    assert done["latency_ms"] >= 0
    assert done["time_to_first_token_ms"] is not None
    assert [a["outcome"] for a in done["attempts"]] == ["ok"]

    call = Call.objects.get()
    assert call.pk == done["call"]
    assert call.source == Call.Source.PLAYGROUND
    assert call.version == v3
    assert call.environment == Environment.objects.order_by("position").first()
    assert (call.variant, call.sticky, call.release_revision, call.subject_hash) == (
        "",
        False,
        None,
        "",
    )
    assert call.cost == Decimal(done["cost"])


def test_a_structured_answer_is_shown_parsed(author_client, released, model_server):
    schema = {
        "type": "object",
        "properties": {"reply": {"type": "string"}},
        "required": ["reply"],
        "additionalProperties": False,
    }
    version = make_version(
        released.prompt,
        variables=RELEASED_VARIABLES,
        model={"provider": "local", "model": "echo-1", "response_schema": schema},
    )

    done = sse_events(run(author_client, version))[-1]

    assert done[0] == "done"
    assert set(done[1]["parsed"]) == {"reply"}
    assert json.loads(done[1]["output"]) == done[1]["parsed"]


def test_a_tool_call_streams_in_as_it_comes_and_is_shown_whole(
    author_client, released, model_server
):
    version = make_version(
        released.prompt,
        variables=RELEASED_VARIABLES,
        model={"provider": "local", "model": "echo-1", "tools": [ORDER_LOOKUP]},
    )

    events = sse_events(run(author_client, version))

    deltas = [data for kind, data in events if kind == "tool_call"]
    assert deltas[0]["name"] == "order_lookup"
    assert len(deltas) > 2  # the arguments came in pieces
    streamed = "".join(d["arguments"] or "" for d in deltas)
    kind, done = events[-1]
    assert kind == "done"
    [call] = done["extra"]["tool_calls"]
    assert (call["name"], call["arguments"]) == ("order_lookup", json.loads(streamed))


def test_two_versions_or_two_models_run_on_the_same_inputs(author_client, released, model_server):
    v2, v3 = released.versions[2], released.versions[3]

    left = sse_events(run(author_client, v3, version=str(v2.pk)))
    right = sse_events(run(author_client, v3, version=str(v3.pk), model="echo-small"))

    assert (left[0][1]["version"], left[0][1]["model"]) == (2, "echo-1")
    assert (right[0][1]["version"], right[0][1]["model"]) == (3, "echo-small")
    assert left[-1][1]["output"].startswith("echo-1:")
    assert right[-1][1]["output"].startswith("echo-small:")
    assert list(Call.objects.order_by("id").values_list("version__number", "model")) == [
        (2, "echo-1"),
        (3, "echo-small"),
    ]


def test_another_model_drops_the_bindings_fallbacks(released, model_server):
    version = make_version(
        released.prompt,
        variables=RELEASED_VARIABLES,
        model={
            "provider": "local",
            "model": "fault-500",
            "fallbacks": [{"provider": "local", "model": "echo-1"}],
        },
    )
    own = playground_prepare(
        target=Target(version=version), locale=None, variables={"customer_name": "A"}
    )
    other = playground_prepare(
        target=Target(version=version, model="echo-small"),
        locale=None,
        variables={"customer_name": "A"},
    )
    assert [f.model for f in own.binding.fallbacks] == ["echo-1"]
    assert (other.binding.model, other.binding.fallbacks) == ("echo-small", ())


def test_a_version_of_another_prompt_is_not_a_choice(author_client, v3):
    other = make_version(PromptFactory(), variables=RELEASED_VARIABLES)
    body = problem(run(author_client, v3, version=str(other.pk)), 400)
    assert body["errors"] == [{"field": "version", "detail": "Not a version."}]


# --- bad input: in place, nothing run, nothing saved ----------------------------------------------


def test_a_missing_variable_and_a_bad_locale_are_refused_in_place(author_client, v3, model_server):
    body = problem(run(author_client, v3, var_customer_name=""), 400)
    assert [e["field"] for e in body["errors"]] == ["var_customer_name"]
    assert "customer_name" in body["errors"][0]["detail"]

    body = problem(run(author_client, v3, locale="not a tag"), 400)
    assert [e["field"] for e in body["errors"]] == ["locale"]

    body = problem(run(author_client, v3, var_order_total="lots"), 400)
    assert [e["field"] for e in body["errors"]] == ["var_order_total"]

    assert not Call.objects.exists()
    assert len(model_server.requests) == 0


def test_an_unknown_or_disabled_provider_is_refused_before_any_call(author_client, v3, db):
    Provider.objects.create(name="spare", base_url="http://127.0.0.1:9/v1", enabled=False)

    for provider in ("nowhere", "spare", "Bad Name"):
        body = problem(run(author_client, v3, provider=provider), 400)
        assert [e["field"] for e in body["errors"]] == ["provider"]
    body = problem(run(author_client, v3, model="two words"), 400)
    assert [e["field"] for e in body["errors"]] == ["model"]
    with pytest.raises(PlaygroundInvalid):
        playground_prepare(target=Target(version=v3, model="x" * 201), locale=None, variables={})
    assert not Call.objects.exists()


def test_a_provider_that_is_down_is_a_clear_error_and_only_the_failed_call_is_kept(
    author_client, v3, model_server
):
    Provider.objects.create(
        name="down", base_url="http://127.0.0.1:9/v1", timeout_seconds=1, max_retries=0
    )

    events = sse_events(run(author_client, v3, provider="down"))

    kind, error = events[-1]
    assert kind == "error"
    assert (error["status"], error["type"]) == (502, "/problems/provider-unavailable")
    assert [a["outcome"] for a in error["attempts"]] == ["connection_error"]
    call = Call.objects.get()
    assert (call.source, call.status, call.provider) == ("playground", "error", "down")
    assert not Case.objects.exists()


def test_a_provider_the_outbound_policy_refuses_is_said_so(
    author_client, v3, model_server, settings
):
    settings.PROVIDER_ALLOW_LOOPBACK = False

    kind, error = sse_events(run(author_client, v3))[-1]

    assert kind == "error"
    assert [a["outcome"] for a in error["attempts"]] == ["refused"]
    assert error["attempts"][0]["detail"]


# --- save as a case -------------------------------------------------------------------------------


def test_an_input_and_its_output_are_saved_as_a_case(author_client, v3, golden, model_server):
    done = sse_events(run(author_client, v3))[-1][1]

    answer = save_case(
        author_client,
        v3,
        dataset=golden.pk,
        key="ada-playground",
        variables={"customer_name": "Ada", "order_total": 12.5},
        locale="en",
        output=done["output"],
    )

    assert answer.status_code == 201, answer.content
    case = golden.cases.get(key="ada-playground")
    assert case.variables == {"customer_name": "Ada", "order_total": 12.5}
    assert case.expectation == {"scorer": "similarity", "value": done["output"], "threshold": 0.8}
    assert case.locale == ""  # the prompt's default
    assert answer.json()["url"] == reverse("admin:evaluations_case_change", args=[case.pk])


def test_a_bad_case_is_refused_in_place_and_nothing_is_saved(author_client, v3, golden):
    cases = golden.cases.count()
    body = problem(
        save_case(author_client, v3, dataset=golden.pk, key="x", variables={"nope": 1}, output="x"),
        400,
    )
    assert {e["field"] for e in body["errors"]} == {"variables"}  # unknown nope, no name
    taken = {"dataset": golden.pk, "key": "bo", "variables": {"customer_name": "B"}}
    body = problem(save_case(author_client, v3, output="x", **taken), 400)
    assert [e["field"] for e in body["errors"]] == ["key"]

    other = dataset_create(
        prompt=make_version(PromptFactory()).prompt, name="elsewhere", actor=AUTHOR
    )
    body = problem(save_case(author_client, v3, dataset=other.pk, output="x"), 400)
    assert body["errors"][0]["field"] == "dataset"
    problem(
        author_client.post(
            reverse("admin:playground_case", args=[v3.pk]), "[", content_type="application/json"
        ),
        400,
    )
    assert golden.cases.count() == cases
    assert not other.cases.exists()


# --- left out of release traffic ------------------------------------------------------------------


def test_playground_calls_are_left_out_of_the_calls_list_by_default_and_the_prompt_page(
    released, v3, author
):
    production = Environment.objects.get(name="production")
    for source in (Call.Source.RUN, Call.Source.PLAYGROUND):
        Call.objects.create(
            request_id=f"req-{source}",
            source=source,
            created_at=timezone.now(),
            prompt=released.prompt,
            version=v3,
            environment=production,
            status=Call.Status.OK,
        )
    client = logged_in(UserFactory(username="root", is_staff=True, is_superuser=True))
    listed = reverse("admin:runs_call_changelist")

    def request_ids(**query) -> list[str]:
        page = client.get(listed, query)
        return sorted(c.request_id for c in page.context["cl"].result_list)

    assert request_ids() == ["req-run"]
    assert request_ids(source="playground") == ["req-playground"]
    assert request_ids(source="all") == ["req-playground", "req-run"]
    hub = client.get(reverse("admin:registry_prompt_change", args=[released.prompt.pk]))
    assert b"req-playground" not in hub.content
    panels = {p.title: p for p in hub.context["panels"]}
    assert len(panels["Recent calls"].rows) == 1


def test_the_record_step_keeps_the_source_it_is_given(released, v3, model_server):
    prepared = playground_prepare(
        target=Target(version=v3), locale="fr-CA", variables={"customer_name": "Zoé"}
    )
    assert prepared.resolution.locale == "en"  # v3 has no French: the default
    recorded = playground_record(prepared=prepared, outcome=run_call(prepared), request_id="r-1")
    call = recorded.call
    assert recorded.kept
    assert call is not None
    assert (call.source, call.locale) == (Call.Source.PLAYGROUND, "en")
    assert call.inputs == {"customer_name": "Zoé"}


def test_a_drafts_includes_render_as_in_the_workbench(environments):
    # The playground is outside every environment: an include that follows renders the snippet's
    # latest committed version (v2 here, released nowhere), a pinned one its own version.
    voice = PromptFactory(key="brand.voice", is_snippet=True)
    make_version(voice, variables=[], templates={"en": {"system": "Be warm."}})
    make_version(voice, variables=[], templates={"en": {"system": "Be brief."}})
    draft = make_version(
        PromptFactory(),
        commit=False,
        variables=[],
        templates={
            "en": {
                "system": "{{ snippet('brand.voice') }}",
                "context": "Once: {{ snippet('brand.voice', version=1) }}",
            }
        },
    )

    prepared = playground_prepare(target=Target(version=draft), locale=None, variables={})

    assert (prepared.rendered.system, prepared.rendered.context) == ("Be brief.", "Once: Be warm.")
