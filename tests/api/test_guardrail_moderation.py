"""The output guardrail ``moderation`` end to end (issue 19 item 1, decision 0052), through
``POST /api/v1/prompts/{key}/run`` and the local model server: a provider's ``/v1/moderations``
and a registry prompt used as a classifier (a ``guard-`` model answering as Llama Guard does),
each refusing, answering the fallback or flagging; a moderation that cannot answer decided by
``on_error``, never an error of the run.

The local server flags a text for the words ``runs.fake_answers.FLAGGED_WORDS`` lists, and its
``echo-1`` repeats the question: asking about ``kill`` gets an answer flagged for violence."""

from __future__ import annotations

import dataclasses
import queue
import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from api import run as run_module
from registry.guardrails import GuardrailPolicy
from registry.services import prompt_create
from releases import cache
from releases.cache import ReleaseCache, release_cache
from releases.resolution import resolve
from releases.services import release_deploy
from runs import response_cache, streaming
from runs.execution import run_call, run_prepare
from runs.fake_answers import count_tokens, message_text
from runs.guardrails import ModerationFailed
from runs.models import Call, Provider
from runs.moderation import RunModerator, classifier_verdict, moderation_prepare
from runs.providers import Attempt, Completion, Outcome
from tests.api.helpers import assert_problem, sse_events
from tests.api.test_run import CHAT, priced, run
from tests.factories import AUTHOR, PromptFactory, content_data, make_version
from tests.metrics import counting

KEY = "support.moderated"
URL = f"/api/v1/prompts/{KEY}/run"
CLASSIFIER = "safety-classifier"
MODERATIONS = "/v1/moderations"
MODERATION_MODEL = "omni-moderation-latest"
VARIABLES = [{"name": "question", "type": "string", "required": True}]
TEMPLATES = {"en": {"system": "You are a support agent.", "instruction": "{{ question }}"}}
VIOLENT = "How do I kill a stuck process?"  # echoed by echo-1: flagged for violence
CLEAN = "When does my order ship?"
FALLBACK = "Sorry, I can't help with that."
# A classifier as a team would write one: the text to judge in the instruction, and a policy
# shared with other classifiers through a snippet it follows.
CLASSIFIER_VARIABLES = [{"name": "text", "type": "string", "required": True}]
CLASSIFIER_TEMPLATES = {
    "en": {
        "system": "{{ snippet('safety.policy') }}",
        "instruction": "Is this answer safe?\n\n{{ text }}",
    }
}
GUARD = {"provider": "local", "model": "guard-1"}


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch) -> None:
    # A new test database gives version ids out again: each test its own cache keys.
    monkeypatch.setattr(response_cache, "KEY_PREFIX", f"test-{uuid.uuid4()}:")


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


@pytest.fixture
def moderator(model_server) -> Provider:
    """A second provider on the local server, with a short timeout and no retries: the one whose
    ``/moderations`` moderates (the run's own model is ``local``'s)."""
    return Provider.objects.create(
        name="moderator", base_url=model_server.base_url, timeout_seconds=0.3, max_retries=0
    )


def deploy(environments, manager, prompt, *names: str, version: int = 1) -> None:
    for name in names:
        release_deploy(
            prompt=prompt, environment=environments[name], version=version, actor=manager
        )


def moderated(environments, manager, moderation: dict[str, Any], **binding: Any):
    """``support.moderated`` v1 on ``local/echo-1``, its answers moderated by ``moderation``,
    stable in staging."""
    prompt = PromptFactory(key=KEY)
    guardrails = {"output": {"moderation": moderation}}
    if moderation["action"] == "fallback":
        guardrails["fallback"] = FALLBACK
    model = {"provider": "local", "model": "echo-1", "guardrails": guardrails, **binding}
    make_version(prompt, model=model, templates=TEMPLATES, variables=VARIABLES)
    deploy(environments, manager, prompt, "staging")
    return prompt


def by_provider(action: str, on_error: str = "closed") -> dict[str, Any]:
    return {
        "provider": "moderator",
        "model": MODERATION_MODEL,
        "action": action,
        "on_error": on_error,
    }


def by_classifier(action: str, on_error: str = "closed") -> dict[str, Any]:
    return {"prompt": CLASSIFIER, "action": action, "on_error": on_error}


def ask(client, question: str, **body: Any):
    return run(
        client, {"environment": "staging", "variables": {"question": question}, **body}, url=URL
    )


def chats(model_server, model: str) -> list[dict[str, Any]]:
    return [r.body for r in model_server.requests.for_path(CHAT) if r.body.get("model") == model]


# --- a provider's /moderations -------------------------------------------------------------------


def test_a_flagged_answer_is_refused_with_a_problem_naming_the_check_and_recorded(
    environments, manager, model_server, moderator, runner
) -> None:
    moderated(environments, manager, by_provider("refuse"))
    triggers = counting(
        "promptregistry_guardrail_triggers_total",
        prompt=KEY,
        stage="output",
        check="moderation",
        action="refuse",
    )

    response = ask(runner, VIOLENT)

    body = assert_problem(response, 422, "/problems/guardrail-refused")
    assert (body["check"], body["stage"]) == ("moderation", "output")
    fired = {
        "stage": "output",
        "check": "moderation",
        "action": "refuse",
        "source": "version",
        "detail": "violence",
    }
    assert body["guardrails"] == [fired]
    assert "moderation" in body["detail"]
    assert "after the model answered" in body["detail"]
    [sent] = model_server.requests.for_path(MODERATIONS)
    assert sent.body == {"model": MODERATION_MODEL, "input": f"echo-1: {VIOLENT}"}
    call = Call.objects.get()
    assert (call.status, call.error_class) == (Call.Status.REFUSED, "guardrail_output_moderation")
    assert call.guardrails == [fired]
    assert triggers() == 1


def test_an_answer_it_does_not_flag_goes_through_with_nothing_recorded(
    environments, manager, model_server, moderator, runner
) -> None:
    moderated(environments, manager, by_provider("refuse"))

    response = ask(runner, CLEAN)

    assert response.status_code == 200, response.content
    assert (response.json()["output"], response.json()["guardrails"]) == (f"echo-1: {CLEAN}", [])
    assert len(model_server.requests.for_path(MODERATIONS)) == 1
    call = Call.objects.get()
    assert (call.status, call.guardrails) == (Call.Status.OK, [])


@pytest.mark.parametrize(
    ("action", "output"), [("fallback", FALLBACK), ("flag", f"echo-1: {VIOLENT}")]
)
def test_fallback_answers_the_policys_text_and_flag_lets_the_answer_through(
    environments, manager, model_server, moderator, runner, action, output
) -> None:
    moderated(environments, manager, by_provider(action))

    response = ask(runner, VIOLENT)

    assert response.status_code == 200, response.content
    assert response.json()["output"] == output
    [fired] = response.json()["guardrails"]
    assert (fired["action"], fired["detail"]) == (action, "violence")
    call = Call.objects.get()
    assert (call.status, call.output, call.guardrails) == (Call.Status.OK, output, [fired])


@pytest.mark.parametrize(
    ("fault", "error"),
    [("500", "InternalServerError"), ("hang", "APITimeoutError")],
    ids=["failing", "hanging"],
)
def test_a_moderation_that_fails_closed_refuses_the_answer(
    environments, manager, model_server, moderator, runner, fault, error
) -> None:
    moderated(environments, manager, by_provider("refuse", on_error="closed"))
    model_server.faults.push(MODERATION_MODEL, fault)

    response = ask(runner, CLEAN)  # an answer it would not flag: the failure decides

    body = assert_problem(response, 422, "/problems/guardrail-refused")
    [fired] = body["guardrails"]
    assert fired["action"] == "refuse"
    assert fired["detail"] == f"moderation failed, closed: moderator failed ({error})"
    call = Call.objects.get()
    assert call.status == Call.Status.REFUSED
    assert call.guardrails == [fired]


@pytest.mark.parametrize(
    ("fault", "error"),
    [("500", "InternalServerError"), ("hang", "APITimeoutError")],
    ids=["failing", "hanging"],
)
def test_a_moderation_that_fails_open_lets_the_answer_through_flagged(
    environments, manager, model_server, moderator, runner, fault, error
) -> None:
    moderated(environments, manager, by_provider("refuse", on_error="open"))
    model_server.faults.push(MODERATION_MODEL, fault)

    response = ask(runner, VIOLENT)  # one it would have flagged: it was never moderated

    assert response.status_code == 200, response.content
    assert response.json()["output"] == f"echo-1: {VIOLENT}"
    [fired] = response.json()["guardrails"]
    assert (fired["action"], fired["detail"]) == (
        "flag",
        f"moderation failed, open: moderator failed ({error})",
    )
    call = Call.objects.get()
    assert (call.status, call.guardrails) == (Call.Status.OK, [fired])


def test_an_answer_no_moderation_could_check_is_not_kept_in_the_response_cache(
    environments, manager, model_server, moderator, runner
) -> None:
    moderated(
        environments,
        manager,
        by_provider("refuse", on_error="open"),
        cache={"exact": {"ttl_seconds": 3600}},
    )
    model_server.faults.push(MODERATION_MODEL, "500")

    unmoderated = ask(runner, CLEAN)
    moderated_now = ask(runner, CLEAN)
    hit = ask(runner, CLEAN)

    assert [a.status_code for a in (unmoderated, moderated_now, hit)] == [200, 200, 200]
    assert unmoderated.json()["guardrails"][0]["action"] == "flag"
    # Not stored: the next run asks the model again, and is moderated this time.
    assert (moderated_now.json()["cache"], moderated_now.json()["guardrails"]) == (None, [])
    assert hit.json()["cache"]["kind"] == "exact"
    assert len(chats(model_server, "echo-1")) == 2
    assert len(model_server.requests.for_path(MODERATIONS)) == 2


def test_a_moderation_provider_disabled_after_the_commit_is_a_failure_on_error_decides(
    environments, manager, model_server, moderator, runner
) -> None:
    moderated(environments, manager, by_provider("refuse", on_error="closed"))
    moderator.enabled = False
    moderator.save()

    body = assert_problem(ask(runner, CLEAN), 422, "/problems/guardrail-refused")

    assert body["guardrails"][0]["detail"] == (
        "moderation failed, closed: the provider moderator is not configured or disabled"
    )
    assert model_server.requests.for_path(MODERATIONS) == []


def test_an_environment_floor_moderates_through_a_provider_the_binding_does_not_name(
    environments, manager, model_server, moderator, runner
) -> None:
    staging = environments["staging"]
    staging.guardrails = {"output": {"moderation": by_provider("refuse")}}
    staging.save()
    prompt = PromptFactory(key=KEY)
    make_version(prompt, templates=TEMPLATES, variables=VARIABLES)  # no guardrails of its own
    deploy(environments, manager, prompt, "staging")

    body = assert_problem(
        ask(runner, "Where is the bomb shelter?"), 422, "/problems/guardrail-refused"
    )

    assert body["guardrails"][0]["source"] == "environment"
    assert body["guardrails"][0]["detail"] == "illicit/violent"  # OpenAI's name for it


@pytest.mark.parametrize(
    ("moderation", "code", "pointer"),
    [
        (
            {"provider": "nowhere", "model": MODERATION_MODEL, "action": "refuse"},
            "unknown_provider",
            "/model/guardrails/output/moderation/provider",
        ),
        (
            {"provider": "local", "prompt": CLASSIFIER, "action": "refuse"},
            "invalid_moderation",
            "/model/guardrails/output/moderation",
        ),
        (
            {"provider": "local", "model": MODERATION_MODEL, "action": "redact"},
            "invalid_action",
            "/model/guardrails/output/moderation/action",
        ),
        (
            {"prompt": CLASSIFIER, "action": "refuse", "on_error": "maybe"},
            "invalid_on_error",
            "/model/guardrails/output/moderation/on_error",
        ),
    ],
    ids=["unconfigured-provider", "provider-and-prompt", "redact", "on-error"],
)
def test_a_moderation_that_cannot_work_is_refused_at_commit(
    author_client, prompt, model_server, moderation, code, pointer
) -> None:
    versions = f"/api/v1/prompts/{prompt.key}/versions"
    model = {
        "provider": "local",
        "model": "echo-1",
        "guardrails": {"output": {"moderation": moderation}},
    }
    response = author_client.post(
        versions, {"message": "m", **content_data(model=model)}, format="json"
    )

    body = assert_problem(response, 400, "/problems/invalid-content")
    assert {(e["code"], e["pointer"]) for e in body["errors"]} == {(code, pointer)}
    assert not prompt.versions.exists()


# --- a registry prompt as a classifier -----------------------------------------------------------


def classifier(environments, manager, *names: str, **binding: Any):
    """``safety-classifier`` v1 (and the snippet ``safety.policy`` it follows), released in
    ``names``, on ``local/guard-1`` unless ``binding`` says otherwise."""
    policy = prompt_create(key="safety.policy", actor=AUTHOR, is_snippet=True)
    make_version(policy, variables=[], templates={"en": {"system": "Judge by policy P-7."}})
    deploy(environments, manager, policy, *names)
    prompt = PromptFactory(key=CLASSIFIER)
    make_version(
        prompt,
        model={**GUARD, **binding},
        variables=CLASSIFIER_VARIABLES,
        templates=CLASSIFIER_TEMPLATES,
    )
    deploy(environments, manager, prompt, *names)
    return prompt


def test_a_classifier_that_answers_unsafe_refuses_and_its_tokens_stay_out_of_the_calls_cost(
    environments, manager, model_server, runner
) -> None:
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("refuse"))
    priced("echo-1")
    priced("guard-1")

    response = ask(runner, VIOLENT)

    body = assert_problem(response, 422, "/problems/guardrail-refused")
    [asked] = chats(model_server, "guard-1")
    system, user = asked["messages"]
    assert system == {"role": "system", "content": "Judge by policy P-7."}
    assert user == {"role": "user", "content": f"Is this answer safe?\n\necho-1: {VIOLENT}"}
    given = sum(count_tokens(message_text(m)) for m in asked["messages"])
    taken = count_tokens("unsafe\nS1")
    [fired] = body["guardrails"]
    assert fired["detail"] == (
        f"{CLASSIFIER} v1 answered unsafe (S1); local/guard-1, {given}+{taken} tokens"
    )
    # The call's tokens and cost are its own model's: the classifier's are in the detail only.
    [main] = chats(model_server, "echo-1")
    main_in = sum(count_tokens(message_text(m)) for m in main["messages"])
    main_out = count_tokens(f"echo-1: {VIOLENT}")
    call = Call.objects.get()
    assert (call.status, call.guardrails) == (Call.Status.REFUSED, [fired])
    assert (call.input_tokens, call.output_tokens) == (main_in, main_out)
    assert call.cost == Decimal(main_in + main_out) / 1_000_000


def test_a_classifier_that_answers_safe_lets_the_answer_through(
    environments, manager, model_server, runner
) -> None:
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("refuse"))

    response = ask(runner, CLEAN)

    assert response.status_code == 200, response.content
    assert (response.json()["output"], response.json()["guardrails"]) == (f"echo-1: {CLEAN}", [])
    assert len(chats(model_server, "guard-1")) == 1


def test_a_classifiers_model_calls_are_counted_as_the_guardrails_safe_verdicts_too(
    environments, manager, model_server, runner
) -> None:
    """Not in the run's tokens or cost (its own model's), but paid for: in the metrics."""
    priced("guard-1")
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("refuse"))
    labels = {
        "source": "guardrail",
        "prompt": CLASSIFIER,
        "version": "1",
        "variant": "stable",
        "provider": "local",
        "model": "guard-1",
    }
    calls = counting("promptregistry_model_calls_total", **labels, outcome="ok")
    given = counting("promptregistry_model_tokens_total", **labels, direction="input")
    cost = counting("promptregistry_model_cost_total", **labels)

    response = ask(runner, CLEAN)  # answered safe

    assert response.status_code == 200, response.content
    assert calls() == 1
    assert given() > 0
    assert cost() > 0


def test_a_flagging_classifier_keeps_the_answer_and_records_its_verdict(
    environments, manager, model_server, runner
) -> None:
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("flag"))

    response = ask(runner, "Is counterfeit money a bomb?")

    assert response.status_code == 200, response.content
    [fired] = response.json()["guardrails"]
    assert fired["action"] == "flag"
    assert fired["detail"].startswith(f"{CLASSIFIER} v1 answered unsafe (S2,S9); local/guard-1, ")


@pytest.mark.parametrize(
    ("setup", "failure"),
    [
        ("not-released", f"the classifier {CLASSIFIER} is not released in staging"),
        ("no-verdict", f"{CLASSIFIER} v1 answered neither safe nor unsafe; local/echo-1, "),
        ("provider-fails", f"{CLASSIFIER} v1 failed (server_error)"),
        ("no-text-variable", f"{CLASSIFIER} v1 could not be rendered (unknown_variable)"),
    ],
    ids=["not-released", "no-verdict", "provider-fails", "no-text-variable"],
)
@pytest.mark.parametrize("on_error", ["closed", "open"])
def test_a_classifier_that_cannot_answer_is_a_failure_on_error_decides(
    environments, manager, model_server, moderator, runner, setup, failure, on_error
) -> None:
    if setup == "not-released":
        classifier(environments, manager, "development")
    elif setup == "no-verdict":
        classifier(environments, manager, "staging", model="echo-1")
    elif setup == "provider-fails":
        classifier(environments, manager, "staging", provider="moderator", model="fault-500")
    else:
        prompt = PromptFactory(key=CLASSIFIER)
        make_version(prompt, model=GUARD, templates={"en": {"instruction": "Safe?"}}, variables=[])
        deploy(environments, manager, prompt, "staging")
    moderated(environments, manager, by_classifier("refuse", on_error=on_error))

    response = ask(runner, CLEAN)

    if on_error == "closed":
        body = assert_problem(response, 422, "/problems/guardrail-refused")
        [fired] = body["guardrails"]
        assert fired["action"] == "refuse"
        assert Call.objects.get().status == Call.Status.REFUSED
    else:
        assert response.status_code == 200, response.content
        assert response.json()["output"] == f"echo-1: {CLEAN}"
        [fired] = response.json()["guardrails"]
        assert fired["action"] == "flag"
        assert Call.objects.get().status == Call.Status.OK
    assert fired["detail"].startswith(f"moderation failed, {on_error}: {failure}")


def test_a_streamed_run_a_classifier_refuses_ends_with_an_error_event_and_no_answer(
    environments, manager, model_server, runner
) -> None:
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("refuse"))

    response = ask(runner, VIOLENT, stream=True)

    events = sse_events(response)
    assert [name for name, _ in events] == ["start", "error"]  # the answer was held, never sent
    assert events[-1][1]["type"] == "/problems/guardrail-refused"
    assert events[-1][1]["check"] == "moderation"
    assert Call.objects.get().status == Call.Status.REFUSED


@pytest.fixture
def untrusted_cache(monkeypatch) -> ReleaseCache:
    """The release cache with no Redis listener: every lookup reads the database, so a snippet or
    release looked up lazily during the moderation would show as a query."""
    node = ReleaseCache(listen=False)
    monkeypatch.setattr(cache, "_cache", node)
    return node


def test_the_classifier_is_read_before_the_call_and_moderates_with_no_query(
    environments, manager, model_server, untrusted_cache, django_assert_num_queries
) -> None:
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("refuse"))
    served = release_cache().lookup("staging", KEY).release
    prepared = run_prepare(
        resolution=resolve(served, subject=None, locale=None),
        variables={"question": VIOLENT},
    )

    with django_assert_num_queries(0):  # the model call's thread: no database
        outcome = run_call(prepared)

    assert outcome.refused is not None
    assert outcome.refused.detail.startswith(f"{CLASSIFIER} v1 answered unsafe (S1)")
    [asked] = chats(model_server, "guard-1")
    assert asked["messages"][0]["content"] == "Judge by policy P-7."  # the followed snippet


def test_on_a_warm_trusted_cache_what_the_classifier_needs_is_read_with_no_query(
    environments, manager, model_server, monkeypatch, django_assert_num_queries
) -> None:
    # A web node whose listener vouches for its copies (as test_snippets_served has it).
    monkeypatch.setattr(ReleaseCache, "trusted", property(lambda self: True))
    monkeypatch.setattr(cache, "_cache", ReleaseCache(listen=False))
    classifier(environments, manager, "staging")
    moderated(environments, manager, by_classifier("refuse"))
    served = release_cache().lookup("staging", KEY).release
    prepared = run_prepare(  # warms the releases and the providers
        resolution=resolve(served, subject=None, locale=None), variables={"question": CLEAN}
    )

    with django_assert_num_queries(0):
        moderate = moderation_prepare(
            policy=prepared.guardrails, environment=served.environment, locale="en"
        )

    assert moderate is not None
    check = prepared.guardrails.stage("output")[0]
    assert moderate(check, "vermin").detail.startswith(f"{CLASSIFIER} v1 answered unsafe (S10)")


# --- a client that leaves a held stream ----------------------------------------------------------


def test_a_runs_moderation_says_how_long_its_checks_may_take(
    environments, manager, model_server, moderator
) -> None:
    """Each check's slowest provider's timeout, in turn: what a stream whose client left waits
    for beyond the model, so the paid answer is recorded rather than a cancelled call at 0."""
    classifier(environments, manager, "staging", provider="moderator")
    through_provider = {"output": {"moderation": by_provider("flag")}}
    prompt = PromptFactory(key=KEY)
    model = {"provider": "local", "model": "echo-1", "guardrails": through_provider}
    make_version(prompt, model=model, templates=TEMPLATES, variables=VARIABLES)
    deploy(environments, manager, prompt, "staging")
    served = release_cache().lookup("staging", KEY).release
    prepared = run_prepare(
        resolution=resolve(served, subject=None, locale=None), variables={"question": CLEAN}
    )

    assert prepared.moderate is not None
    assert prepared.moderate.seconds == pytest.approx(0.3)  # the moderator provider's timeout
    flagging = by_classifier("flag")
    policy = GuardrailPolicy.of({"output": {"moderation": flagging}}, None)
    by_prompt = moderation_prepare(policy=policy, environment="staging", locale="en")
    assert by_prompt is not None
    assert by_prompt.seconds == pytest.approx(0.3)  # the classifier's binding: moderator too


def test_a_client_leaving_a_held_stream_waits_for_its_moderation_and_records_what_was_paid(
    environments, manager, model_server, monkeypatch
) -> None:
    """The call ends after the model's timeout and the grace (its answer was held for a slow
    moderation): still within the moderation's time, so its own outcome is what is recorded."""
    moderated(environments, manager, by_classifier("flag"))
    served = release_cache().lookup("staging", KEY).release
    prepared = run_prepare(
        resolution=resolve(served, subject=None, locale=None), variables={"question": CLEAN}
    )
    fast = Provider(name="local", base_url=model_server.base_url, timeout_seconds=0.1)
    slow_moderation = RunModerator(lambda check, text: None, seconds=30.0)
    prepared = dataclasses.replace(prepared, providers={"local": fast}, moderate=slow_moderation)
    monkeypatch.setattr(streaming, "CANCEL_GRACE_SECONDS", 0.1)
    # At the stream's maximum duration the client is owed its end: no wait for the checks.
    assert streaming.cancel_grace_seconds(prepared, client_left=False) == pytest.approx(0.2)
    assert streaming.cancel_grace_seconds(prepared, client_left=True) == pytest.approx(30.2)
    with override_settings(RUN_STREAM_MAX_SECONDS=5):  # never longer than a stream may last
        assert streaming.cancel_grace_seconds(prepared, client_left=True) == pytest.approx(5.2)
    outcome = run_call(dataclasses.replace(prepared, moderate=None))  # the call's own outcome
    tokens: queue.Queue = queue.Queue()
    # The call's thread ends later than the model's timeout and the grace (0.2 s) allow.
    threading.Timer(0.6, lambda: tokens.put(("end", outcome))).start()

    ended = run_module._call_end(
        prepared, tokens, started_at=timezone.now(), started=0.0, client_left=True
    )

    assert ended is outcome  # not a cancelled call at cost 0


# --- the verdict ---------------------------------------------------------------------------------


def answered(text: str) -> Completion:
    attempt = Attempt("local", "guard-1", Outcome.OK, "", 1.0, input_tokens=40, output_tokens=2)
    return Completion("local", "guard-1", text, None, 40, 2, 1.0, None, (attempt,))


@pytest.mark.parametrize(
    ("text", "flagged", "detail"),
    [
        ("safe", False, "c v1 answered safe; local/guard-1, 40+2 tokens"),
        ("\n\nSAFE.", False, "c v1 answered safe; local/guard-1, 40+2 tokens"),
        ("unsafe\nS1", True, "c v1 answered unsafe (S1); local/guard-1, 40+2 tokens"),
        ("Unsafe: S1, S10", True, "c v1 answered unsafe (S1, S10); local/guard-1, 40+2 tokens"),
        # A reason that is prose may quote the answer: a detail never holds it.
        (
            "unsafe\nThe text says to kill the process.",
            True,
            "c v1 answered unsafe; local/guard-1, 40+2 tokens",
        ),
    ],
)
def test_the_first_word_is_the_verdict_whatever_its_case(text, flagged, detail) -> None:
    verdict = classifier_verdict("c v1", answered(text))

    assert (verdict.flagged, verdict.detail) == (flagged, detail)


@pytest.mark.parametrize("text", ["", "unsure", "safely done", "It is safe", "echo-1: safe"])
def test_any_other_answer_is_a_failure(text) -> None:
    with pytest.raises(ModerationFailed, match="answered neither safe nor unsafe"):
        classifier_verdict("c v1", answered(text))
