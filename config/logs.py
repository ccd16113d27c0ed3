"""Logs: plain lines as ever, or one JSON object per line (``LOG_FORMAT=json``) that says which
request, key, prompt and environment each line belongs to, in the web and the workers alike.

- A request's context (``RequestContext``: its id, the API key's id, the prompt and the
  environment) lives in a contextvar. ``config.middleware.RequestContextMiddleware`` starts it
  ahead of every other middleware (so the runtime path, which ``api.middleware`` answers before
  the rest of the stack, has it too); what becomes known later is added where it becomes known
  (``note``): the key where it is authenticated, the prompt and environment where the release is
  looked up. ``request_finished`` ends it, after a streamed answer's last byte.
- ``RequestContextFilter``, on the console handler, copies it onto every record.
- ``JsonFormatter`` (python-json-logger) writes those fields and nothing else.
- The request id follows a web request into its Celery jobs: ``before_task_publish`` adds it to
  the message's headers, and ``task_prerun`` sets it in the worker for the task's run (both
  connected in ``config.celery``). A thread working for a request (the shadow outbox, a streamed
  run's model call) runs in a copy of the request's context.

What no log line holds, whatever the format: a variable's value or a subject. Log ids, keys and
counts, never what a caller sent (docs/operations.md, "Logs").
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from django.core.signals import request_finished
from django.dispatch import receiver
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

# A request id a caller may choose (X-Request-Id): a sane token, else the registry draws one.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,100}")
REQUEST_ID_HEADER = "X-Request-Id"
# The Celery message header that carries it (a name of our own: Celery's are plain words).
TASK_HEADER = "registry_request_id"


class RequestContext:
    """What the log lines of one request (or one task run) have in common."""

    __slots__ = ("_request_id", "environment", "key_id", "prompt")

    def __init__(self, request_id: str | None = None) -> None:
        self._request_id = request_id
        self.key_id: int | None = None
        self.prompt: str | None = None
        self.environment: str | None = None

    @property
    def request_id(self) -> str:
        # Drawn when first asked for: most requests neither log nor run anything, and a uuid4
        # is a measurable part of a warm resolve.
        if self._request_id is None:
            self._request_id = uuid.uuid4().hex
        return self._request_id


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def request_context_start(request_id: str | None) -> RequestContext:
    """A request (or a task run) begins: ``request_id`` is the caller's, used when it is a sane
    token, so logs on both sides join up."""
    context = RequestContext(
        request_id if request_id and REQUEST_ID.fullmatch(request_id) else None
    )
    _current.set(context)
    return context


@receiver(request_finished)
def request_context_end(**kwargs: object) -> None:
    """Sent once the answer is closed: after a streamed answer's last event, so the stream's own
    lines (and the shadow jobs it queues) keep the request's id."""
    _current.set(None)


def request_context() -> RequestContext | None:
    return _current.get()


def request_id() -> str:
    """This request's id; outside any request (a command, a test calling a service), a new one."""
    context = _current.get()
    return context.request_id if context is not None else uuid.uuid4().hex


def note(
    *, key_id: int | None = None, prompt: str | None = None, environment: str | None = None
) -> None:
    """Adds what became known about the current request to its log context (nothing outside a
    request). Names only: a prompt key and an environment name, both checked by then."""
    context = _current.get()
    if context is None:
        return
    if key_id is not None:
        context.key_id = key_id
    if prompt is not None:
        context.prompt = prompt
    if environment is not None:
        context.environment = environment


# The current trace's id, for the ``trace_id`` field: None until tracing is installed. Issue 16's
# OpenTelemetry item sets it to a function answering the current span's trace id (32 hex digits)
# when that span is valid, and None otherwise; no OpenTelemetry is imported here.
trace_id_source: Callable[[], str | None] | None = None


class RequestContextFilter(logging.Filter):
    """Copies the request's context onto every record the handler writes (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _current.get()
        if context is None:
            record.request_id = record.key_id = record.prompt = record.environment = None
        else:
            record.request_id = context.request_id
            record.key_id = context.key_id
            record.prompt = context.prompt
            record.environment = context.environment
        record.trace_id = trace_id_source() if trace_id_source is not None else None
        return True


# Written when known, left out when not; ``request_id`` is always there (null outside a request).
OPTIONAL_FIELDS = ("trace_id", "key_id", "prompt", "environment")


class JsonFormatter(BaseJsonFormatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
    ``request_id``; ``trace_id``, ``key_id``, ``prompt`` and ``environment`` when known;
    ``exc_info`` (the formatted traceback) and ``stack_info`` when present.

    Only these. python-json-logger would add every other attribute of a record (``extra=``), and
    Django puts the whole request on its own (``django.request``): its path with the query
    string, which may carry a subject (``resolve?subject=``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, json_ensure_ascii=False, **kwargs)

    def add_fields(
        self,
        log_record: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        created = datetime.fromtimestamp(record.created, UTC)
        log_record["time"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        log_record["message"] = record.message  # set by format(), %-arguments applied
        log_record["request_id"] = getattr(record, "request_id", None)
        for name in OPTIONAL_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                log_record[name] = value
        for name in ("exc_info", "stack_info"):
            if message_dict.get(name):
                log_record[name] = message_dict[name]


# --- Celery: the request id crosses into the jobs a request queues -----------------------------


def task_headers_add(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """``before_task_publish``: the current request's id goes with the job."""
    context = _current.get()
    if context is not None and headers is not None:
        headers[TASK_HEADER] = context.request_id


_task_contexts: dict[str, Any] = {}  # task id -> the token that restores the context before it


def task_context_start(task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    """``task_prerun``: a job sent with a request id runs with it. An eager task (the embedded
    default, run inside the request) keeps the request's context as it is."""
    given = getattr(getattr(task, "request", None), TASK_HEADER, None)
    if not isinstance(given, str) or not given:
        return
    token = _current.set(RequestContext(given if REQUEST_ID.fullmatch(given) else None))
    _task_contexts[task_id] = token


def task_context_end(task_id: str = "", **kwargs: Any) -> None:
    """``task_postrun``: after the task's own last line (Celery logs "succeeded" before this)."""
    token = _task_contexts.pop(task_id, None)
    if token is not None:
        _current.reset(token)


def worker_logging_setup(**kwargs: Any) -> None:
    """``setup_logging``: Celery leaves logging alone (no root logger of its own, no format of
    its own) and the worker and beat write with ``LOGGING``, JSON lines included."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
