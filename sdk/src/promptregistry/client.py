"""The client: an environment's bundle held in memory, kept fresh in the background.

``Client.get`` is the hot path, called for every prompt a service uses. It reads one immutable
reference (the bundle being served), resolves locally with the traffic-split contract and returns
a ``Prompt``: no network, no lock, no I/O. Everything else happens around it:

1. At start, the client fetches ``GET /api/v1/environments/{environment}/bundle``. When the
   registry cannot answer, it serves the last-known-good bundle saved in ``cache_dir`` (and says
   so: ``status.source == "last-known-good"`` and a warning); with none, the caller's
   ``fallback_prompts`` (source ``"fallback"``); with neither, ``get`` raises
   ``RegistryUnavailable``.
2. A daemon thread polls the bundle every ``refresh_interval`` seconds with ``If-None-Match``: a
   304 costs the registry almost nothing, and a rollback reaches the client within one interval.
3. With ``stream=True`` a second daemon thread follows ``GET .../stream`` (server-sent events) and
   wakes the first at once on a release change, so a rollback applies within about a second. A
   broken stream is reconnected with backoff and jitter; polling goes on meanwhile.
4. Every new good bundle replaces the reference whole and is saved to disk atomically. A bundle
   that does not parse, or was computed with an unknown hash version, is never installed: the
   client keeps the one it has and logs why.

The package imports nothing from the server: it is installed alone (``pip install ./sdk``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote

import httpx

from .core.bucketing import HASH_VERSION
from .core.bundle import Bundle, ReleaseData, bundle_from_json, resolve
from .core.rendering import RENDER_DEADLINE_MS
from .errors import BundleInvalid, PromptNotFound, RegistryUnavailable
from .prompt import Prompt
from .reporting import Reporter, events_sender
from .store import BundleStore

logger = logging.getLogger(__name__)

__all__ = ["Client", "ClientStatus", "Source"]

# The registry sends a keep-alive comment every 15 s: a stream silent for this long is dead.
STREAM_READ_TIMEOUT = 45.0
# Reconnecting a broken stream: the first wait, doubled after each failure up to the last.
STREAM_BACKOFF = 0.5
STREAM_MAX_BACKOFF = 30.0
# After a release event, the bundle may still be the old one for a moment (the web node that
# answered had not heard of the change yet): it is fetched again this many times, quickly.
CATCH_UP_TRIES = 5
CATCH_UP_DELAY = 0.1
# The fields of a section a fallback prompt may leave out.
SECTIONS = ("system", "context", "instruction", "format")


class Source(StrEnum):
    """Where the bundle being served comes from."""

    LIVE = "live"  # fetched from the registry
    LAST_KNOWN_GOOD = "last-known-good"  # read from cache_dir: the registry could not be reached
    FALLBACK = "fallback"  # the caller's fallback_prompts: neither could
    NONE = "none"  # nothing at all: get() raises RegistryUnavailable


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """What the client serves and how fresh it is (``Client.status``)."""

    environment: str
    source: Source
    etag: str | None  # the served bundle's ETag (None: fallback prompts, or nothing)
    fetched_at: datetime | None  # when the registry last vouched for it (a 200 or a 304)
    last_error: str | None  # why the last fetch failed (None once one succeeds)
    stale: bool  # not confirmed by the registry's last answer: serving what the client has
    stream_connected: bool


@dataclass(frozen=True, slots=True)
class _Served:
    """The immutable value ``get`` reads: replaced whole, never changed."""

    releases: Mapping[str, ReleaseData]
    bundle: Bundle
    source: Source


class Client:
    """A registry client for one environment. Thread-safe; one per process is enough.

    ``get`` never touches the network. ``close`` (or ``with Client(...) as registry:``) stops the
    background threads and flushes the outcome reporter."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        environment: str,
        cache_dir: str | os.PathLike[str] | None = None,
        refresh_interval: float = 30.0,
        stream: bool = True,
        fallback_prompts: Mapping[str, Mapping[str, Any]] | None = None,
        timeout: float = 5.0,
        report: bool = True,
        http: httpx.Client | None = None,
        render_deadline_ms: float | None = RENDER_DEADLINE_MS,
    ) -> None:
        if not environment:
            raise ValueError("Name the environment.")
        if refresh_interval <= 0 or timeout <= 0:
            raise ValueError("refresh_interval and timeout must be above 0 seconds.")
        if render_deadline_ms is not None and render_deadline_ms <= 0:
            raise ValueError("render_deadline_ms must be above 0 (or None: no deadline).")
        # Every Prompt this client hands out renders under this deadline (as the server's
        # PROMPT_RENDER_DEADLINE_MS): a template cannot hold the caller's thread for long.
        self.render_deadline_ms = render_deadline_ms
        self.base_url = base_url.rstrip("/")
        self.environment = environment
        self.refresh_interval = float(refresh_interval)
        self.timeout = float(timeout)
        self._api_key = api_key
        where = f"{self.base_url}/api/v1/environments/{quote(environment, safe='')}"
        self._bundle_url, self._stream_url = f"{where}/bundle", f"{where}/stream"
        # Checked now, so a mistake in them shows at start, not during an outage.
        self._fallback = (
            _fallback_bundle(fallback_prompts, environment=environment)
            if fallback_prompts
            else None
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self.timeout)
        self._store = BundleStore(cache_dir, environment) if cache_dir is not None else None
        self._reporter = (
            Reporter(events_sender(self._http, self.base_url, api_key)) if report else None
        )

        self._served: _Served | None = None
        # Writers (fetches, installs) take this lock; get() never does.
        self._refresh_lock = threading.Lock()
        self._fetched_at: float | None = None
        self._last_error: str | None = None
        self._refused_etag: str | None = None
        self._stream_connected = False
        self._stream_hello = False
        self._stream_response: httpx.Response | None = None
        self._wanted: dict[str, int] = {}  # prompt -> revision announced by the stream
        self._wanted_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closed = False

        self._start()
        self._threads = [
            threading.Thread(
                target=self._poll_forever, name=f"promptregistry-refresh-{environment}", daemon=True
            )
        ]
        if stream:
            self._threads.append(
                threading.Thread(
                    target=self._stream_forever,
                    name=f"promptregistry-stream-{environment}",
                    daemon=True,
                )
            )
        for thread in self._threads:
            thread.start()

    # --- the hot path ------------------------------------------------------------------------

    def get(self, key: str, *, subject: str | None = None, locale: str | None = None) -> Prompt:
        """The prompt ``key`` as this environment serves it to ``subject`` in ``locale``.

        Resolved locally from the bundle in memory: the same version, variant and locale the
        registry's ``GET /resolve`` answers. No subject: one is drawn for this call (``sticky``
        is False). Raises ``PromptNotFound`` when the environment does not release ``key``, and
        ``RegistryUnavailable`` when there is no bundle at all (nor a fallback prompt for it)."""
        served = self._served  # one read of an immutable value: no lock, whatever refreshes
        if served is None:
            raise RegistryUnavailable(
                f"No bundle for {self.environment}: the registry could not be reached "
                f"({self._last_error}) and there is no last-known-good bundle or fallback prompt."
            )
        release = served.releases.get(key)
        if release is None:
            if served.source is Source.FALLBACK:
                raise RegistryUnavailable(
                    f"The registry could not be reached ({self._last_error}) and there is no "
                    f"fallback prompt {key!r}."
                )
            raise PromptNotFound(f"{key!r} has no release in {self.environment}.")
        return Prompt(
            resolve(release, subject=subject, locale=locale),
            source=served.source,
            reporter=self._reporter,
            environment=self.environment,
            subject=subject,
            render_deadline_ms=self.render_deadline_ms,
        )

    # --- state -------------------------------------------------------------------------------

    @property
    def status(self) -> ClientStatus:
        """Where the bundle served comes from, and whether the registry still vouches for it."""
        served = self._served
        source = served.source if served is not None else Source.NONE
        return ClientStatus(
            environment=self.environment,
            source=source,
            etag=(served.bundle.etag or None) if served is not None else None,
            fetched_at=(
                datetime.fromtimestamp(self._fetched_at, UTC)
                if self._fetched_at is not None
                else None
            ),
            last_error=self._last_error,
            stale=source is not Source.LIVE or self._last_error is not None,
            stream_connected=self._stream_connected,
        )

    @property
    def reporter(self) -> Reporter | None:
        """The outcome reporter the prompts report to (None with ``report=False``)."""
        return self._reporter

    def refresh(self) -> bool:
        """Fetches the bundle now, on the caller's thread. True when a new bundle was installed;
        False when it had not changed or the fetch failed (``status.last_error`` says why). Never
        raises for the registry's sake."""
        return self._refresh()

    def close(self, timeout: float = 5.0) -> None:
        """Stops the background threads and flushes the reporter (at most ``timeout`` seconds
        each). Idempotent; ``get`` keeps answering from the last bundle afterwards."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._abort_stream()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        if self._reporter is not None:
            self._reporter.close(timeout)
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        status = self.status
        return f"<Client {self.base_url} environment={self.environment} source={status.source}>"

    # --- fetching ----------------------------------------------------------------------------

    def _start(self) -> None:
        """The first fetch, then the last-known-good, then the fallback prompts."""
        if self._refresh():
            return
        saved = self._store.load() if self._store is not None else None
        if saved is not None:
            try:
                bundle = self._parse(saved.bundle, etag=saved.etag)
            except BundleInvalid as exc:
                logger.warning(
                    "Ignoring the last-known-good bundle %s: %s", self._store_path(), exc.message
                )
            else:
                self._install(bundle, Source.LAST_KNOWN_GOOD)
                self._fetched_at = saved.saved_at
                logger.warning(
                    "The registry could not be reached (%s): serving the last-known-good bundle "
                    "of %s saved at %s (etag %s)",
                    self._last_error,
                    self.environment,
                    datetime.fromtimestamp(saved.saved_at, UTC).isoformat(),
                    saved.etag,
                )
                return
        if self._fallback is not None:
            self._install(self._fallback, Source.FALLBACK)
            logger.warning(
                "The registry could not be reached (%s) and there is no last-known-good bundle: "
                "serving the fallback prompts for %s",
                self._last_error,
                self.environment,
            )
            return
        logger.error(
            "The registry could not be reached (%s) and there is no last-known-good bundle or "
            "fallback prompt: get() raises RegistryUnavailable until it answers",
            self._last_error,
        )

    def _refresh(self) -> bool:
        with self._refresh_lock:
            return self._fetch()

    def _fetch(self) -> bool:
        served = self._served
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if served is not None and served.bundle.etag:
            headers["If-None-Match"] = served.bundle.etag
        try:
            response = self._http.get(self._bundle_url, headers=headers, timeout=self.timeout)
        except httpx.HTTPError as exc:
            return self._failed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if response.status_code == 304 and served is not None:
            self._confirmed()
            if served.source is not Source.LIVE:
                # The last-known-good is what the registry serves now: it is live again.
                self._install(served.bundle, Source.LIVE)
                logger.info("The registry answers again: %s is live", self.environment)
            return False
        if response.status_code != 200:
            return self._failed(_describe(response))
        etag = response.headers.get("ETag", "")
        if (
            served is not None
            and served.source is Source.LIVE
            and etag
            and etag == served.bundle.etag
        ):
            self._confirmed()  # the same bundle again (a proxy that drops If-None-Match)
            return False
        try:
            data = response.json()
            bundle = self._parse(data, etag=etag)
        except (ValueError, BundleInvalid) as exc:  # not JSON (a ValueError), or not a bundle
            reason = exc.message if isinstance(exc, BundleInvalid) else f"not JSON: {exc}"
            if etag != self._refused_etag:
                logger.error(
                    "Refused the %s bundle (etag %s), keeping the one served: %s",
                    self.environment,
                    etag,
                    reason,
                )
                self._refused_etag = etag
            self._last_error = f"bundle refused: {reason}"
            return False
        was = served.source if served is not None else Source.NONE
        self._install(bundle, Source.LIVE)
        self._confirmed()
        if was in (Source.LAST_KNOWN_GOOD, Source.FALLBACK):
            logger.info("The registry answers again: %s is live", self.environment)
        if self._store is not None:
            self._store.save(etag=etag, bundle=data)
        return True

    def _parse(self, data: Any, *, etag: str) -> Bundle:
        """A bundle, or ``BundleInvalid``: whatever is wrong with it, it is never installed."""
        if not isinstance(data, Mapping):
            raise BundleInvalid("The bundle is not a JSON object.")
        try:
            bundle = bundle_from_json(data, etag=etag)
        except BundleInvalid:
            raise
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            # bundle_from_json checks the shape; anything it missed is still a refusal.
            raise BundleInvalid(f"The bundle is malformed: {exc!r}") from exc
        if bundle.environment != self.environment:
            raise BundleInvalid(
                f"The bundle is for {bundle.environment!r}, not {self.environment!r}."
            )
        return bundle

    def _install(self, bundle: Bundle, source: Source) -> None:
        # One assignment: get() sees the old value or the new one, never a mix.
        self._served = _Served(releases=bundle.releases, bundle=bundle, source=source)

    def _confirmed(self) -> None:
        self._fetched_at = time.time()
        if self._last_error is not None:
            logger.info("Fetched the %s bundle again", self.environment)
        self._last_error = None

    def _failed(self, reason: str) -> bool:
        if self._last_error is None:
            logger.warning("Could not fetch the %s bundle: %s", self.environment, reason)
        self._last_error = reason
        return False

    def _store_path(self) -> str:
        return str(self._store.path) if self._store is not None else ""

    # --- polling -----------------------------------------------------------------------------

    def _poll_forever(self) -> None:
        delay, tries = self.refresh_interval, 0
        while not self._stop.is_set():
            self._wake.wait(delay)
            if self._stop.is_set():
                return
            # Cleared before fetching: a wake-up that comes during the fetch is served next.
            self._wake.clear()
            try:
                self._refresh()
            except Exception:
                # This thread is the client's freshness: a bug here must not end it for good.
                logger.exception("Refreshing the %s bundle failed", self.environment)
            if self._lagging() and tries < CATCH_UP_TRIES:
                delay, tries = CATCH_UP_DELAY * 2**tries, tries + 1
            else:
                delay, tries = self.refresh_interval, 0
                with self._wanted_lock:
                    self._wanted.clear()

    def _lagging(self) -> bool:
        """Whether a release the stream announced is still older in the bundle held."""
        served = self._served
        with self._wanted_lock:
            if served is not None:
                for prompt, revision in list(self._wanted.items()):
                    release = served.releases.get(prompt)
                    if release is not None and release.revision >= revision:
                        del self._wanted[prompt]
            return bool(self._wanted)

    # --- streaming ---------------------------------------------------------------------------

    def _stream_forever(self) -> None:
        """Follows the stream for as long as the client is open.

        A stream that ended cleanly after its hello (the server ends them every few minutes) is
        reconnected at once. One that broke, or never came up, is retried after a backoff that
        doubles from ``STREAM_BACKOFF`` up to ``STREAM_MAX_BACKOFF`` and starts over once a
        hello comes; the wait is drawn between half and all of it, so clients that lost the same
        server do not all come back at the same instant."""
        backoff, failures = STREAM_BACKOFF, 0
        while not self._stop.is_set():
            self._stream_hello = False
            ended = False
            try:
                self._follow_stream()
                ended = True
            except (httpx.HTTPError, _StreamRefused) as exc:
                # Once per outage: a registry that stays down would otherwise fill the log.
                logger.log(
                    logging.INFO if failures == 0 else logging.DEBUG,
                    "The %s release stream broke (%s); polling every %s s meanwhile",
                    self.environment,
                    exc or type(exc).__name__,
                    self.refresh_interval,
                )
            except Exception:
                logger.exception("Following the %s release stream failed", self.environment)
            finally:
                self._stream_connected = False
                self._stream_response = None
            if self._stream_hello:
                backoff, failures = STREAM_BACKOFF, 0
                if ended:
                    continue
            failures += 1
            self._stop.wait(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, STREAM_MAX_BACKOFF)

    def _follow_stream(self) -> None:
        """Reads one stream until it ends (or the client closes)."""
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT)
        with self._http.stream("GET", self._stream_url, headers=headers, timeout=timeout) as resp:
            if resp.status_code != 200:
                resp.read()
                raise _StreamRefused(_describe(resp))
            self._stream_response = resp
            if self._stop.is_set():
                return
            for event, data in sse_events(resp.iter_lines()):
                if event == "hello":
                    self._stream_hello = self._stream_connected = True
                    served = self._served
                    if served is None or served.bundle.etag != _json_field(data, "etag"):
                        self._wake.set()  # changed while this client was not listening
                elif event == "release":
                    prompt, revision = _json_field(data, "prompt"), _json_field(data, "revision")
                    if isinstance(prompt, str) and type(revision) is int:
                        logger.debug("Release changed: prompt=%s revision=%d", prompt, revision)
                        with self._wanted_lock:
                            self._wanted[prompt] = max(revision, self._wanted.get(prompt, 0))
                        self._wake.set()
                if self._stop.is_set():
                    return

    def _abort_stream(self) -> None:
        """Unblocks the stream thread's read at once: shutting the socket down ends the recv it
        waits in (closing a response from another thread would not)."""
        response = self._stream_response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _StreamRefused(Exception):
    """The stream answered something other than 200 (a wrong key, an unknown environment)."""


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Server-sent events from a stream's lines, as ``(event, data)``: ``event`` defaults to
    ``message``, data lines are joined with newlines, comments (``: keep-alive``) are skipped."""
    event, data = "", []
    for line in lines:
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)


def _json_field(data: str, name: str) -> Any:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed.get(name) if isinstance(parsed, dict) else None


def _describe(response: httpx.Response) -> str:
    """``HTTP 401: The API key is unknown or revoked.``: the problem document's detail when the
    registry sent one."""
    detail = ""
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            detail = str(body.get("detail") or body.get("title") or "")
    return f"HTTP {response.status_code}" + (f": {detail}" if detail else "")


def _fallback_bundle(prompts: Mapping[str, Mapping[str, Any]], *, environment: str) -> Bundle:
    """The caller's fallback prompts as a bundle, each released alone as its stable version.

    Each prompt is a dict: ``templates`` (locale -> sections) or ``sections`` (the sections of
    one locale, ``default_locale``, "en" unless given); optional ``variables`` (the registry's
    variable specs), ``model`` (a binding), ``version`` (the number of the version the text copies,
    reported with outcomes; 1 by default) and ``default_locale``. Sections left out are empty."""
    releases: dict[str, Any] = {}
    for key, spec in prompts.items():
        where = f"fallback_prompts[{key!r}]"
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must be a dict.")
        unknown = set(spec) - {
            "templates",
            "sections",
            "variables",
            "model",
            "version",
            "default_locale",
        }
        if unknown:
            raise ValueError(f"{where} has unknown fields: {', '.join(sorted(unknown))}.")
        if ("templates" in spec) == ("sections" in spec):
            raise ValueError(f"{where} needs either templates or sections.")
        default_locale = spec.get("default_locale", "en")
        templates = spec.get("templates") or {default_locale: spec.get("sections")}
        if not isinstance(templates, Mapping) or not all(
            isinstance(s, Mapping) for s in templates.values()
        ):
            raise ValueError(f"{where}: templates map locales to sections (dicts).")
        if default_locale not in templates:
            raise ValueError(f"{where} has no template in its default locale {default_locale!r}.")
        for locale, sections in templates.items():
            unknown = set(sections) - set(SECTIONS)
            if unknown:
                raise ValueError(
                    f"{where}: {', '.join(sorted(unknown))} in {locale!r} is not a section "
                    f"({', '.join(SECTIONS)})."
                )
        number = spec.get("version", 1)
        if type(number) is not int or number < 1:
            raise ValueError(f"{where}: version must be a whole number from 1.")
        releases[key] = {
            "prompt": key,
            "default_locale": default_locale,
            "revision": 0,
            "state": {
                "schema_version": 1,
                "stable": number,
                "canary": None,
                "experiment": None,
                "shadow": None,
            },
            "versions": {
                str(number): {
                    "number": number,
                    "content_hash": "",
                    "variables": list(spec.get("variables", [])),
                    "model": dict(spec.get("model", {})),
                    "templates": {
                        locale: {name: str(sections.get(name, "")) for name in SECTIONS}
                        for locale, sections in templates.items()
                    },
                }
            },
        }
    data = {"environment": environment, "hash_version": HASH_VERSION, "releases": releases}
    try:
        return bundle_from_json(data, etag="")
    except BundleInvalid as exc:
        raise ValueError(f"fallback_prompts: {exc.message}") from exc
