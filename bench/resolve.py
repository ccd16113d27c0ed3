"""Resolve throughput against a bare Django view, and small registry against large (STYLE R17).

    .venv/bin/python bench/resolve.py [--seconds 10] [--large 10000] [--rounds 3] [--reuse]
                                      [--bare-length]

1. Builds two databases on the local PostgreSQL: 10 prompts, and ``--large`` prompts of 10
   versions each, every prompt released in production (bulk inserts: this is fixture data).
2. Starts, one after the other, under the same gunicorn settings (2 sync workers): the project
   on each database, and ``bench/bare_app.py`` returning a constant JSON document of the same size
   as a resolve answer.
3. Drives each with wrk (8 connections, loopback) for a fixed time after a warm-up, in
   interleaved rounds (bare, small, large, bare, small, large, ...), and prints each round, then
   each target's median round and best round, and the ratios of both. Targets, on the medians:
   resolve >= 0.8 of the bare view; the large registry >= 0.9 of the small one. Absolute numbers
   are noisy (the machine's load average is printed before and after); ratios hold better.
   ``--reuse`` keeps databases a previous run seeded (a new key is made in each).
   ``--bare-length``: the bare view says its ``Content-Length``, as the resolve answer does (a
   Django view with no middleware sends none, so gunicorn sends it chunked: one system call more
   per request). The targets are set against the bare view as it is; this is the stricter
   comparison.

``bench/profile_resolve.py`` shows where a request's time goes, in a form that does not depend on
the machine's load (function calls per request).

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
SERVER_LOG = Path("/tmp/bench-resolve-server.log")  # the server under test's stderr


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


def seed(database: str, prompts: int, versions: int, *, reuse: bool = False) -> str:
    """Creates the database and its registry (unless ``reuse`` and it exists); returns a new API
    key."""
    env = project_env(database)
    if reuse and _exists(database):
        return _new_key(env)
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
    sh(PYTHON, "manage.py", "migrate", "--no-input", env=env)
    sh(PYTHON, "bench/seed.py", str(prompts), str(versions), env=env)
    return _new_key(env)


def _exists(database: str) -> bool:
    found = subprocess.run(
        [
            "psql",
            "-qtAh",
            "127.0.0.1",
            "-U",
            "postgres",
            "-c",
            f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return found.stdout.strip() == "1"


def _new_key(env: dict) -> str:
    return (
        sh(PYTHON, "manage.py", "apikey", "create", "bench", "--scope", "prompts:read", env=env)
        .strip()
        .splitlines()[-1]
    )


def serve(app: str, port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            # gunicorn.conf.py (read from the working directory) holds the production settings;
            # these override three of them for every target alike. Sync workers: with its
            # ``threads = 4`` gunicorn would run gthread even under ``--worker-class sync``. No
            # recycling: a worker replaced every couple of thousand requests measures its start,
            # not the resolve path (docs/operations.md says what a start costs).
            GUNICORN,
            *("--workers", WORKERS, "--worker-class", "sync", "--threads", "1"),
            *("--max-requests", "0"),
            *("--bind", f"127.0.0.1:{port}", "--log-level", "warning"),
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        # A file, not a pipe nobody reads: a full pipe would block the workers' logging.
        stderr=SERVER_LOG.open("w"),
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


def fetch(url: str, key: str = "", timeout: float = 5) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def ensure_wrk() -> None:
    """wrk from Debian's packages when it is missing (running as root), else a clear stop."""
    if shutil.which("wrk") is None:
        if os.geteuid() != 0:
            raise SystemExit("wrk is missing: apt-get install wrk")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


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


def measure(
    name: str, app: str, env: dict, url: str, seconds: int, key: str = "", port: int = 8790
) -> dict:
    process = serve(app, port, env)
    try:
        # Warm both workers' caches and the connections. A worker's first resolve loads the whole
        # environment (seconds for the large registry on a busy machine), hence the long timeout.
        for _ in range(50):
            fetch(url, key, timeout=120)
        result = wrk(url, seconds, key)
    except (OSError, SystemExit):
        print(f"{name}: failed; the server's log ({SERVER_LOG}) ends with:", file=sys.stderr)
        print(SERVER_LOG.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        stop(process)
    _print(name, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--reuse", action="store_true", help="keep databases already seeded")
    parser.add_argument(
        "--bare-length",
        action="store_true",
        help="the bare view says its Content-Length too (by default it sends its answer chunked)",
    )
    args = parser.parse_args()
    ensure_wrk()
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, capture_output=True)

    print(f"Seeding 10 prompts and {args.large} prompts x 10 versions…", flush=True)
    small_key = seed("promptregistry_bench_small", 10, 10, reuse=args.reuse)
    large_key = seed("promptregistry_bench_large", args.large, 10, reuse=args.reuse)
    path = (
        "/api/v1/prompts/bench.prompt-7/resolve?environment=production&subject=user-42&locale=fr-CA"
    )
    answer = fetch_once(project_env("promptregistry_bench_small"), path, small_key, args.port)
    base = f"http://127.0.0.1:{args.port}"

    print(
        f"\ngunicorn, {WORKERS} sync workers; wrk 2 threads, 8 connections, {args.seconds} s each; "
        f"answer {len(answer)} bytes; load average {_load()}"
        + ("; the bare view says its Content-Length" if args.bare_length else "")
        + "\n"
    )
    bare_env = {
        **os.environ,
        "BARE_BODY_BYTES": str(len(answer)),
        "PYTHONPATH": str(ROOT / "bench"),
        "DJANGO_SETTINGS_MODULE": "bare_settings",
        **({"BARE_CONTENT_LENGTH": "1"} if args.bare_length else {}),
    }
    targets = [
        ("bare Django view", "bare_app:application", bare_env, base + "/bare", ""),
        (
            "resolve, 10 prompts",
            "config.wsgi:application",
            project_env("promptregistry_bench_small"),
            base + path,
            small_key,
        ),
        (
            f"resolve, {args.large} prompts",
            "config.wsgi:application",
            project_env("promptregistry_bench_large"),
            base + path,
            large_key,
        ),
    ]
    # Rounds interleave the targets so a slow spell of the machine hits all of them alike; each
    # target's median round is the figure (a best round flatters: it is the one the machine
    # spared), the best round is printed beside it.
    results: dict[str, list[dict]] = {name: [] for name, *_ in targets}
    for round_ in range(1, args.rounds + 1):
        print(f"round {round_}")
        for name, app, env, url, key in targets:
            results[name].append(measure(name, app, env, url, args.seconds, key, args.port))
    names = [name for name, *_ in targets]
    for label, pick in (("median", _median_round), ("best", _best_round)):
        chosen = {name: pick(results[name]) for name in names}
        print(f"\n{label} of {args.rounds} rounds:")
        for name in names:
            _print(name, chosen[name])
        bare, small, large = (chosen[name]["rps"] for name in names)
        print(f"resolve / bare view:          {small / bare:.2f}   (target >= 0.80 on the medians)")
        print(f"{args.large} prompts / 10 prompts: {large / small:.2f}   (target >= 0.90)")
    # Each round's own ratios: neighbours in time, so a slow spell of the machine cancels out.
    rounds = [{name: results[name][i]["rps"] for name in names} for i in range(args.rounds)]
    print(f"\nmedian of the {args.rounds} rounds' own ratios:")
    bare_name, small_name, large_name = names
    print(
        "resolve / bare view:          "
        f"{statistics.median(r[small_name] / r[bare_name] for r in rounds):.2f}"
    )
    print(
        f"{args.large} prompts / 10 prompts: "
        f"{statistics.median(r[large_name] / r[small_name] for r in rounds):.2f}"
    )
    print(f"\nload average at the end {_load()}")


def _print(name: str, result: dict) -> None:
    print(
        f"{name:<28} {result['rps']:>9.0f} req/s   p50 {result['p50']:6.2f} ms   "
        f"p99 {result['p99']:6.2f} ms",
        flush=True,
    )


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _median_round(runs: list[dict]) -> dict:
    """Each figure's median over the rounds (req/s, p50 and p99 each on its own)."""
    return {field: statistics.median(run[field] for run in runs) for field in ("rps", "p50", "p99")}


def _best_round(runs: list[dict]) -> dict:
    """The round with the most requests per second, whole."""
    return max(runs, key=lambda run: run["rps"])


def fetch_once(env: dict, path: str, key: str, port: int) -> bytes:
    process = serve("config.wsgi:application", port, env)
    try:
        return fetch(f"http://127.0.0.1:{port}" + path, key, timeout=120)
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
