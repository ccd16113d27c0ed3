"""Metrics across processes: multiprocess mode adds up every process's figures and forgets the
ones that exited; gunicorn's workers answer one sum whichever of them a scrape reaches; the Celery
worker serves its pool's task figures on its own port.

Each case starts real processes (prometheus_client picks its mode when it is imported, so
``PROMETHEUS_MULTIPROC_DIR`` must be in a process's environment from its start). Waits are bounded
polls; nothing measures time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from runs.models import Call
from runs.tasks import delete_expired_calls_task
from tests.celery_worker import Worker, wait_for, worker_on_own_queue

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
KEY = "support.refund-reply"
PUBLIC = {"Host": "registry.example.com", "X-Forwarded-Proto": "https"}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called ``name`` in a scrape, by its labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def sample(text: str, name: str, **labels: str) -> float:
    return samples(text, name).get(tuple(sorted(labels.items())), 0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A fresh process's environment: no developer's .env, no proxy, ``extra`` on top."""
    proxies = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}
    return {
        **{k: v for k, v in os.environ.items() if k not in proxies},
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": f"{ROOT / 'sdk' / 'src'}:{ROOT}",
        "PROMPT_REGISTRY_ENV_FILE": os.devnull,
        "PROMPT_REGISTRY_VAR_DIR": str(tmp_path / "var"),
        **extra,
    }


# --- multiprocess mode, in one Python with forked children ---------------------------------------

FORKED = """
import json, os, django
django.setup()
from django.test import Client
from config import metrics

def scrape():
    return Client(HTTP_HOST="127.0.0.1").get("/metrics").content.decode()

children = []
for requests in (2, 3):
    pid = os.fork()
    if pid == 0:  # a worker process: serves requests, holds shadow jobs
        for _ in range(requests):
            Client(HTTP_HOST="127.0.0.1").get("/healthz")
        metrics.OUTBOX_DEPTH.inc(requests)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
both = scrape()
metrics.process_exited(children[0])
one_gone = scrape()
print(json.dumps({"both": both, "one_gone": one_gone}))
"""


def test_in_multiprocess_mode_a_scrape_adds_up_every_process_and_forgets_exited_ones(tmp_path):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = project_env(
        tmp_path,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="true",
        DATABASE_URL="",
        REDIS_URL="",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
    )
    done = subprocess.run(
        [sys.executable, "-c", FORKED],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    scrapes = json.loads(done.stdout.strip().splitlines()[-1])
    health = {"route": "/healthz", "method": "GET", "status": "200"}

    for text in scrapes.values():
        # Both children's requests, though neither answered the scrape.
        assert sample(text, "promptregistry_http_requests_total", **health) == 5
        # A fresh registry over the files: no figure of the one process that answers.
        assert "process_cpu_seconds_total" not in text
    # The outbox depth is summed over live processes: the exited child's share goes.
    assert sample(scrapes["both"], "promptregistry_shadow_outbox_depth") == 5
    assert sample(scrapes["one_gone"], "promptregistry_shadow_outbox_depth") == 3


# --- gunicorn --------------------------------------------------------------------------------------


def documented_gunicorn_hooks() -> str:
    """The ``gunicorn.conf.py`` hooks docs/metrics.md tells operators to use: the server below
    runs with exactly those."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    [hooks] = [b for b in blocks if "def child_exit(server, worker)" in b]
    return hooks


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT']}/{db['NAME']}"
    )


@pytest.fixture
def gunicorn(tmp_path, settings, model_server) -> Iterator[httpx.Client]:
    """Two gunicorn workers under production settings (https redirect on, ALLOWED_HOSTS naming
    only the public name) in multiprocess mode, with the documented hooks."""
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(documented_gunicorn_hooks())
    port = free_port()
    env = project_env(
        tmp_path,
        DEBUG="false",
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        ALLOWED_HOSTS="registry.example.com",
        SECURE_SSL_REDIRECT="true",
        SECURE_PROXY_SSL_HEADER_NAME="HTTP_X_FORWARDED_PROTO",
        PROVIDER_ALLOW_LOOPBACK="true",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        LOG_LEVEL="WARNING",
    )
    log = tmp_path / "gunicorn.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--config",
                str(config),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--timeout",
                "30",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15.0)

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            return http.get("/healthz", headers=PUBLIC).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(answers, "gunicorn")
        yield http
    finally:
        http.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        print(log.read_text()[-3000:])  # shown by pytest when the test failed


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_under_gunicorn_every_scrape_counts_every_worker_s_resolves_and_runs(
    released, make_client, gunicorn
):
    client = make_client("prompts:read", "runs:execute", name="service")
    token = client._credentials["HTTP_AUTHORIZATION"]
    headers = {**PUBLIC, "Authorization": token}

    def resolve(_: int) -> int:
        url = f"/api/v1/prompts/{KEY}/resolve?environment=staging&subject=user-{_}"
        return gunicorn.get(url, headers=headers).status_code

    with ThreadPoolExecutor(4) as pool:  # concurrent, so both workers answer some
        assert list(pool.map(resolve, range(8))) == [200] * 8
    ran = gunicorn.post(
        f"/api/v1/prompts/{KEY}/run",
        json={"environment": "staging", "subject": "user-77", "variables": {"customer_name": "A"}},
        headers=headers,
    )
    assert ran.status_code == 200, ran.text
    # The run's record, and its model call's counts with it, come once the answer is sent
    # (decision 0041): a scrape at once may precede them.
    wait_for(
        lambda: Call.objects.filter(request_id=ran.json()["request_id"]).exists(), "the record"
    )

    # Plain http, by address: as Prometheus scrapes. Each scrape reaches either worker.
    for _ in range(4):
        scraped = gunicorn.get("/metrics")
        assert scraped.status_code == 200, scraped.text
        text = scraped.text
        resolves = {"route": "/api/v1/prompts/<key:key>/resolve", "method": "GET", "status": "200"}
        runs = {"route": "/api/v1/prompts/<key:key>/run", "method": "POST", "status": "200"}
        assert sample(text, "promptregistry_http_requests_total", **resolves) == 8
        assert sample(text, "promptregistry_http_requests_total", **runs) == 1
        assert (
            sample(
                text,
                "promptregistry_model_calls_total",
                source="run",
                prompt=KEY,
                version="2",
                variant="stable",
                provider="local",
                model="echo-1",
                outcome="ok",
            )
            == 1
        )
        assert "user-77" not in text
        # Each live process's cache time is its own series; both workers loaded releases.
        confirmed = samples(text, "promptregistry_release_cache_confirmed_timestamp_seconds")
        assert all(dict(labels).get("pid") for labels in confirmed)


# --- the Celery worker's port ----------------------------------------------------------------------


@pytest.fixture
def worker(settings, needs_redis, tmp_path) -> Iterator[Worker]:
    with worker_on_own_queue(settings, tmp_path / "worker.log", purpose="metrics") as worker:
        yield worker


@pytest.mark.postgres
def test_the_worker_serves_the_tasks_its_pool_ran_on_its_own_port(worker, settings, tmp_path):
    port = free_port()
    directory = tmp_path / "worker-prometheus"
    directory.mkdir()
    worker.env |= {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "WORKER_METRICS_PORT": str(port),
        "WORKER_METRICS_ADDRESS": "127.0.0.1",
    }
    worker.start()

    delete_expired_calls_task.apply_async(queue=settings.CELERY_TASK_DEFAULT_QUEUE)

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()

    task = {"task": "runs.delete_expired_calls"}
    wait_for(
        lambda: sample(scrape(), "promptregistry_task_duration_seconds_count", **task) == 1,
        "the worker's port to show the task",
    )
    # The pool's child ran it; the main process, which serves the port, read its file.
    assert sample(scrape(), "promptregistry_task_failures_total", **task) == 0
