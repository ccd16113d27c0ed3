"""Assertions shared by the API tests: every error is an RFC 9457 problem document."""

from __future__ import annotations

import json
from typing import Any

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: Any, status: int, type_: str) -> dict[str, Any]:
    """The response is a problem document of ``type_`` (``/problems/<slug>``) with ``status``;
    returns its body for further checks."""
    assert response.status_code == status, (response.status_code, response.content[:2000])
    assert response["Content-Type"] == PROBLEM_JSON
    body = response.json()
    assert body["type"] == type_, body
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body


def sse_events(response: Any) -> list[tuple[str, dict[str, Any]]]:
    """A streamed answer's server-sent events as (event, its JSON data); comments and a block
    with no data (a stream's closing ``retry:``) left out."""
    text = b"".join(response.streaming_content).decode()
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "data" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def error_codes(body: dict[str, Any]) -> list[str]:
    return [e["code"] for e in body["errors"]]


def errors_by_code(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for error in body["errors"]:
        found.setdefault(error["code"], []).append(error)
    return found


def registry_state() -> tuple[Any, ...]:
    """Every prompt and version as the database holds them, to show a refused request changed
    nothing."""
    from registry.models import LocalizedTemplate, Prompt, PromptVersion, Variable

    return (
        sorted(Prompt.objects.values_list("key", "description", "default_locale", "updated_at")),
        sorted(
            PromptVersion.objects.values_list(
                "prompt__key", "number", "status", "message", "content_hash", "updated_at"
            )
        ),
        Variable.objects.count(),
        sorted(LocalizedTemplate.objects.values_list("version_id", "locale", "instruction")),
    )


def wait_for_call(request_id: str, timeout: float = 10.0):
    """The call record of ``request_id``, which a live server writes once its answer is sent
    (decision 0041) or as a closed stream winds down on its thread: a bounded wait."""
    import threading

    from runs.models import Call

    pause = threading.Event()
    for _ in range(int(timeout / 0.05)):
        call = Call.objects.filter(request_id=request_id).first()
        if call is not None:
            return call
        pause.wait(0.05)
    raise AssertionError(f"no call recorded for {request_id} within {timeout} s")
