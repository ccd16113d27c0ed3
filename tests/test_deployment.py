"""How the service is deployed (issue 16, item 1): the Procfile is the one list of process
commands, compose.yaml and the Dockerfile run exactly those, every setting they pass is one the
service reads, and gunicorn with gunicorn.conf.py serves the API and the static files.

Images cannot be built on these machines, so the container files are checked as text.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
# Variables read by something other than the service's own settings: Python itself, and what
# scripts/serve's file hands to honcho.
NOT_SETTINGS = {"PATH", "PYTHONUNBUFFERED"}


def procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def settings_read() -> set[str]:
    """The environment variables the service reads: every quoted upper-case name in its settings
    and in gunicorn.conf.py (``env.str("NAME")``, ``env_int("NAME", …)``, ``os.environ.get``)."""
    names: set[str] = set()
    for path in ("config/settings.py", "gunicorn.conf.py"):
        names |= set(re.findall(r"""["']([A-Z][A-Z0-9_]+)["']""", (ROOT / path).read_text()))
    return names


def test_the_procfile_names_every_process():
    assert set(procfile()) == {"web", "stream", "worker", "beat", "release"}


def test_make_serve_runs_every_long_running_process_and_not_the_migrations():
    """honcho stops every process when one ends: the release process (the migrations, which
    ``scripts/serve`` runs before) would take the stack down a second after it started."""
    serve = (ROOT / "scripts" / "serve").read_text()
    (selection,) = [line for line in serve.splitlines() if line.startswith("processes=")]
    assert serve.rstrip().endswith("$processes")

    chosen = subprocess.run(
        ["bash", "-c", f"{selection}; echo $processes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert chosen == [name for name in procfile() if name != "release"]
    assert chosen[0] == "web"  # honcho gives the first the --port that make serve announces


def test_compose_runs_the_procfiles_commands_word_for_word():
    services = compose()["services"]
    entries = procfile()

    for name, command in entries.items():
        assert services[name]["command"] == command, name
    assert services["web"]["deploy"]["replicas"] == 2
    for name in ("postgres", "redis", "web", "worker"):
        assert not services[name]["healthcheck"].get("disable"), name


def test_the_image_runs_the_web_process_by_default():
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)

    assert cmd is not None
    assert json.loads(cmd.group(1)) == shlex.split(procfile()["web"])
    assert "USER registry" in dockerfile  # not root
    assert dockerfile.count("FROM python:3.13-slim") == 2  # built in one stage, run in another
    assert "collectstatic" in dockerfile


def test_every_setting_the_deployment_files_pass_is_one_the_service_reads():
    services = compose()["services"]
    passed = set(compose()["x-registry"]["environment"])
    for name in procfile():
        passed |= set(services[name].get("environment", {}))
    # The image's own stage: the build stage's variables (pip's) never reach the service.
    runtime_stage = (ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    for block in re.findall(r"^ENV (.*?)(?<!\\)$", runtime_stage, re.MULTILINE | re.DOTALL):
        passed |= set(re.findall(r"([A-Z][A-Z0-9_]+)=", block))
    serve = (ROOT / "scripts" / "serve").read_text()
    written = serve.split('cat > "$ENV_FILE" <<EOF', 1)[1].split("\nEOF", 1)[0]
    passed |= set(re.findall(r"^([A-Z][A-Z0-9_]+)=", written, re.MULTILINE))
    # The Procfile's own knobs (``${STREAM_PORT:-8001}``) are read by its commands.
    knobs = {name for command in procfile().values() for name in re.findall(r"\$\{(\w+)", command)}

    unknown = passed - settings_read() - knobs - NOT_SETTINGS

    assert not unknown, f"passed but never read: {sorted(unknown)}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.postgres
@pytest.mark.django_db
def test_gunicorn_with_its_config_serves_the_api_and_compressed_static_files(tmp_path):
    static_root = tmp_path / "static"
    port = free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        # The test database, whose environments (made by its migrations) the worker warms.
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DEBUG": "false",
        "PROMPT_REGISTRY_ENV_FILE": "/dev/null",
        "SECRET_KEY": settings.SECRET_KEY,
        "STATIC_ROOT": str(static_root),
        "GUNICORN_WORKERS": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    manage = [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"]
    subprocess.run(manage, cwd=ROOT, env=env, check=True, timeout=120)
    command = [sys.executable, "-m", *shlex.split(procfile()["web"])]
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                probe = f"{base}/healthz?subject=someone"  # a query the access log must not keep
                with urllib.request.urlopen(probe, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "gunicorn did not answer within a minute"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"{base}/static/admin/css/base.css", headers={"Accept-Encoding": "gzip"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Encoding"] == "gzip"  # precompressed at collect
            assert "max-age=3600" in response.headers["Cache-Control"]
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0].decode()
    # The worker loaded the releases before its first request (post_worker_init).
    assert re.search(r"Release cache warmed: [1-9]\d* environments in", output), output[-3000:]
    # The access log went through the service's logging, with gunicorn's own loggers named.
    assert "gunicorn.access" in output
    assert '"GET /static/admin/css/base.css HTTP/1.1" 200' in output
    # No query string in the access log: a resolve's holds the subject.
    assert '"GET /healthz HTTP/1.1" 200' in output
    assert "someone" not in output
