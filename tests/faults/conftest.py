"""The registry as it runs in production, with its PostgreSQL and Redis behind proxies a test can
take down.

- ``postgres`` / ``redis_proxy``: a ``TcpProxy`` (tests/tcp_proxy.py) in front of the machine's
  PostgreSQL / Redis. ``down()`` is the service stopping (connections refused, open ones cut),
  ``up()`` it coming back. The real services are shared by everyone on the machine and are never
  touched.
- ``web``: a gunicorn server (a subprocess, production settings) on the test database and Redis
  db, reached only through those proxies, and the API keys a service and a release manager hold.
  A fresh server per test: its release cache and key ring start empty.

- ``worker``: a real Celery worker (tests/celery_worker.py) on a queue of its own, not started.
- ``shadow_all``: makes staging shadow a version on every live call.

Every wait is bounded (``wait_for``, the HTTP client's timeout); nothing measures how long
something took.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from api.services import apikey_create
from tests.celery_worker import Worker, wait_for, worker_on_own_queue
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
REQUEST_TIMEOUT_SECONDS = 15.0  # a request past this is a hang, and the test fails on it


@pytest.fixture
def postgres(db) -> Iterator[TcpProxy]:
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    database = connection.settings_dict
    proxy = TcpProxy((database["HOST"] or "127.0.0.1", int(database["PORT"] or 5432)))
    yield proxy
    proxy.down()


@pytest.fixture
def redis_proxy(needs_redis, settings) -> Iterator[TcpProxy]:
    address = urlsplit(settings.REDIS_URL)
    proxy = TcpProxy((address.hostname or "127.0.0.1", address.port or 6379))
    yield proxy
    proxy.down()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Web:
    """One gunicorn server on loopback. ``get``/``post`` send the given key's bearer token."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_SECONDS)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--threads",
                    "4",
                    "--timeout",
                    "30",
                    "--graceful-timeout",
                    "2",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def answers() -> bool:
            try:
                return self.http.get("/api/v1/environments", timeout=1.0).status_code == 401
            except httpx.TransportError:
                if self.process is None or self.process.poll() is not None:
                    pytest.fail(f"The web server exited:\n{self.log_tail()}")
                return False

        wait_for(answers, "the web server")

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str, key: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers={"Authorization": f"Bearer {key}"}, **kwargs)

    def post(
        self, path: str, key: str, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.http.post(
            path, json=body, headers={"Authorization": f"Bearer {key}", **(headers or {})}
        )


@pytest.fixture
def web_env(postgres, redis_proxy, settings, monkeypatch) -> dict[str, str]:
    """The server's environment: production settings, its database and Redis behind the proxies,
    a queue of its own for the jobs it sends."""
    from django.db import connection

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    database = connection.settings_dict
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    redis_db = urlsplit(settings.REDIS_URL).path or "/0"
    queue = f"test-faults-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    return {
        **{k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES},
        "NO_PROXY": "127.0.0.1,localhost",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": (
            f"postgres://{database['USER']}{password}@127.0.0.1:{postgres.port}/{database['NAME']}"
        ),
        "REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}{redis_db}",
        "CELERY_QUEUE": queue,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "RELEASE_CACHE_CHECK_SECONDS": "1",
        "SHADOW_NOISE_FLOOR_PERCENT": "0",  # one shadow job per sampled call, none drawn at random
        "PROVIDER_ALLOW_LOOPBACK": "true",  # the fake model server listens on 127.0.0.1
    }


@pytest.fixture
def web(web_env, tmp_path) -> Iterator[Web]:
    server = Web(web_env, tmp_path / "web.log")
    server.start()
    yield server
    server.stop()
    print(server.log_tail())  # shown by pytest when the test failed


@pytest.fixture
def service_key(db) -> str:
    """A service's key: resolves, renders, runs, reports outcomes."""
    _, raw = apikey_create(name="service", scopes=("prompts:read", "runs:execute", "events:write"))
    return raw


@pytest.fixture
def manager_key(db) -> str:
    """Release automation's key."""
    _, raw = apikey_create(name="release-bot", scopes=("prompts:read", "releases:write"))
    return raw


@pytest.fixture
def worker(settings, needs_redis, tmp_path) -> Iterator[Worker]:
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="faults") as worker:
        yield worker


@pytest.fixture
def shadow_all(released, manager, settings) -> Callable[[int], None]:
    """``shadow_all(n)``: staging (stable v2) shadows version n on every live call, with no
    noise-floor reruns, so each live call queues exactly one shadow job."""
    from releases.services import release_shadow_start

    settings.SHADOW_NOISE_FLOOR_PERCENT = 0

    def start(version: int) -> None:
        release_shadow_start(
            prompt=released.prompt,
            environment=released.environments["staging"],
            versions=[version],
            sample_percent=Decimal(100),
            actor=manager,
            reason="compare",
        )

    return start
