"""Release stream followers for the tests of the ASGI path (issue 21).

``Followers(url, key, count)`` opens ``count`` streams at once on an event loop of its own (a
thread), as that many SDK processes would, and records what each receives: its status, its
events ``(name, data, id)``, the ``retry:`` it ended with, whether it ended. The test thread
makes release changes meanwhile and waits with ``wait_for`` (a bounded poll): nothing measures
how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

WAIT_SECONDS = 10.0


def wait_for(predicate: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"Waited {timeout} s for {what}")
        time.sleep(0.02)


@dataclass
class Follower:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    problem: dict[str, Any] | None = None
    events: list[tuple[str, Any, str]] = field(default_factory=list)
    retry: int | None = None
    ended: bool = False

    @property
    def said_hello(self) -> bool:
        return bool(self.events) and self.events[0][0] == "hello"

    def releases(self) -> list[tuple[str, int]]:
        return [(d["prompt"], d["revision"]) for name, d, _ in self.events if name == "release"]

    @property
    def last_id(self) -> str:
        return next((event_id for _, _, event_id in reversed(self.events) if event_id), "")


class Followers:
    def __init__(
        self,
        base_url: str,
        key: str,
        count: int = 1,
        *,
        environment: str = "staging",
        last_event_id: str = "",
    ) -> None:
        self.url = f"{base_url}/api/v1/environments/{environment}/stream"
        self.key, self.last_event_id = key, last_event_id
        self.followers = [Follower() for _ in range(count)]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        wait_for(
            lambda: all(f.said_hello or f.ended or f.problem for f in self.followers),
            "every stream's hello or refusal",
        )

    def __getitem__(self, index: int) -> Follower:
        return self.followers[index]

    def __iter__(self):
        return iter(self.followers)

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=WAIT_SECONDS)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        timeout = httpx.Timeout(WAIT_SECONDS, read=60.0)
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as http:
            tasks = [asyncio.create_task(self._follow(http, f)) for f in self.followers]
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self, http: httpx.AsyncClient, follower: Follower) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            async with http.stream("GET", self.url, headers=headers) as response:
                follower.headers = dict(response.headers)
                if response.status_code != 200:
                    follower.status = response.status_code
                    follower.problem = json.loads(await response.aread())
                    return
                follower.status = 200
                name, data, event_id = "message", None, ""
                async for line in response.aiter_lines():
                    if line == "":
                        if data is not None:
                            follower.events.append((name, json.loads(data), event_id))
                        name, data, event_id = "message", None, ""
                    elif line.startswith("event: "):
                        name = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        data = line.removeprefix("data: ")
                    elif line.startswith("id: "):
                        event_id = line.removeprefix("id: ")
                    elif line.startswith("retry: "):
                        follower.retry = int(line.removeprefix("retry: "))
        except httpx.HTTPError:
            follower.status = follower.status or -1
        follower.ended = True
