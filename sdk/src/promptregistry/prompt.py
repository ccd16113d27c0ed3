"""A resolved prompt: what ``Client.get`` answers.

A ``Prompt`` is one resolution (which version, variant and locale a subject gets, and why) with
the means to use it: ``render`` the chat messages locally, ``run`` them through the caller's
OpenAI client, and ``report`` how the call went. Building one costs a few attribute stores (it is
on ``get``'s hot path); copies of the bundle's data are made only when asked for.

Reporting never raises and never blocks: an event is shaped into JSON and queued on the client's
``Reporter``, which sends it in the background (``promptregistry.reporting``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import numbers
import os
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .core import Resolution, to_messages, version_render
from .core.rendering import RENDER_DEADLINE_MS
from .core.request import chat_request
from .errors import RegistryError

if TYPE_CHECKING:
    from .reporting import Reporter

logger = logging.getLogger(__name__)

__all__ = ["Prompt"]

# Values JSON carries as they are (a float only when finite, hence not here).
_PLAIN = frozenset({str, int, bool})
# Deeper than any variables a prompt declares: past it a value is sent as text.
_MAX_DEPTH = 32
_UNSET: Any = object()


class Prompt:
    """The prompt ``key`` as the environment serves it to one subject.

    What was chosen and why: ``version`` (its number), ``variant`` (``stable``, ``canary`` or the
    experiment variant), ``reason``, ``sticky`` (False when no subject was given and one was drawn
    for this call), ``locale`` (the one used) and ``requested_locale``, ``revision`` (the release's),
    ``bucket`` and ``salt`` (to recompute the draw), ``shadow`` (shadow versions sampled for this
    call; the SDK does not run them). What it holds: ``model`` (the binding: provider, model,
    parameters, response_schema, fallbacks, and tools, tool_choice, parallel_tool_calls when it
    declares tools), ``tools`` (its tools, OpenAI's format), ``variables`` (the declared specs) and
    ``sections``
    (the raw templates in ``locale``): copies, the caller's to change. And where it came
    from: ``source`` (``live``, ``last-known-good`` or ``fallback``), ``environment``, ``subject``.
    """

    __slots__ = (
        "_model",
        "_render_deadline_ms",
        "_reporter",
        "environment",
        "resolution",
        "source",
        "subject",
    )

    def __init__(
        self,
        resolution: Resolution,
        *,
        source: str,
        reporter: Reporter | None = None,
        environment: str | None = None,
        subject: str | None = None,
        render_deadline_ms: float | None = RENDER_DEADLINE_MS,
    ) -> None:
        self.resolution = resolution
        self.source = source
        self.environment = environment or resolution.environment
        self.subject = subject if subject is not None else resolution.subject
        self._reporter = reporter
        self._render_deadline_ms = render_deadline_ms
        self._model: dict[str, Any] | None = None

    # --- what was resolved --------------------------------------------------------------------

    @property
    def key(self) -> str:
        return self.resolution.prompt

    @property
    def version(self) -> int:
        return self.resolution.number

    @property
    def variant(self) -> str:
        return self.resolution.variant

    @property
    def reason(self) -> str:
        return str(self.resolution.reason)

    @property
    def sticky(self) -> bool:
        return self.resolution.sticky

    @property
    def locale(self) -> str:
        return self.resolution.locale

    @property
    def requested_locale(self) -> str:
        return self.resolution.requested_locale

    @property
    def revision(self) -> int:
        return self.resolution.revision

    @property
    def bucket(self) -> int | None:
        return self.resolution.bucket

    @property
    def salt(self) -> str:
        return self.resolution.salt

    @property
    def shadow(self) -> tuple[int, ...]:
        return self.resolution.shadow

    @property
    def content_hash(self) -> str:
        return self.resolution.version.content_hash

    @property
    def model(self) -> dict[str, Any]:
        # The bundle's binding is shared by every resolution: the caller gets its own copy.
        if self._model is None:
            self._model = copy.deepcopy(dict(self.resolution.version.model))
        return self._model

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The binding's tools in OpenAI's format (a copy; empty when it declares none)."""
        return copy.deepcopy(list(self.resolution.version.model.get("tools") or []))

    @property
    def variables(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(dict(spec)) for spec in self.resolution.version.variables]

    @property
    def sections(self) -> dict[str, str]:
        return dict(self.resolution.version.templates[self.resolution.locale])

    def trace_attributes(self) -> dict[str, Any]:
        """The resolved prompt's identity as OpenTelemetry span attributes, under the names the
        registry's own spans use (``promptregistry.prompt.key`` and ``.version``,
        ``promptregistry.environment``, ``promptregistry.release.revision``,
        ``promptregistry.variant``, ``promptregistry.bucket`` when a split drew). Never the
        subject: a trace is not where personal data goes."""
        attributes: dict[str, Any] = {
            "promptregistry.prompt.key": self.key,
            "promptregistry.prompt.version": self.version,
            "promptregistry.environment": self.environment,
            "promptregistry.release.revision": self.revision,
            "promptregistry.variant": self.variant,
        }
        if self.bucket is not None:
            attributes["promptregistry.bucket"] = self.bucket
        return attributes

    def annotate_current_span(self) -> bool:
        """Puts ``trace_attributes`` on the caller's current OpenTelemetry span, so a trace of
        the feature says which prompt version served it. Whether it did: False when
        OpenTelemetry is not installed (the SDK does not need it) or no span is recording."""
        try:
            from opentelemetry import trace
        except ImportError:
            return False
        span = trace.get_current_span()
        if not span.is_recording():
            return False
        span.set_attributes(self.trace_attributes())
        return True

    # --- using it -----------------------------------------------------------------------------

    def render_sections(self, /, **variables: Any) -> dict[str, str]:
        """The four sections rendered with ``variables``, checked against the declared ones first,
        exactly as the registry's ``render`` answers ``rendered``. Raises ``VariablesInvalid``
        (every problem listed) or ``RenderError`` (``render_too_slow`` past the client's
        ``render_deadline_ms``)."""
        return version_render(
            self.resolution.version,
            locale=self.resolution.locale,
            variables=variables,
            deadline_ms=self._render_deadline_ms,
            snippets=self.resolution.snippets,
        )

    def render(self, /, **variables: Any) -> list[dict[str, str]]:
        """OpenAI chat messages: a ``system`` message from the system section, then one ``user``
        message of context, instruction and format joined by blank lines (empty ones left out).
        A ``messages`` variable's history (a list of ``{"role", "content"}``) is inserted after
        the section it names (the context by default), as the server's ``render`` does."""
        return to_messages(self.render_sections(**variables))

    def request(self, /, **variables: Any) -> dict[str, Any]:
        """Everything to pass to ``chat.completions.create(**…)``: ``model``, ``messages``, the
        binding's parameters, ``tools``/``tool_choice``/``parallel_tool_calls`` when it declares
        tools, and ``response_format`` (``json_schema``, strict when the provider accepts it)
        when it has a response schema. The same as the registry's ``render`` answers in
        ``request`` (one implementation: ``promptregistry.core.request``)."""
        return chat_request(
            self.resolution.version.model,
            self.render(**variables),
            strict_output=self.resolution.version.strict_output,
        )

    def run(self, openai_client: Any, /, **variables: Any) -> Any:
        """Calls ``openai_client.chat.completions.create(**self.request(**variables))``: the
        rendered messages with the bound model, parameters and tools (and a ``json_schema``
        response format when the binding has a response schema), reports the outcome, and
        returns the completion; its tool calls are the caller's to run.

        Latency, token usage, the inputs and the answer's text are reported (the registry stores
        them redacted). A failing call is reported with status ``error`` and the exception's
        class, then re-raised. The binding's fallbacks are not tried: they name the registry's
        providers, which ``openai_client`` may not reach (the registry's own ``run`` tries them).
        Bad variables raise before any call, and are not reported; so does a version whose
        binding declares guardrails (docs/guardrails.md): the registry applies them, not the
        SDK, so such a version runs through the registry."""
        binding = self.resolution.version.model
        model_name = binding.get("model")
        if not isinstance(model_name, str) or not model_name:
            raise RegistryError(f"{self.key} v{self.version} has no model binding to run.")
        if binding.get("guardrails"):
            # Its checks (PII rules, moderation providers, the environment's floor) are the
            # registry's to run: calling the model here would skip them without a word.
            raise RegistryError(
                f"{self.key} v{self.version} declares guardrails, which only the registry "
                "applies: run it through the registry (POST /api/v1/prompts/{key}/run, or the "
                "OpenAI-compatible endpoint) instead of Prompt.run."
            )
        request = self.request(**variables)
        provider = binding.get("provider") or None
        started = time.perf_counter()
        try:
            completion = openai_client.chat.completions.create(**request)
        except Exception as exc:
            self.report(
                status="error",
                error_class=type(exc).__name__,
                latency_ms=(time.perf_counter() - started) * 1000,
                inputs=variables,
                provider=provider,
                model=model_name,
            )
            raise
        latency_ms = (time.perf_counter() - started) * 1000
        usage = getattr(completion, "usage", None)
        self.report(
            latency_ms=latency_ms,
            input_tokens=getattr(usage, "prompt_tokens", None),
            output_tokens=getattr(usage, "completion_tokens", None),
            inputs=variables,
            output=_answer_text(completion),
            provider=provider,
            model=model_name,
        )
        return completion

    def tool_calls(self, completion: Any, /) -> list[dict[str, Any]]:
        """The tool calls of a completion ``run`` answered, checked as the registry's ``run``
        checks them: each ``{id, name, arguments}`` with a tool the binding declares and its
        arguments parsed (a JSON object). Empty when the model answered in text. Raises
        ``RegistryError`` for a call the model should not have made (an undeclared tool,
        arguments that are not a JSON object): a model's answer is untrusted input."""
        choices = getattr(completion, "choices", None) or [None]
        raw = getattr(getattr(choices[0], "message", None), "tool_calls", None) or []
        declared = {
            tool.get("function", {}).get("name")
            for tool in self.resolution.version.model.get("tools") or []
            if isinstance(tool, Mapping)
        }
        calls = []
        for i, call in enumerate(raw):
            function = getattr(call, "function", None)
            name = getattr(function, "name", None)
            if name not in declared:
                raise RegistryError(f"Tool call {i} names {name!r}, which is not a tool.")
            try:
                arguments = json.loads(getattr(function, "arguments", None) or "{}")
            except (TypeError, ValueError) as exc:
                raise RegistryError(f"Tool call {i}'s arguments are not JSON.") from exc
            if not isinstance(arguments, dict):
                raise RegistryError(f"Tool call {i}'s arguments are not a JSON object.")
            calls.append({"id": getattr(call, "id", None), "name": name, "arguments": arguments})
        return calls

    def report(
        self,
        *,
        latency_ms: float | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        feedback: float | None = None,
        status: str = "ok",
        error_class: str = "",
        output: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        cost: float | None = None,
        time_to_first_token_ms: float | None = None,
        provider: str | None = _UNSET,
        model: str | None = _UNSET,
        request_id: str | None = None,
    ) -> bool:
        """Queues the outcome of a call made with this prompt for ``POST /api/v1/events``.

        Returns True when queued; False when reporting is off, the queue is full (counted in the
        reporter's ``dropped``), the prompt is a fallback without a version number, or the values
        could not even be shaped into JSON. Never raises and never waits for the network: values
        the registry refuses (a negative latency, a feedback of 5) are queued as they are and
        counted in the reporter's ``rejected`` when it answers.

        ``provider`` and ``model`` default to the binding's, so the registry can price the tokens
        (``cost`` left out); pass None to leave them out.
        """
        reporter = self._reporter
        if reporter is None or self.resolution.number < 1:
            return False
        try:
            resolution = self.resolution
            event: dict[str, Any] = {
                # Set when queued: a retried batch carries the same ids, so it is stored once.
                "event_id": _uuid4(),
                "occurred_at": _now_rfc3339(),
                "prompt": resolution.prompt,
                "version": resolution.number,
                "environment": self.environment,
                "variant": resolution.variant,
                "sticky": resolution.sticky,
                "locale": resolution.locale,
                "release_revision": resolution.revision,
                "status": _json_safe(status),
            }
            if self.subject:
                event["subject"] = self.subject
            binding = resolution.version.model
            for name, value in (
                ("latency_ms", latency_ms),
                ("time_to_first_token_ms", time_to_first_token_ms),
                ("input_tokens", input_tokens),
                ("output_tokens", output_tokens),
                ("cost", cost),
                ("feedback", feedback),
                ("error_class", error_class or None),
                ("provider", (binding.get("provider") or None) if provider is _UNSET else provider),
                ("model", (binding.get("model") or None) if model is _UNSET else model),
                ("request_id", request_id),
                ("inputs", inputs),
                ("output", output),
            ):
                if value is not None:
                    # Plain values (nearly all of them) skip the walk through _json_safe.
                    event[name] = value if type(value) in _PLAIN else _json_safe(value)
        # Reporting must never break the caller's request: whatever the values are, the worst
        # outcome is a lost event, logged.
        except Exception:
            logger.warning("Prompt registry: an outcome of %s could not be shaped", self.key)
            return False
        return reporter.put(event)

    def __repr__(self) -> str:
        return (
            f"<Prompt {self.key} v{self.version} variant={self.variant} locale={self.locale} "
            f"source={self.source}>"
        )


def _uuid4() -> str:
    """A random (version 4) UUID as text. ``str(uuid.uuid4())`` builds and checks a UUID object
    first, several times the cost of formatting the 16 random bytes, on the caller's thread."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# The formatted second of the last timestamp: a report formats only the milliseconds. A tuple, so
# threads swap it whole.
_last_second: tuple[int, str] = (-1, "")


def _now_rfc3339() -> str:
    """Now in UTC, RFC 3339 to the millisecond: ``2025-05-01T12:00:03.120Z``."""
    global _last_second
    now = time.time()
    second = int(now)
    cached = _last_second
    if cached[0] != second:
        cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        _last_second = cached
    return f"{cached[1]}.{int((now - second) * 1000):03d}Z"


def _answer_text(completion: Any) -> str | None:
    choices = getattr(completion, "choices", None) or [None]
    text = getattr(getattr(choices[0], "message", None), "content", None)
    return text if isinstance(text, str) else None


def _json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON can carry it, so one odd value can never stop a whole batch from being
    encoded: numbers that are not JSON numbers (NaN, infinities) and objects JSON has no type for
    become text, which the registry then refuses in that event alone (``wrong_type``), or stores
    as text inside ``inputs``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _MAX_DEPTH:
        return str(value)
    if isinstance(value, Mapping):
        return {
            key if isinstance(key, str) else str(key): _json_safe(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(item, depth + 1) for item in value]
    if isinstance(value, numbers.Integral):  # numpy's integers, for one
        return int(value)
    if isinstance(value, numbers.Real | Decimal):
        number = float(value)
        return number if math.isfinite(number) else str(value)
    return str(value)
