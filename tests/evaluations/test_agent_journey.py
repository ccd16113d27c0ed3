"""Issue 15's "done when", on the demo's ``support.agent``: a prompt with tools, strict output, a
conversation history variable and two snippets (one following its release, one pinned), released
with a canary in production, rendered identically by the server and the SDK, run with a streamed
tool call, and evaluated. The README's tour walks the same path."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command

from evaluations.models import EvalResult
from registry.models import Prompt
from tests.api.helpers import sse_events
from tests.sdk.test_prompt import get, served

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]

KEY = "support.agent"
VARIABLES = {
    "customer_name": "Zoé",
    "conversation": [
        {"role": "user", "content": "Hi, I ordered boots last week."},
        {"role": "assistant", "content": "Hello Zoé, which order is it?"},
    ],
    "question": "It is A-17, where is it?",
}


@pytest.fixture
def demo(model_server, django_capture_on_commit_callbacks, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        call_command("demo", stdout=StringIO())


@pytest.fixture
def service(make_client):
    return make_client("prompts:read", "runs:execute", name="agent-service")


def canary_subject(service) -> str:
    """A subject production's canary serves (version 2 at 10 %)."""
    for number in range(200):
        answer = service.get(
            f"/api/v1/prompts/{KEY}/resolve",
            {"environment": "production", "subject": f"s-{number}"},
        ).json()
        if answer["variant"] == "canary":
            return f"s-{number}"
    raise AssertionError("no subject in the canary among 200")


def post(service, path: str, **body):
    return service.post(
        f"/api/v1/prompts/{KEY}/{path}",
        json.dumps({"environment": "production", "variables": VARIABLES, **body}),
        content_type="application/json",
    )


def test_the_demo_agent_is_rendered_alike_run_with_a_streamed_tool_call_and_evaluated(
    demo, service, run_now
):
    subject = canary_subject(service)

    # Rendered by the server: the snippets in the system message, the history after the context,
    # the tools and the strict response format in the request.
    rendered = post(service, "render", subject=subject).json()
    assert rendered["version"] == 2
    system, context, *history, instruction = rendered["messages"]
    assert "chatting with Zoé" in context["content"]
    assert "Trailhead Outfitters" in system["content"]
    assert "Never ask for a card number" in system["content"]  # rules.safety, pinned
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert "call order_lookup first" in instruction["content"]
    request = rendered["request"]
    assert [t["function"]["name"] for t in request["tools"]] == ["order_lookup", "refund_status"]
    assert request["response_format"]["json_schema"]["strict"] is True
    assert {s["key"]: s["pinned"] for s in rendered["snippets"]} == {
        "brand.voice": None,
        "rules.safety": 1,
    }

    # Rendered by the SDK from production's bundle, offline: the same request.
    prompt = get(served(service, "production"), KEY, subject=subject)
    assert (prompt.version, prompt.variant) == (2, "canary")
    assert prompt.request(**VARIABLES) == request

    # Run, streamed: the model's tool call arrives as deltas, then whole in the answer.
    events = sse_events(post(service, "run", subject=subject, stream=True))
    kinds = [kind for kind, _ in events]
    assert "tool_call" in kinds
    done = events[-1][1]
    assert kinds[-1] == "done", events[-1]
    [call] = done["tool_calls"]
    assert call["name"] == "order_lookup"
    assert "A-17" in call["arguments"]["order_id"]

    # Evaluated on its golden set, against production's stable version.
    agent = Prompt.objects.get(key=KEY)
    run = run_now(prompt=agent, version=2, environment="production")
    results = EvalResult.objects.filter(run=run)
    assert results.count() == 3
    assert all(r.passed for r in results), [(r.case_key, r.detail) for r in results]
