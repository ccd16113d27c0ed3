"""Scaling out: three web nodes and two workers on one PostgreSQL and one Redis (issue 16, item 6).

    .venv/bin/python bench/nodes.py [--changes 50] [--sizes 10,1000,10000] [--seconds 10] [--reuse]

Prints three figures:

1. **A release change on every node.** Three web nodes (gunicorn, one process each, so a node
   is one release cache) and two Celery workers, on a registry of 10 prompts. ``--changes``
   release changes are made one at a time through node 1's API (a shadow started, then stopped);
   after each, a thread per node asks that node's resolve until it answers the new revision. The
   delay from the change's API answer to each node's first new answer: p50, p99 and max over
   every node and change. Goal: under 100 ms (the anchors' SDK caches refresh every 15–300 s).
2. **A web process's release cache**: for registries of ``--sizes`` prompts of 10 versions in 3
   locales, every prompt released in production, the RSS of a web process after it loaded the
   production environment (one resolve) less its RSS before, in MB and KB per prompt.
3. **Throughput, one node against three**: resolve driven by wrk (8 connections, loopback) for
   ``--seconds`` against one node, then against the three at once (a wrk each); requests per
   second, and the ratio. All of it runs on this one machine, so three nodes share its cores:
   the figure says what more nodes cost and give here, not on three machines.

Needs PostgreSQL and Redis on 127.0.0.1 and wrk (bench/resolve.py installs it). Never run by the
tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from resolve import (
    GUNICORN,
    PYTHON,
    ROOT,
    _exists,
    _new_key,
    ensure_wrk,
    fetch,
    project_env,
    seed,
    sh,
    stop,
    wrk,
)

NODE_PORTS = (8821, 8822, 8823)
PROMPT = "bench.prompt-0"
ENVIRONMENT = "production"
LOG = Path("/tmp/bench-nodes.log")
POLL_SECONDS = 0.002  # between a node's resolves while waiting for a change
WAIT_SECONDS = 10.0  # a change not seen on a node after this is reported, not waited for


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def node(port: int, env: dict) -> subprocess.Popen:
    """One web node: gunicorn with one worker process (four threads), so it has one cache."""
    process = subprocess.Popen(
        [
            GUNICORN,
            "config.wsgi:application",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=LOG.open("a"),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                raise SystemExit(f"node on {port} did not start; see {LOG}") from None
            time.sleep(0.1)


def worker_pid(node_process: subprocess.Popen) -> int:
    """The gunicorn worker (the master's one child), where the release cache lives."""
    for _ in range(100):
        children = Path(f"/proc/{node_process.pid}/task/{node_process.pid}/children").read_text()
        if children.split():
            return int(children.split()[0])
        time.sleep(0.05)
    raise SystemExit("no gunicorn worker")


def celery_worker(env: dict, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *(PYTHON, "-m", "celery", "--app", "config", "worker", "--hostname", f"{name}@%h"),
            *(
                "--concurrency",
                "1",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=LOG.open("a"),
    )


def revision_at(port: int, key: str) -> int:
    url = (
        f"http://127.0.0.1:{port}/api/v1/prompts/{PROMPT}/resolve?environment={ENVIRONMENT}"
        "&subject=bench"
    )
    return json.loads(fetch(url, key))["revision"]


def change(port: int, manager_key: str, verb: str) -> tuple[int, float]:
    """One release change through a node's API: its revision and when its answer came."""
    body = {"versions": [1], "sample_percent": 10} if verb == "shadow" else {}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/releases/{ENVIRONMENT}/{PROMPT}/{verb}",
        data=json.dumps({**body, "reason": "bench"}).encode(),
        headers={"Authorization": f"Bearer {manager_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    return answer["revision"], time.monotonic()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def propagation(changes: int) -> None:
    database = "bench_nodes"
    env = project_env(database)
    reader = seed(database, 10, 2)
    manager = (
        sh(PYTHON, "manage.py", "apikey", "create", "bench-release-bot", "--scope",
           "releases:write", env=env)
        .strip()
        .splitlines()[-1]
    )  # fmt: skip
    nodes = [node(port, env) for port in NODE_PORTS]
    workers = [celery_worker(env, f"bench-{i}") for i in (1, 2)]
    try:
        for port in NODE_PORTS:  # each node's cache loaded and following
            revision_at(port, reader)
        delays: list[float] = []
        unseen = 0
        verbs = ("shadow", "shadow/stop")
        for number in range(changes):
            revision, answered = change(NODE_PORTS[0], manager, verbs[number % 2])
            seen: dict[int, float] = {}

            def watch(port: int, revision: int = revision, seen: dict = seen) -> None:
                deadline = time.monotonic() + WAIT_SECONDS
                while time.monotonic() < deadline:
                    if revision_at(port, reader) >= revision:
                        seen[port] = time.monotonic()
                        return
                    time.sleep(POLL_SECONDS)

            threads = [threading.Thread(target=watch, args=(port,)) for port in NODE_PORTS]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            unseen += len(NODE_PORTS) - len(seen)
            delays.extend((at - answered) * 1000 for at in seen.values())
        print(
            f"1. a release change on every node ({changes} changes x {len(NODE_PORTS)} nodes, "
            f"from the change's API answer): p50 {statistics.median(delays):.1f} ms, "
            f"p99 {percentile(delays, 99):.1f} ms, max {max(delays):.1f} ms"
            + (f"; not seen within {WAIT_SECONDS:.0f} s: {unseen}" if unseen else ""),
            flush=True,
        )
    finally:
        for process in (*nodes, *workers):
            stop(process)


def cache_memory(sizes: list[int], reuse: bool) -> None:
    print("2. a web process's release cache (10 versions a prompt, 3 locales):", flush=True)
    for size in sizes:
        database = f"bench_nodes_{size}"
        env = project_env(database)
        if reuse and _exists(database):
            key = _new_key(env)
        else:
            key = seed(database, 0, 0)  # migrated and empty: then three locales, not two
            sh(PYTHON, "bench/seed.py", str(size), "10", "3", env=env)
        process = node(NODE_PORTS[0], env)
        try:
            pid = worker_pid(process)
            # The process as it serves, before its first resolve loads the environment.
            for _ in range(20):
                fetch(f"http://127.0.0.1:{NODE_PORTS[0]}/healthz")
            before = rss_bytes(pid)
            url = (
                f"http://127.0.0.1:{NODE_PORTS[0]}/api/v1/prompts/{PROMPT}/resolve"
                f"?environment={ENVIRONMENT}"
            )
            fetch(url, key, timeout=300)
            after = rss_bytes(pid)
        finally:
            stop(process)
        grown = (after - before) / 2**20
        print(
            f"   {size:>6,} prompts: {grown:7.1f} MB ({(after - before) / 1024 / size:6.1f} KB "
            f"a prompt; RSS {after / 2**20:.0f} MB)",
            flush=True,
        )


def throughput(seconds: int) -> None:
    database = "bench_nodes"
    env = project_env(database)
    key = seed(database, 10, 2, reuse=True)
    nodes = [node(port, env) for port in NODE_PORTS]
    try:
        urls = [
            f"http://127.0.0.1:{port}/api/v1/prompts/{PROMPT}/resolve?environment={ENVIRONMENT}"
            "&subject=bench"
            for port in NODE_PORTS
        ]
        for url in urls:
            for _ in range(50):
                fetch(url, key)
        one = wrk(urls[0], seconds, key)["rps"]
        results: list[float] = []

        def drive(url: str) -> None:
            results.append(wrk(url, seconds, key)["rps"])

        threads = [threading.Thread(target=drive, args=(url,)) for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        three = sum(results)
        print(
            f"3. resolve throughput: one node {one:,.0f} req/s; three nodes {three:,.0f} req/s "
            f"({three / one:.2f}x) on this machine's {os.cpu_count()} cores",
            flush=True,
        )
    finally:
        for process in nodes:
            stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--reuse", action="store_true", help="keep the databases a run seeded")
    args = parser.parse_args()
    ensure_wrk()
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, capture_output=True)
    LOG.write_text("")
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    propagation(args.changes)
    cache_memory([int(s) for s in args.sizes.split(",")], args.reuse)
    throughput(args.seconds)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
