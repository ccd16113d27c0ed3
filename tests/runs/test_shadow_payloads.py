"""Shadow jobs carry the caller's variables sealed and expiring (runs.payloads, decision 0016).

In-process: the job a live call queues is captured (``jobs``) and run by calling the service the
task calls. What really sits in Redis, and the worker's expiry, are checked in test_worker.py.
"""

from __future__ import annotations

import json
import time

import pytest
from django.core import checks

from runs.models import ShadowRun
from runs.payloads import (
    PayloadError,
    PayloadRefused,
    payload_open,
    payload_seal,
    shadow_payload_check,
)
from runs.shadows import shadow_run_execute, shadow_run_refuse
from tests.runs import test_shadows

CHAT = test_shadows.CHAT
# The live-call fixtures of test_shadows, shared rather than copied.
jobs, live, runner = test_shadows.jobs, test_shadows.live, test_shadows.runner

SECRET = "Zelda Quux-Ambersmith"


def test_a_queued_job_holds_no_variable_in_clear_text(live, jobs) -> None:
    live(customer_name=SECRET)
    [job] = jobs
    assert set(job) == {"call_id", "version", "kind", "payload"}
    assert SECRET not in json.dumps(job)
    assert "Zelda" not in json.dumps(job)
    opened = payload_open(job["payload"])
    assert opened.variables == {"customer_name": SECRET}


def test_the_shadow_still_answers_the_callers_real_variables(live, jobs, model_server) -> None:
    live(customer_name=SECRET)
    run = shadow_run_execute(**jobs[0])
    assert run.status == ShadowRun.Status.OK
    # The shadow model saw the variable unredacted; the call record keeps it redacted.
    sent = model_server.requests.for_path(CHAT)[-1].body["messages"]
    assert SECRET in sent[-1]["content"]


def test_a_conversation_the_live_call_appended_is_sealed_and_appended_by_the_shadow(
    live, jobs, model_server, runner, django_capture_on_commit_callbacks
) -> None:
    """The OpenAI-compatible endpoints append the caller's messages (decision 0042): the shadow
    answers the same conversation, which crosses the broker sealed."""
    said = {"role": "user", "content": f"I am {SECRET}"}
    with django_capture_on_commit_callbacks(execute=True):
        response = runner.post(
            "/openai/v1/chat/completions",
            data=json.dumps(
                {
                    "model": "prompt:support.refund-reply",
                    "messages": [said],
                    "variables": {"customer_name": "Ann"},
                    "environment": "staging",
                }
            ),
            content_type="application/json",
        )
    assert response.status_code == 200, response.content
    [job] = jobs
    assert "Zelda" not in json.dumps(job)
    assert payload_open(job["payload"]).conversation == (said,)

    run = shadow_run_execute(**job)

    assert run.status == ShadowRun.Status.OK
    assert run.exact_match is True  # both echo the caller's last message
    sent = model_server.requests.for_path(CHAT)[-1].body["messages"]
    assert "(v1)" in sent[0]["content"]
    assert sent[-1] == said


def test_a_job_sealed_before_conversations_opens_with_none() -> None:
    token = payload_seal(variables={"a": 1}, locale="fr")

    assert payload_open(token).conversation == ()


def test_an_expired_job_ends_its_shadow_run_without_a_model_call(
    live, jobs, model_server, settings
) -> None:
    live(customer_name=SECRET)
    job = jobs[0]
    stale = payload_seal(
        variables={"customer_name": SECRET},
        locale="",
        now=time.time() - settings.SHADOW_JOB_TTL_SECONDS - 5,
    )
    requests = len(model_server.requests.for_path(CHAT))
    run = shadow_run_execute(**{**job, "payload": stale})
    assert (run.status, run.error_class) == (ShadowRun.Status.ERROR, "payload_expired")
    assert run.finished_at is not None
    assert len(model_server.requests.for_path(CHAT)) == requests


@pytest.mark.parametrize("payload", ["not a token", "", "gAAAAABinvalid"])
def test_an_unreadable_job_ends_its_shadow_run_without_a_model_call(
    live, jobs, model_server, payload
) -> None:
    live()
    requests = len(model_server.requests.for_path(CHAT))
    run = shadow_run_execute(**{**jobs[0], "payload": payload})
    assert (run.status, run.error_class) == (ShadowRun.Status.ERROR, "payload_unreadable")
    assert len(model_server.requests.for_path(CHAT)) == requests


def test_a_job_sealed_with_a_key_rotated_away_is_unreadable(
    live, jobs, model_server, settings
) -> None:
    settings.SHADOW_PAYLOAD_KEYS = ["old-" + "k" * 40]
    live()
    settings.SHADOW_PAYLOAD_KEYS = ["new-" + "k" * 40]
    run = shadow_run_execute(**jobs[0])
    assert (run.status, run.error_class) == (ShadowRun.Status.ERROR, "payload_unreadable")


def test_a_key_rotation_keeps_queued_jobs_readable_while_the_old_key_is_listed(settings) -> None:
    settings.SHADOW_PAYLOAD_KEYS = ["old-" + "k" * 40]
    token = payload_seal(variables={"a": SECRET}, locale="fr")
    settings.SHADOW_PAYLOAD_KEYS = ["new-" + "k" * 40, "old-" + "k" * 40]
    assert payload_open(token).variables == {"a": SECRET}
    # The default keys follow SECRET_KEY's rotation through SECRET_KEY_FALLBACKS.
    settings.SHADOW_PAYLOAD_KEYS = []
    token = payload_seal(variables={"a": SECRET}, locale="fr")
    old_secret = settings.SECRET_KEY
    settings.SECRET_KEY = "a-brand-new-secret-" + "x" * 40
    with pytest.raises(PayloadError) as refused:
        payload_open(token)
    assert refused.value.reason == PayloadRefused.UNREADABLE
    settings.SECRET_KEY_FALLBACKS = [old_secret]
    assert payload_open(token).locale == "fr"


def test_a_payload_key_is_neither_the_secret_nor_plain_text(settings) -> None:
    token = payload_seal(variables={"name": SECRET}, locale="en")
    assert SECRET not in token
    assert settings.SECRET_KEY not in token
    # The same plaintext seals differently each time (random IV).
    assert token != payload_seal(variables={"name": SECRET}, locale="en")


def test_a_job_the_worker_dropped_as_expired_ends_its_pending_run(live, jobs, model_server):
    live()
    job = jobs[0]
    requests = len(model_server.requests.for_path(CHAT))
    run = shadow_run_refuse(
        call_id=job["call_id"],
        version=job["version"],
        kind=job["kind"],
        reason=PayloadRefused.EXPIRED,
    )
    assert (run.status, run.error_class) == (ShadowRun.Status.ERROR, "payload_expired")
    assert len(model_server.requests.for_path(CHAT)) == requests
    # A later delivery of the same job finds the run finished and does nothing.
    assert shadow_run_execute(**job).status == ShadowRun.Status.ERROR


def test_the_system_check_refuses_short_payload_keys_and_warns_of_a_short_ttl(settings) -> None:
    settings.SHADOW_PAYLOAD_KEYS = ["short"]
    settings.SHADOW_JOB_TTL_SECONDS = 60
    ids = {message.id for message in shadow_payload_check()}
    assert ids == {"runs.E010", "runs.W010"}
    assert "runs.E010" in {m.id for m in checks.run_checks() if m.level >= checks.ERROR}
    settings.SHADOW_PAYLOAD_KEYS = ["k" * 48]
    settings.SHADOW_JOB_TTL_SECONDS = 7200
    assert shadow_payload_check() == []
