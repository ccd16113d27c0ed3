"""The SDK's local ``get`` and ``render`` against a server ``render`` round trip (STYLE R17).

    .venv/bin/python bench/sdk.py [--rounds 7] [--iterations 20000] [--calls 300]

1. Builds a database on the local PostgreSQL with 10 prompts of 10 versions, each released in
   production (bench/seed.py, through bench/resolve.py's helpers), and a ``prompts:read`` key.
2. Starts the project under gunicorn (the same settings as bench/resolve.py: 2 sync workers,
   loopback) and a ``promptregistry.Client`` on it, which fetches the production bundle once.
3. Times, in rounds (the median and the best round are printed, per call):
   - ``get`` alone: the local resolution of one prompt for a subject and a locale;
   - ``get`` + ``render``: the chat messages, rendered locally;
   - ``render`` alone: the same messages from a ``Prompt`` already resolved (variables checked,
     four sections rendered in the sandbox under the default budget and deadline);
   - ``report``: queueing one outcome (the caller's share; sending is the reporter thread's);
   - the baseline: ``POST /api/v1/prompts/{key}/render`` over loopback with the same subject,
     locale and variables, one request after the other (min, median and p99 of every call).
4. Prints the ratios against the server round trip, and whether a local ``get`` stays under
   10 µs on this machine (the issue's target). Absolute numbers vary with the machine's load;
   the ratios, measured in one run, hold. Nothing here passes or fails.

Needs PostgreSQL and Redis on 127.0.0.1 (``scripts/ensure-services``). Never run by the tests.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable

import httpx
from promptregistry import Client, Prompt, Reporter
from resolve import ROOT, WORKERS, fetch, project_env, seed, serve

DATABASE = "promptregistry_bench_sdk"
PORT = 8790
BASE_URL = f"http://127.0.0.1:{PORT}"
KEY = "bench.prompt-7"
SUBJECT, LOCALE = "user-42", "fr-CA"
VARIABLES = {"customer_name": "Zoé", "order_id": "A-17"}
TARGET_GET_US = 10.0


def local_rounds(call: Callable[[], object], *, rounds: int, iterations: int) -> list[float]:
    """Microseconds per call of each round, after a warm-up (templates compiled, caches hot)."""
    for _ in range(1000):
        call()
    timer = timeit.Timer(call)
    return [seconds / iterations * 1e6 for seconds in timer.repeat(rounds, iterations)]


def server_calls(http: httpx.Client, api_key: str, *, rounds: int, calls: int) -> list[float]:
    """Microseconds of every ``render`` round trip, after a warm-up of both workers."""
    url = f"{BASE_URL}/api/v1/prompts/{KEY}/render"
    body = {
        "environment": "production",
        "subject": SUBJECT,
        "locale": LOCALE,
        "variables": VARIABLES,
    }
    headers = {"Authorization": f"Bearer {api_key}"}

    def once() -> None:
        response = http.post(url, json=body, headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"render answered {response.status_code}: {response.text[:300]}")

    for _ in range(50):
        once()
    timings: list[float] = []
    for _ in range(rounds):
        for _ in range(calls):
            started = time.perf_counter()
            once()
            timings.append((time.perf_counter() - started) * 1e6)
    return timings


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def line(name: str, median: float, best: float, extra: str = "") -> None:
    print(f"{name:<34} median {median:10.2f} µs   best {best:10.2f} µs{extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=20_000, help="local calls per round")
    parser.add_argument("--calls", type=int, default=300, help="server calls per round")
    args = parser.parse_args()
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, capture_output=True)

    print("Seeding 10 prompts x 10 versions…", flush=True)
    api_key = seed(DATABASE, 10, 10)
    server = serve("config.wsgi:application", PORT, project_env(DATABASE))
    try:
        fetch(f"{BASE_URL}/api/v1/environments/production/bundle", api_key)  # up and seeded
        # trust_env=False: no proxy from the environment may take loopback traffic elsewhere.
        http = httpx.Client(timeout=10, trust_env=False)
        registry = Client(
            BASE_URL,
            api_key=api_key,
            environment="production",
            stream=False,
            report=False,
            refresh_interval=3600,
            http=http,
        )
        if registry.status.source != "live":
            raise SystemExit(f"The client has no live bundle: {registry.status}")
        prompt = registry.get(KEY, subject=SUBJECT, locale=LOCALE)
        print(
            f"\n{KEY} v{prompt.version} ({prompt.variant}, {prompt.locale}); "
            f"gunicorn, {WORKERS} sync workers, loopback; "
            f"{args.rounds} rounds of {args.iterations} local calls and {args.calls} server calls; "
            f"Python {sys.version.split()[0]}\n",
            flush=True,
        )

        def get() -> object:
            return registry.get(KEY, subject=SUBJECT, locale=LOCALE)

        def get_render() -> object:
            return registry.get(KEY, subject=SUBJECT, locale=LOCALE).render(**VARIABLES)

        def render() -> object:
            return prompt.render(**VARIABLES)

        # The outcome queue alone: its send discards, and it is big enough never to drop.
        reporter = Reporter(lambda batch: 0, capacity=10_000_000)
        reported = Prompt(
            prompt.resolution,
            source=prompt.source,
            reporter=reporter,
            environment=prompt.environment,
            subject=SUBJECT,
        )

        def report() -> object:
            return reported.report(latency_ms=812.0, input_tokens=412, output_tokens=96)

        rounds = {
            "get": local_rounds(get, rounds=args.rounds, iterations=args.iterations),
            "get + render": local_rounds(
                get_render, rounds=args.rounds, iterations=args.iterations // 4
            ),
            "render": local_rounds(render, rounds=args.rounds, iterations=args.iterations // 4),
            "report (queue only)": local_rounds(
                report, rounds=args.rounds, iterations=args.iterations // 4
            ),
        }
        reporter.close(10)
        remote = server_calls(http, api_key, rounds=args.rounds, calls=args.calls)
        registry.close()
        http.close()
    finally:
        server.terminate()
        server.wait(timeout=10)

    for name, values in rounds.items():
        line(name, statistics.median(values), min(values))
    server_median = statistics.median(remote)
    line(
        "server POST /render (loopback)",
        server_median,
        min(remote),
        f"   p99 {p99(remote):10.2f} µs",
    )
    get_median = statistics.median(rounds["get"])
    render_median = statistics.median(rounds["get + render"])
    print()
    print(f"server render / local get:           {server_median / get_median:10.0f}x")
    print(f"server render / local get + render:  {server_median / render_median:10.0f}x")
    verdict = "yes" if get_median < TARGET_GET_US else "NO"
    print(
        f"local get under {TARGET_GET_US:.0f} µs on this machine: {verdict} "
        f"(median {get_median:.2f} µs)"
    )


if __name__ == "__main__":
    main()
