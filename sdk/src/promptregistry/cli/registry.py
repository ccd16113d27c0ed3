"""The registry's REST API as the command uses it: one httpx client with a timeout on every
request, the key sent as a bearer token, and every failure turned into a ``CliError``.

A refusal's problem document becomes a ``ProblemError`` (its title, detail and listed problems
are what the person reads). A ``429`` or ``503`` said nothing was done: the request is sent
again after its ``Retry-After`` (at most ``RETRY_AFTER_MAX`` seconds, ``ATTEMPTS`` tries in all);
nothing else is retried, since a write whose answer was lost may have been applied.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from .. import __version__
from .config import Settings
from .errors import CliError, ProblemError

API = "/api/v1"
ATTEMPTS = 3
RETRY_AFTER_MAX = 30.0
PAGE_SIZE = 200  # the API's largest page
MAX_PAGES = 10_000  # a bound on any walk, whatever a server answers


def segment(value: str | int) -> str:
    """A path segment, escaped: a key or an environment never changes the path it is put in."""
    return quote(str(value), safe="")


class Registry:
    """``with Registry(settings) as registry: registry.get("/prompts")``."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=settings.url + API,
            timeout=settings.timeout,
            headers={
                "Authorization": f"Bearer {settings.api_key}",
                "Accept": "application/json",
                "User-Agent": f"promptregistry-cli/{__version__}",
            },
            transport=transport,
        )

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None) -> Any:
        return self.request(
            "POST", path, json=body if body is not None else {}, headers=headers
        ).json()

    def pages(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a paginated list, page after page."""
        for page in range(1, MAX_PAGES + 1):
            answer = self.get(path, {**(params or {}), "page": page, "page_size": PAGE_SIZE})
            yield from answer["results"]
            if not answer.get("next"):
                return
        raise CliError(f"{path} has more than {MAX_PAGES} pages; narrow the request.")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = f"{self.settings.url}{API}{path}"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TimeoutException as exc:
                raise CliError(
                    f"The registry did not answer {method} {where} within "
                    f"{self.settings.timeout:g} s (--timeout, PROMPTREGISTRY_TIMEOUT)."
                ) from exc
            except httpx.HTTPError as exc:
                raise CliError(f"Cannot reach the registry at {self.settings.url}: {exc}.") from exc
            wait = _retry_after(response)
            if wait is None or attempt == ATTEMPTS:
                break
            self._sleep(wait)
        if response.is_success:
            return response
        raise _refusal(response, method, where, self.settings)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending again, for an answer that says nothing was done."""
    if response.status_code not in (429, 503):
        return None
    try:
        seconds = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _refusal(response: httpx.Response, method: str, where: str, settings: Settings) -> CliError:
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
    problem = None
    if content_type in ("application/problem+json", "application/json"):
        try:
            problem = response.json()
        except ValueError:
            problem = None
    if not isinstance(problem, dict) or "title" not in problem:
        text = " ".join(response.text.split())[:200]
        return CliError(f"{method} {where} answered {response.status_code}: {text or 'no body'}.")
    error = ProblemError(problem)
    if response.status_code == 401:
        source = settings.sources.get("api_key", "the configuration")
        error.message += f"\n  (the API key from {source} was refused)"
    return error
