"""Resolve throughput against a bare Django view, and small registry against large (STYLE R17).

    .venv/bin/python bench/resolve.py [--seconds 10] [--large 10000] [--rounds 3]

1. Builds two databases on the local PostgreSQL: 10 prompts, and ``--large`` prompts of 10
   versions each, every prompt released in production (bulk inserts: this is fixture data).
2. Starts, one after the other, under the same gunicorn settings (2 sync workers): the project
   on each database, and ``bench/bare_app.py`` returning a constant JSON document of the same size
   as a resolve answer.
3. Drives each with wrk (8 connections, loopback) for a fixed time after a warm-up, and prints
   requests per second, p50 and p99, and the ratios. Targets: resolve >= 0.7 of the bare view;
   the large registry >= 0.9 of the small one. Absolute numbers are noisy; ratios hold.

Needs PostgreSQL and Redis on 127.0.0.1 (``scripts/ensure-services``) and wrk (Debian's package;
installed here when missing and running as root). Never run by the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).parent / "gunicorn")
PG = "postgres://postgres@127.0.0.1:5432/"
REDIS_URL = "redis://127.0.0.1:6379/13"
WORKERS = "2"


def sh(*args: str, env: dict | None = None, quiet: bool = True) -> str:
    out = subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout


def project_env(database: str) -> dict:
    return {
        **os.environ,
        "DATABASE_URL": PG + database,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": "bench-only-key-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        # One key drives every request: the limiter stays on (its cost is part of the path
        # measured) with a limit no round of wrk reaches.
        "API_RATE_LIMITS": "prompts:read=1000000/s",
    }


def seed(database: str, prompts: int, versions: int) -> str:
    """Creates the database and its registry; returns an API key."""
    subprocess.run(
        [
            "psql",
            "-qh",
            "127.0.0.1",
            "-U",
            "postgres",
            "-c",
            f"DROP DATABASE IF EXISTS {database}",
            "-c",
            f"CREATE DATABASE {database}",
        ],
        check=True,
        capture_output=True,
    )
    env = project_env(database)
    sh(PYTHON, "manage.py", "migrate", "--no-input", env=env)
    sh(PYTHON, "bench/seed.py", str(prompts), str(versions), env=env)
    return (
        sh(PYTHON, "manage.py", "apikey", "create", "bench", "--scope", "prompts:read", env=env)
        .strip()
        .splitlines()[-1]
    )


def serve(app: str, port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            GUNICORN,
            "--workers",
            WORKERS,
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # it answers (404 on /): up
        except OSError:
            time.sleep(0.2)
    return process


def fetch(url: str, key: str = "") -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def wrk(url: str, seconds: int, key: str = "") -> dict[str, float]:
    header = ["-H", f"Authorization: Bearer {key}"] if key else []
    out = sh("wrk", "-t", "2", "-c", "8", "-d", f"{seconds}s", "--latency", *header, url)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")
    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99")}


def measure(name: str, app: str, env: dict, url: str, seconds: int, key: str = "") -> dict:
    process = serve(app, 8790, env)
    try:
        for _ in range(50):  # warm both workers' caches and the connections
            fetch(url, key)
        result = wrk(url, seconds, key)
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(
        f"{name:<28} {result['rps']:>9.0f} req/s   p50 {result['p50']:6.2f} ms   p99 {result['p99']:6.2f} ms",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        if os.geteuid() != 0:
            raise SystemExit("wrk is missing: apt-get install wrk")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, capture_output=True)

    print(f"Seeding 10 prompts and {args.large} prompts x 10 versions…", flush=True)
    small_key = seed("promptregistry_bench_small", 10, 10)
    large_key = seed("promptregistry_bench_large", args.large, 10)
    path = (
        "/api/v1/prompts/bench.prompt-7/resolve?environment=production&subject=user-42&locale=fr-CA"
    )
    answer = fetch_once(project_env("promptregistry_bench_small"), path, small_key)

    print(
        f"\ngunicorn, {WORKERS} sync workers; wrk 2 threads, 8 connections, {args.seconds} s each; "
        f"answer {len(answer)} bytes\n"
    )
    bare_env = {
        **os.environ,
        "BARE_BODY_BYTES": str(len(answer)),
        "PYTHONPATH": str(ROOT / "bench"),
    }
    targets = [
        ("bare Django view", "bare_app:application", bare_env, "http://127.0.0.1:8790/bare", ""),
        (
            "resolve, 10 prompts",
            "config.wsgi:application",
            project_env("promptregistry_bench_small"),
            "http://127.0.0.1:8790" + path,
            small_key,
        ),
        (
            f"resolve, {args.large} prompts",
            "config.wsgi:application",
            project_env("promptregistry_bench_large"),
            "http://127.0.0.1:8790" + path,
            large_key,
        ),
    ]
    # Rounds interleave the targets so a slow spell of the machine hits all of them alike; each
    # target's median round is reported (a best round flatters: it is the one the machine spared).
    results: dict[str, list[dict]] = {name: [] for name, *_ in targets}
    for round_ in range(1, args.rounds + 1):
        print(f"round {round_}")
        for name, app, env, url, key in targets:
            results[name].append(measure(name, app, env, url, args.seconds, key))
    median = {name: _median_round(runs) for name, runs in results.items()}
    bare, small, large = (median[name] for name, *_ in targets)
    print(f"\nmedian of {args.rounds} rounds:")
    for name, result in median.items():
        print(
            f"{name:<28} {result['rps']:>9.0f} req/s   p50 {result['p50']:6.2f} ms   "
            f"p99 {result['p99']:6.2f} ms"
        )
    print()
    print(f"resolve / bare view:          {small['rps'] / bare['rps']:.2f}   (target >= 0.70)")
    print(
        f"{args.large} prompts / 10 prompts: {large['rps'] / small['rps']:.2f}   (target >= 0.90)"
    )


def _median_round(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (req/s, p50 and p99 each on its own)."""
    return {field: statistics.median(run[field] for run in runs) for field in ("rps", "p50", "p99")}


def fetch_once(env: dict, path: str, key: str) -> bytes:
    process = serve("config.wsgi:application", 8790, env)
    try:
        return fetch("http://127.0.0.1:8790" + path, key)
    finally:
        process.terminate()
        process.wait(timeout=10)


if __name__ == "__main__":
    main()
