"""What ``POST /run`` adds to a model call: the local model server directly, and through ``/run``.

    .venv/bin/python bench/run.py [--calls 300] [--rounds 5] [--profile 200] [--threads 1]

1. Builds a database on the local PostgreSQL with one prompt released in production whose binding
   names the provider ``local``: the fake model server (``runs.fake_provider``), started here on
   loopback in a process of its own.
2. Serves the project under gunicorn with gunicorn.conf.py (PostgreSQL and Redis, as production
   runs) and 2 workers: gunicorn's sync worker with ``--threads 1``, the default here (named on the
   command line: the file names gthread, which one thread would keep), or the production
   settings' gthread worker with ``--threads 4``.
3. One call after the other, alternating: the same chat completion straight to the model server
   (``direct``), then through ``/run``; both over a new connection each time (the model server
   speaks HTTP/1.0 and gunicorn's sync workers close after each answer). Before measuring, the
   two answers are checked to be the same text, so both sides asked the model the same thing.
4. Prints p50 and p99 of each per round, then the median of the rounds, and what ``/run`` adds
   (p50 and p99 of ``/run`` minus those of ``direct``). Target: at most 2 ms added at p50.
   Alongside, and only for comparison: the same call made with the ``openai`` client (kept, as a
   service keeps it), which is what a service calling its model itself would pay instead; and
   ``GET /healthz`` through the same gunicorn (answered before any middleware), the floor of any
   request through the web process, which no change to the run path can take off.

``--profile N`` also runs N calls of the view in this process under cProfile, on the same
database and model server, and prints the functions with the most cumulative and own time: the figures
to compare before and after a change, since call counts do not depend on how loaded the machine
is, and latencies do.

Needs PostgreSQL and Redis on 127.0.0.1 (``scripts/ensure-services``). Never run by the tests.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).parent / "gunicorn")
DATABASE = "promptregistry_bench_run"
PG = "postgres://postgres@127.0.0.1:5432/"
REDIS_URL = "redis://127.0.0.1:6379/12"
WORKERS = "2"
APP_PORT, MODEL_PORT = 8792, 8793  # bench/resolve.py uses 8790: the two can run side by side
PROMPT = "bench.prompt-0"
VARIABLES = {"customer_name": "Ada", "order_id": "A-1001"}
# What the seeded prompt renders for VARIABLES in English (bench/seed.py's templates), as the chat
# messages /run sends; checked against /run's answer before any measurement.
MESSAGES = [
    {"role": "system", "content": "You are a courteous support agent for an online shop."},
    {
        "role": "user",
        "content": "Order A-1001 was refunded. Refunds reach the card within 5 business days.\n\n"
        "Tell Ada the refund is on its way and when to expect it.\n\n"
        "Two short paragraphs. No emoji.",
    },
]
MODEL_BODY = {"model": "echo-1", "messages": MESSAGES, "temperature": 0.2}


def project_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": PG + DATABASE,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": "bench-only-key-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PROVIDER_ALLOW_LOOPBACK": "true",  # the model server is on loopback
        # The limiter stays on (its cost is part of the path) with a limit no round reaches.
        "API_RATE_LIMITS": "runs:execute=1000000/s",
        "PYTHONPATH": f"{ROOT / 'sdk' / 'src'}:{ROOT}",
    }


def sh(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(args)[:200]} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def seed(env: dict[str, str]) -> str:
    """The database, one released prompt and the ``local`` provider; returns an API key."""
    subprocess.run(
        [
            *("psql", "-qh", "127.0.0.1", "-U", "postgres"),
            *("-c", f"DROP DATABASE IF EXISTS {DATABASE}", "-c", f"CREATE DATABASE {DATABASE}"),
        ],
        check=True,
        capture_output=True,
    )
    sh(PYTHON, "manage.py", "migrate", "--no-input", env=env)
    sh(PYTHON, "bench/seed.py", "1", "1", env=env)
    base_url = f"http://127.0.0.1:{MODEL_PORT}/v1"
    sh(PYTHON, "manage.py", "provider", "add", "local", "--base-url", base_url, env=env)
    out = sh(PYTHON, "manage.py", "apikey", "create", "bench", "--scope", "runs:execute", env=env)
    return out.strip().splitlines()[-1]


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:  # a server left on the port by an earlier run, say
            raise SystemExit(f"{' '.join(args)} exited at start: is port {port} taken?")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return _running(process, args, port)
        except urllib.error.HTTPError:
            return _running(process, args, port)  # it answers (a 404 on /): up
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{' '.join(args)} did not start on port {port}")


def _running(process: subprocess.Popen, args: list[str], port: int) -> subprocess.Popen:
    """The server that answered is ours, not one an earlier run left on the port."""
    time.sleep(0.5)
    if process.poll() is not None:
        raise SystemExit(f"{' '.join(args)} exited at start: is port {port} taken?")
    return process


def post(port: int, path: str, body: dict, key: str = "") -> tuple[float, dict]:
    """One request on a new connection; (milliseconds until the whole answer was read, answer)."""
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, payload, headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status}: {data[:500]!r}")
    return elapsed, json.loads(data)


def get(port: int, path: str) -> float:
    """One GET on a new connection; milliseconds until the whole answer was read."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise SystemExit(f"{path}: HTTP {response.status}")
    return (time.perf_counter() - started) * 1000


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=int, default=0, help="calls to profile in-process")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads per worker: 1 is gunicorn's sync worker; more, its gthread worker "
        "(gunicorn.conf.py's production default is 4)",
    )
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, capture_output=True)
    env = project_env()
    print("Seeding one released prompt and the local provider…", flush=True)
    key = seed(env)
    model = start([PYTHON, "-m", "runs.fake_provider", "--port", str(MODEL_PORT)], env, MODEL_PORT)
    try:
        if args.profile:
            profile(env, args.profile)
        app = start(
            [
                *(GUNICORN, "--workers", WORKERS, "--threads", str(args.threads)),
                # gunicorn.conf.py names gthread, which stays gthread with one thread.
                *("--worker-class", "sync" if args.threads == 1 else "gthread"),
                *("--bind", f"127.0.0.1:{APP_PORT}", "--log-level", "warning"),
                "config.wsgi:application",
            ],
            env,
            APP_PORT,
        )
        try:
            measure(key, args.calls, args.rounds, args.threads)
        finally:
            app.terminate()
            app.wait(timeout=10)
    finally:
        model.terminate()
        model.wait(timeout=10)


def measure(key: str, calls: int, rounds: int, threads: int) -> None:
    run_path = f"/api/v1/prompts/{PROMPT}/run"
    run_body = {"environment": "production", "locale": "en", "variables": VARIABLES}
    _, direct = post(MODEL_PORT, "/v1/chat/completions", MODEL_BODY)
    _, through = post(APP_PORT, run_path, run_body, key)
    if direct["choices"][0]["message"]["content"] != through["output"]:
        raise SystemExit("The direct call and /run did not ask the model the same thing.")
    for _ in range(50):  # both workers: their connections, caches and clients
        post(APP_PORT, run_path, run_body, key)
        post(MODEL_PORT, "/v1/chat/completions", MODEL_BODY)
    print(
        f"\ngunicorn {WORKERS} {'sync workers' if threads == 1 else f'gthread workers of {threads} threads'}, "
        f"PostgreSQL + Redis; {calls} calls of each kind per "
        f"round, alternating, one after the other; load average {os.getloadavg()[0]:.2f}\n"
    )
    # What a service calling the model itself would use: the openai client, kept (its pool).
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{MODEL_PORT}/v1", api_key="bench", max_retries=0, timeout=30
    )
    results: list[dict[str, float]] = []
    for round_ in range(1, rounds + 1):
        direct_ms, run_ms, client_ms, floor_ms = [], [], [], []
        for _ in range(calls):
            direct_ms.append(post(MODEL_PORT, "/v1/chat/completions", MODEL_BODY)[0])
            run_ms.append(post(APP_PORT, run_path, run_body, key)[0])
            started = time.perf_counter()
            client.chat.completions.create(**MODEL_BODY)
            client_ms.append((time.perf_counter() - started) * 1000)
            floor_ms.append(get(APP_PORT, "/healthz"))
        result = {
            "direct_p50": percentile(direct_ms, 50),
            "direct_p99": percentile(direct_ms, 99),
            "run_p50": percentile(run_ms, 50),
            "run_p99": percentile(run_ms, 99),
            "client_p50": percentile(client_ms, 50),
            "floor_p50": percentile(floor_ms, 50),
        }
        results.append(result)
        show(f"round {round_}", result)
    median = {field: statistics.median(r[field] for r in results) for field in results[0]}
    print()
    show(f"median of {rounds}", median)
    added = [r["run_p50"] - r["direct_p50"] for r in results]
    print(
        f"\nadded by /run at p50: median {statistics.median(added):.2f} ms "
        f"(rounds: {', '.join(f'{a:.2f}' for a in added)}); target <= 2 ms"
    )
    beside = [r["run_p50"] - r["client_p50"] for r in results]
    print(
        f"for comparison, the model called with the openai client instead (what a service would "
        f"otherwise do): p50 {median['client_p50']:.2f} ms, so /run adds "
        f"{statistics.median(beside):.2f} ms at p50 to that (rounds: "
        f"{', '.join(f'{b:.2f}' for b in beside)})"
    )
    # The part no view can save: a request through the web process at all. /healthz is answered
    # before any middleware (config.middleware.ProbeMiddleware), on the same kind of new
    # connection, so the rest of the added time is the run path's own work and its model call.
    beyond = [r["run_p50"] - r["direct_p50"] - r["floor_p50"] for r in results]
    print(
        f"of which the web process itself: GET /healthz through gunicorn p50 "
        f"{median['floor_p50']:.2f} ms; the run path beyond that {statistics.median(beyond):.2f} ms"
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def show(label: str, r: dict[str, float]) -> None:
    print(
        f"{label:<12} direct p50 {r['direct_p50']:6.2f} ms p99 {r['direct_p99']:6.2f} ms   "
        f"/run p50 {r['run_p50']:6.2f} ms p99 {r['run_p99']:6.2f} ms   "
        f"added p50 {r['run_p50'] - r['direct_p50']:6.2f} ms p99 "
        f"{r['run_p99'] - r['direct_p99']:6.2f} ms",
        flush=True,
    )


def profile(env: dict[str, str], calls: int) -> None:
    """The view in a process of its own under cProfile (N calls after a warm-up)."""
    code = f"""
import cProfile, json, os, pstats, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.test import Client
from api.services import apikey_create
client = Client(HTTP_HOST="localhost")
body = json.dumps({{"environment": "production", "locale": "en", "variables": {VARIABLES!r}}})
key = apikey_create(name="profile", scopes=["runs:execute"])[1]
def call():
    response = client.post("/api/v1/prompts/{PROMPT}/run", body, content_type="application/json",
                           headers={{"Authorization": "Bearer " + key}})
    assert response.status_code == 200, response.content
for _ in range(20):
    call()
profiler = cProfile.Profile()
profiler.enable()
for _ in range({calls}):
    call()
profiler.disable()
stats = pstats.Stats(profiler)
print("{calls} calls of /run in-process, under cProfile: per call", round(
    stats.total_tt / {calls} * 1000, 2), "ms (profiled)")
stats.sort_stats("cumulative").print_stats(25)
stats.sort_stats("cumulative").print_stats(r"/(runs|api|releases|registry)/", 30)
stats.sort_stats("tottime").print_stats(20)
"""
    print(sh(PYTHON, "-c", code, env=env), flush=True)


if __name__ == "__main__":
    main()
