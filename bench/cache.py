"""What the response cache saves: a hit against a miss of ``POST /run`` on the local model server.

    .venv/bin/python bench/cache.py [--calls 300] [--rounds 5]

Built on bench/run.py (its database, seed, model server and gunicorn): the seeded prompt's
version gets an exact cache (``{"exact": {"ttl_seconds": 3600}}``; written into the throwaway
database past the immutability trigger, as no service would). Then, one call after the other,
alternating: the same ``/run`` with ``"cache": false`` (a miss: the model is called, nothing is
read or written) and without (a hit, once the first call stored the answer). Each round prints
p50 and p99 of both; at the end the medians of the rounds and the ratio miss / hit at p50, both
measured in the same run, against the same model server, so the machine's speed cancels out.

The local model server answers in about a millisecond, far faster than a real model: the ratio
here is the least a hit saves; against a hosted model a miss costs hundreds of milliseconds more.

Needs PostgreSQL and Redis on 127.0.0.1 (``scripts/ensure-services``). Never run by the tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as base  # bench/run.py

CACHE = '{"exact": {"ttl_seconds": 3600}}'
# Its own database, ports and Redis database: it can run beside bench/run.py.
base.DATABASE = "promptregistry_bench_cache"
base.APP_PORT, base.MODEL_PORT = 8796, 8797
base.REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/2")


def cache_enable(env: dict[str, str]) -> None:
    sql = (
        "ALTER TABLE registry_promptversion DISABLE TRIGGER registry_promptversion_immutable; "
        f"UPDATE registry_promptversion SET cache = '{CACHE}'; "
        "ALTER TABLE registry_promptversion ENABLE TRIGGER registry_promptversion_immutable;"
    )
    subprocess.run(
        ["psql", "-qh", "127.0.0.1", "-U", "postgres", "-d", base.DATABASE, "-c", sql],
        check=True,
        capture_output=True,
    )


def cache_forget() -> None:
    """An earlier run's entries (its database gave out the same version ids): deleted, and only
    those, so the first call is a miss."""
    number = base.REDIS_URL.rsplit("/", 1)[1]
    keys = subprocess.run(
        ["redis-cli", "-n", number, "--scan", "--pattern", "*response-cache:*"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for key in keys:
        subprocess.run(["redis-cli", "-n", number, "DEL", key], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    subprocess.run([str(base.ROOT / "scripts" / "ensure-services")], check=True)
    env = base.project_env()
    print("Seeding one released prompt with an exact cache, and the local provider…", flush=True)
    key = base.seed(env)
    cache_enable(env)
    cache_forget()
    model = base.start(
        [base.PYTHON, "-m", "runs.fake_provider", "--port", str(base.MODEL_PORT)],
        env,
        base.MODEL_PORT,
    )
    try:
        app = base.start(
            [
                # --threads 1: gunicorn.conf.py's threads would make gunicorn run gthread.
                *(base.GUNICORN, "--workers", base.WORKERS, "--worker-class", "sync"),
                *("--threads", "1"),
                *("--bind", f"127.0.0.1:{base.APP_PORT}", "--log-level", "warning"),
                "config.wsgi:application",
            ],
            env,
            base.APP_PORT,
        )
        try:
            measure(key, args.calls, args.rounds)
        finally:
            app.terminate()
            app.wait(timeout=10)
    finally:
        model.terminate()
        model.wait(timeout=10)


def measure(key: str, calls: int, rounds: int) -> None:
    path = f"/api/v1/prompts/{base.PROMPT}/run"
    hit_body = {"environment": "production", "locale": "en", "variables": base.VARIABLES}
    miss_body = {**hit_body, "cache": False}
    _, first = base.post(base.APP_PORT, path, hit_body, key)
    _, hit = base.post(base.APP_PORT, path, hit_body, key)
    if first["cache"] is not None or hit["cache"] != {"kind": "exact", "similarity": 1.0}:
        raise SystemExit(f"Expected a miss then an exact hit: {first['cache']}, {hit['cache']}")
    if hit["output"] != first["output"]:
        raise SystemExit("The hit did not answer what the model did.")
    for _ in range(50):  # both workers: connections, caches, clients
        base.post(base.APP_PORT, path, miss_body, key)
        base.post(base.APP_PORT, path, hit_body, key)
    print(
        f"\ngunicorn {base.WORKERS} sync workers, PostgreSQL + Redis; {calls} calls of each kind "
        f"per round, alternating; load average {os.getloadavg()[0]:.2f}\n"
    )
    results: list[dict[str, float]] = []
    for round_ in range(1, rounds + 1):
        miss_ms, hit_ms = [], []
        for _ in range(calls):
            elapsed, answer = base.post(base.APP_PORT, path, miss_body, key)
            assert answer["cache"] is None
            miss_ms.append(elapsed)
            elapsed, answer = base.post(base.APP_PORT, path, hit_body, key)
            assert answer["cache"] is not None
            hit_ms.append(elapsed)
        result = {
            "miss_p50": base.percentile(miss_ms, 50),
            "miss_p99": base.percentile(miss_ms, 99),
            "hit_p50": base.percentile(hit_ms, 50),
            "hit_p99": base.percentile(hit_ms, 99),
        }
        results.append(result)
        show(f"round {round_}", result)
    median = {name: statistics.median(r[name] for r in results) for name in results[0]}
    print()
    show(f"median of {rounds}", median)
    ratios = [r["miss_p50"] / r["hit_p50"] for r in results]
    print(
        f"\nmiss / hit at p50: median {statistics.median(ratios):.2f}x "
        f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}); saved per hit at p50: "
        f"{median['miss_p50'] - median['hit_p50']:.2f} ms"
    )
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def show(label: str, r: dict[str, float]) -> None:
    print(
        f"{label:<12} miss p50 {r['miss_p50']:6.2f} ms p99 {r['miss_p99']:6.2f} ms   "
        f"hit p50 {r['hit_p50']:6.2f} ms p99 {r['hit_p99']:6.2f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
