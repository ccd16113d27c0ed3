"""Logs (issue 16, item 5): ``LOG_FORMAT=json`` writes one JSON object per line saying which request,
key, prompt and environment a line belongs to; the request id follows a request into its Celery
jobs; the plain format stays as it was; no line holds a variable's value or a subject."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from config import logs
from config.logs import (
    TASK_HEADER,
    JsonFormatter,
    RequestContextFilter,
    note,
    request_context,
    request_context_start,
)
from releases.services import release_deploy, release_shadow_start
from runs.models import Call, ShadowRun
from runs.outbox import outbox
from tests.celery_worker import Worker, wait_for, worker_on_own_queue
from tests.factories import PromptFactory, make_version

SECRET = "Zebediah-Secret-7"  # a variable's value
SUBJECT = "subject-secret-9"


@pytest.fixture(autouse=True)
def _no_request_context() -> Iterator[None]:
    """Each test starts outside any request, and leaves none behind."""
    logs.request_context_end()
    yield
    logs.request_context_end()


def record(message: str = "Release changed: prompt=%s", *, exc_info=None, extra=None):
    """A record as a logger makes it, passed through the console handler's filter."""
    made = logging.getLogger("releases.cache").makeRecord(
        "releases.cache", logging.WARNING, __file__, 1, message, ("a",), exc_info, extra=extra
    )
    RequestContextFilter().filter(made)
    return made


def json_line(made: logging.LogRecord) -> dict:
    line = JsonFormatter().format(made)
    assert "\n" not in line  # one object per line
    return json.loads(line)


# --- the format ---------------------------------------------------------------------------------


def test_a_json_line_has_the_fields_known_and_nothing_else() -> None:
    request_context_start("req-1")
    note(key_id=42, prompt="support.refund-reply", environment="staging")

    line = json_line(record(extra={"request": "GET /resolve?subject=x", "subject": SUBJECT}))

    assert set(line) == {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "key_id",
        "prompt",
        "environment",
    }
    assert line["level"] == "WARNING"
    assert line["logger"] == "releases.cache"
    assert line["message"] == "Release changed: prompt=a"
    assert (line["request_id"], line["key_id"]) == ("req-1", 42)
    assert (line["prompt"], line["environment"]) == ("support.refund-reply", "staging")
    assert line["time"].endswith("Z")
    assert datetime.fromisoformat(line["time"]).tzinfo == UTC


def test_outside_a_request_only_the_request_id_is_there_and_null() -> None:
    line = json_line(record())

    assert set(line) == {"time", "level", "logger", "message", "request_id"}
    assert line["request_id"] is None


def test_a_trace_id_is_written_once_something_provides_one(monkeypatch) -> None:
    request_context_start(None)
    monkeypatch.setattr(logs, "trace_id_source", lambda: "4bf92f3577b34da6a3ce929d0e0e4736")

    line = json_line(record())

    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])  # drawn, since none was sent


def test_an_exception_is_one_string_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("Failed: %s", exc_info=sys.exc_info())

    line = json_line(made)

    assert isinstance(line["exc_info"], str)
    assert line["exc_info"].startswith("Traceback")
    assert "ValueError: boom" in line["exc_info"]


def test_the_plain_format_is_unchanged_by_default(settings) -> None:
    assert settings.LOG_FORMAT == "plain"
    handler = settings.LOGGING["handlers"]["console"]
    assert handler["formatter"] == "plain"
    assert settings.LOGGING["formatters"]["plain"] == {
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s"
    }
    request_context_start("req-1")
    formatter = logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"])
    line = formatter.format(record())
    assert re.fullmatch(r"\S+ \S+ WARNING releases\.cache Release changed: prompt=a", line)


# --- the request's context ----------------------------------------------------------------------


@pytest.fixture
def runner(make_client):
    return make_client("runs:execute", name="runner")


@pytest.fixture
def refused_answers(environments, manager, model_server):
    """support.strict in staging, bound to a schema no answer of the local model meets: every
    attempt fails, and the schema's error quotes the answer, which echoes the variables."""
    schema = {
        "type": "object",
        "properties": {"reply": {"type": "string", "pattern": "^never$"}},
        "required": ["reply"],
    }
    prompt = PromptFactory(key="support.strict")
    make_version(prompt, model={"provider": "local", "model": "echo-1", "response_schema": schema})
    release_deploy(
        prompt=prompt, environment=environments["staging"], version=1, actor=manager, reason="t"
    )
    return prompt


def test_a_runs_log_lines_carry_its_request_and_never_its_variables_or_subject(
    refused_answers, runner, caplog
) -> None:
    caplog.handler.addFilter(RequestContextFilter())
    with caplog.at_level(logging.INFO):
        response = runner.post(
            "/api/v1/prompts/support.strict/run",
            data=json.dumps(
                {
                    "environment": "staging",
                    "subject": SUBJECT,
                    "variables": {"customer_name": SECRET},
                }
            ),
            content_type="application/json",
            HTTP_X_REQUEST_ID="req-logs-1",
        )

    assert response.status_code == 502, response.content
    assert response["X-Request-Id"] == "req-logs-1"
    # The refusal's detail, quoting the answer, is kept where it belongs: the call's attempts.
    assert SECRET in json.dumps(response.json()["attempts"])
    failed = [r for r in caplog.records if r.name == "runs.providers"]
    assert failed, [r.getMessage() for r in caplog.records]
    for made in failed:
        assert (made.request_id, made.key_id) == ("req-logs-1", runner.key.pk)
        assert (made.prompt, made.environment) == ("support.strict", "staging")
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for made in caplog.records:
        for line in (JsonFormatter().format(made), plain.format(made)):
            assert SECRET not in line
            assert SUBJECT not in line
    assert Call.objects.get().request_id == "req-logs-1"


def test_the_context_ends_with_the_request(refused_answers, runner) -> None:
    runner.post(
        "/api/v1/prompts/support.strict/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Al"}}),
        content_type="application/json",
    )

    assert request_context() is None


def test_a_request_without_a_sane_id_gets_one_drawn(refused_answers, runner) -> None:
    response = runner.post(
        "/api/v1/prompts/support.strict/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Al"}}),
        content_type="application/json",
        HTTP_X_REQUEST_ID="bad id\twith spaces",
    )

    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-Id"])
    assert Call.objects.get().request_id == response["X-Request-Id"]


# --- Celery ---------------------------------------------------------------------------------------


def test_the_request_id_travels_in_a_jobs_headers_and_the_worker_runs_with_it() -> None:
    request_context_start("req-job-1")
    headers: dict = {}
    logs.task_headers_add(headers=headers)
    assert headers == {TASK_HEADER: "req-job-1"}

    # The worker: another process, no request of its own.
    logs.request_context_end()
    task = SimpleNamespace(request=SimpleNamespace(**headers))
    logs.task_context_start(task_id="t-1", task=task)
    assert json_line(record())["request_id"] == "req-job-1"
    logs.task_context_end(task_id="t-1")
    assert request_context() is None


def test_an_eager_task_keeps_the_requests_context() -> None:
    """The embedded default runs tasks in-process, inside the request: nothing to set, nothing
    to undo."""
    context = request_context_start("req-eager-1")
    note(key_id=7)
    task = SimpleNamespace(request=SimpleNamespace(is_eager=True))
    logs.task_context_start(task_id="t-2", task=task)
    assert request_context() is context
    logs.task_context_end(task_id="t-2")
    assert request_context() is context


def test_a_job_published_outside_a_request_carries_no_id() -> None:
    headers: dict = {}
    logs.task_headers_add(headers=headers)
    assert headers == {}


@pytest.fixture
def json_worker(settings, needs_redis, tmp_path) -> Iterator[Worker]:
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="logs") as worker:
        worker.env["LOG_FORMAT"] = "json"
        yield worker


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_live_calls_request_id_is_on_its_shadows_lines_in_the_worker(
    released, manager, model_server, runner, json_worker, settings
) -> None:
    settings.SHADOW_NOISE_FLOOR_PERCENT = 0
    release_shadow_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        versions=[1],
        sample_percent=Decimal(100),
        actor=manager,
        reason="compare",
    )
    json_worker.start()
    response = runner.post(
        "/api/v1/prompts/support.refund-reply/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": SECRET}}),
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-shadow-1",
    )
    assert response.status_code == 200, response.content
    assert outbox.flush(10)
    wait_for(
        lambda: ShadowRun.objects.filter(status=ShadowRun.Status.OK).exists(), "the shadow run"
    )

    def task_lines() -> list[dict]:
        lines = [
            json.loads(line)
            for line in json_worker.log.read_text().splitlines()
            if line.startswith("{")
        ]
        return [line for line in lines if line.get("request_id") == "req-shadow-1"]

    # Celery's own line for the task ("... succeeded in ..."), written as the task ends.
    wait_for(
        lambda: any("succeeded" in line["message"] for line in task_lines()), "the task's line"
    )
    assert SECRET not in json_worker.log.read_text()
