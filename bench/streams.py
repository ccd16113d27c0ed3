"""Release streams at scale: N followers of one environment on one ASGI process (issue 21).

    .venv/bin/python bench/streams.py [--counts 100,1000,10000] [--rounds 3] [--changes 20]
                                      [--workers 1] [--reuse]

1. Builds a database on the local PostgreSQL (10 prompts released in production, bulk inserts
   as bench/resolve.py does) and two API keys: a service's (prompts:read) and release
   automation's (releases:write).
2. Starts the two processes a deployment runs: the stream process (uvicorn, ``config.asgi``, one
   worker, or ``--workers N``: memory and CPU are then those of all of them) and the API (gunicorn, 2 sync workers) that takes the release changes; both on
   PostgreSQL and Redis (db 14), ports 8800 and 8801.
3. For each N, in rounds (a fresh stream process each): opens N streams of production from light
   asyncio clients (raw sockets, no SDK; in several processes beside this one, so reading 10,000
   sockets is not one core's work), then prints
   - connections held: streams that said hello and were still open at the end;
   - memory per stream: the stream process's RSS with the N streams open, less its RSS with one,
     over N;
   - idle CPU: the stream process's CPU time over 16 s with nothing changing (one keep-alive
     round of every stream falls in it), as a share of one core;
   - delivery: 20 release changes through the API (a shadow started, then stopped, on
     ``bench.prompt-0``), one at a time, each once every client had the previous; for each client
     and change, the delay from the change's API answer to the event's arrival (p50, p99, max).
     The event is published on commit, before the answer leaves, so a delay can be negative: the
     arrival came before the answer did.
4. Prints each round, then the median of the rounds per N. Targets on this 2-core machine:
   10,000 streams held; p99 < 1 s at 10,000 and < 100 ms at 1,000; < 50 KB per idle stream.

The open-file limit is raised here to the hard limit (``resource.setrlimit``), for this process,
its clients and the servers it starts: the stream process needs one descriptor per stream, plus
a few dozen. A deployment sets ``LimitNOFILE`` (systemd), ``ulimit -n`` or the container's
``nofile`` to more than ``RELEASE_STREAM_MAX_PER_PROCESS``.

Needs PostgreSQL and Redis on 127.0.0.1 (``scripts/ensure-services``). Never run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import select
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).parent / "gunicorn")
PG = "postgres://postgres@127.0.0.1:5432/"
DATABASE = "promptregistry_bench_streams"
REDIS_URL = "redis://127.0.0.1:6379/14"
STREAM_PORT, API_PORT = 8800, 8801
ENVIRONMENT, PROMPT = "production", "bench.prompt-0"
STREAM_LOG = Path("/tmp/bench-streams-server.log")
API_LOG = Path("/tmp/bench-streams-api.log")
CONNECTIONS_PER_CLIENT = 2500  # light clients per client process
IDLE_SECONDS = 16.0  # more than one keep-alive period (15 s)
WAIT_SECONDS = 30.0  # the longest wait for any one step: past it the round fails, never hangs
START_SECONDS = 120.0  # a server's start (imports and all) on a busy machine
RELEASE_EVENT = re.compile(rb'data: \{"prompt":"([^"]+)","revision":(\d+)\}')


# --- set-up ------------------------------------------------------------------------------------


def project_env() -> dict:
    return {
        **os.environ,
        "DATABASE_URL": PG + DATABASE,
        "REDIS_URL": REDIS_URL,
        "SECRET_KEY": "bench-only-key-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        # One key holds every stream and one makes every change: the limits stay on, above what
        # the bench reaches.
        "API_RATE_LIMITS": "prompts:read=1000000/s,releases:write=1000/s",
        "RELEASE_STREAM_MAX_PER_PROCESS": "20000",
        "RELEASE_STREAM_MAX_PER_KEY": "20000",
        # No stream ends during a round.
        "RELEASE_STREAM_MAX_SECONDS": "3600",
        "PROVIDER_ALLOW_LOOPBACK": "true",  # the seed binds the provider "local"
    }


def sh(*args: str, env: dict | None = None) -> str:
    return subprocess.run(
        args, cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout


def seed(*, reuse: bool) -> tuple[str, str]:
    """A fresh database with 10 prompts released in production (or, with ``reuse``, the one a
    previous run made); two new keys."""
    env = project_env()
    if not reuse:
        make_database(env)

    def key(name: str, scope: str) -> str:
        out = sh(PYTHON, "manage.py", "apikey", "create", name, "--scope", scope, env=env)
        return out.strip().splitlines()[-1]

    return key("bench-sdk", "prompts:read"), key("bench-release-bot", "releases:write")


def make_database(env: dict) -> None:
    sh(
        "psql",
        "-qh",
        "127.0.0.1",
        "-U",
        "postgres",
        "-c",
        f"DROP DATABASE IF EXISTS {DATABASE}",
        "-c",
        f"CREATE DATABASE {DATABASE}",
    )
    sh(PYTHON, "manage.py", "migrate", "--no-input", env=env)
    sh(PYTHON, "bench/seed.py", "10", "2", env=env)
    url = "http://127.0.0.1:9/v1"  # never called: the seed's bindings name the provider "local"
    sh(PYTHON, "manage.py", "provider", "add", "local", "--base-url", url, env=env)


def start(args: list[str], log: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=project_env(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),  # a file, not a pipe nobody reads
    )
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except urllib.error.HTTPError:
            return process  # it answers
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    stop(process)
    raise SystemExit(f"the server on port {port} did not start; see {log}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


def stream_server(workers: int = 1) -> subprocess.Popen:
    return start(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(STREAM_PORT),
            "--log-level",
            "warning",
            "--no-access-log",
            "--timeout-graceful-shutdown",
            "2",
            "--backlog",
            "4096",
            *(["--workers", str(workers)] if workers > 1 else []),
        ],
        STREAM_LOG,
        STREAM_PORT,
    )


def api_server() -> subprocess.Popen:
    return start(
        [GUNICORN, "--workers", "2", "--bind", f"127.0.0.1:{API_PORT}", "config.wsgi:application"],
        API_LOG,
        API_PORT,
    )


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- the stream process, seen from outside ------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants: with ``--workers``, uvicorn's supervisor and its workers."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            queue.extend(int(child) for child in children)
    return found


def rss_bytes(pid: int) -> int:
    """The RSS of ``pid`` and its descendants (the stream workers, with ``--workers``)."""
    total = 0
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pid: int) -> float:
    """The CPU time of ``pid`` and its live descendants."""
    total = 0
    for member in process_tree(pid):
        fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def open_sockets(pid: int) -> int:
    return sum(
        1
        for member in process_tree(pid)
        for fd in Path(f"/proc/{member}/fd").iterdir()
        if os.readlink(fd).startswith("socket:")
    )


# --- release changes ----------------------------------------------------------------------------


SHADOW_START = ("shadow", {"versions": [1], "sample_percent": 10})
SHADOW_STOP = ("shadow/stop", {})
_next_verb = 0  # the one that should be accepted now


def change(manager_key: str) -> tuple[int, float, float]:
    """One release change (a shadow started, or stopped if one runs: a 409 says which): its
    revision, when it was sent and when its answer came (``time.monotonic``, the clock the
    clients stamp arrivals with)."""
    global _next_verb
    verbs = (SHADOW_START, SHADOW_STOP)
    for attempt in range(2):
        verb, body = verbs[(_next_verb + attempt) % 2]
        request = urllib.request.Request(
            f"http://127.0.0.1:{API_PORT}/api/v1/releases/{ENVIRONMENT}/{PROMPT}/{verb}",
            data=json.dumps({**body, "reason": "bench"}).encode(),
            headers={"Authorization": f"Bearer {manager_key}", "Content-Type": "application/json"},
            method="POST",
        )
        sent = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as refused:
            if refused.code == 409:  # a shadow runs already: stop it instead
                continue
            raise
        _next_verb = (_next_verb + attempt + 1) % 2
        return answer["revision"], sent, time.monotonic()
    raise SystemExit("neither starting nor stopping the shadow was accepted")


# --- the light clients (a process each, ``--client``) -------------------------------------------


async def follow(
    key: str, port: int, arrivals: dict, hello: asyncio.Event, state: dict, got: list
) -> None:
    """One stream: sends the request, then stamps each ``release`` event's arrival (and notes
    it in ``got``, this stream's own list)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /api/v1/environments/{ENVIRONMENT}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    buffer = b""
    try:
        while b"event: hello" not in buffer:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(buffer[:200].decode(errors="replace"))
            buffer += data
        state["held"] += 1
        hello.set()
        buffer = b""
        while data := await reader.read(65536):
            now = time.monotonic()
            buffer += data
            last = 0
            for match in RELEASE_EVENT.finditer(buffer):
                arrivals.setdefault((match[1].decode(), int(match[2])), []).append(now)
                got.append(int(match[2]))
                last = match.end()
            buffer = buffer[last:][-4096:]
    finally:
        state["held"] -= 1 if hello.is_set() else 0
        writer.close()


async def client_main(key: str, port: int, count: int) -> None:
    """Opens ``count`` streams (a few hundred connecting at a time), says ``ready held`` on
    stdout, then ``got prompt revision`` when every open stream has a change, and, on ``stop``
    from stdin, the arrival times as JSON."""
    arrivals: dict[tuple[str, int], list[float]] = {}
    state = {"held": 0}
    tasks, failed = [], 0
    received: list[list[int]] = []
    for start_at in range(0, count, 250):
        hellos = []
        for _ in range(min(250, count - start_at)):
            hello = asyncio.Event()
            hellos.append(hello)
            got: list[int] = []
            received.append(got)
            tasks.append(asyncio.create_task(follow(key, port, arrivals, hello, state, got)))
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await asyncio.gather(*(h.wait() for h in hellos))
        except TimeoutError:
            pass
        failed = sum(1 for t in tasks if t.done())
    print(f"ready {state['held']} {failed}", flush=True)
    reported: set[tuple[str, int]] = set()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    command = asyncio.create_task(stdin.readline())
    while not command.done():
        for change_key, times in list(arrivals.items()):
            if change_key not in reported and len(times) >= state["held"]:
                reported.add(change_key)
                print(f"got {change_key[0]} {change_key[1]}", flush=True)
        await asyncio.wait([command], timeout=0.005)
    stamped = {f"{p} {r}": times for (p, r), times in arrivals.items()}
    # Streams that said hello but lack a change some other stream here received: how many, and
    # what the first of them got (and whether it is still open).
    every = sorted({r for got in received for r in got})
    short = [i for i, got in enumerate(received) if tasks[i].done() is False and got != every]
    missing = {}
    if short:
        missing = {"streams": len(short), "expected": every, "first": received[short[0]]}
    print(json.dumps({"held": state["held"], "arrivals": stamped, "missing": missing}), flush=True)
    for task in tasks:
        task.cancel()


# --- a round ------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def one_round(count: int, sdk_key: str, manager_key: str, changes: int, workers: int) -> dict:
    server = stream_server(workers)
    clients: list[subprocess.Popen] = []
    try:
        # One stream first: the hub subscribed, the key and the environment loaded.
        warm = client_processes(1, sdk_key)
        baseline = rss_bytes(server.pid)
        finish(warm)
        clients = client_processes(count, sdk_key)
        held = sum(c.held for c in clients)
        time.sleep(2)  # let the connects settle
        memory = rss_bytes(server.pid)
        sockets = open_sockets(server.pid)
        cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(server.pid) - cpu_start) / (time.monotonic() - wall_start)
        answers: dict[tuple[str, int], float] = {}
        sent_at: dict[tuple[str, int], float] = {}
        cpu_before_changes = cpu_seconds(server.pid)
        for _ in range(changes):
            revision, sent, answered = change(manager_key)
            answers[(PROMPT, revision)], sent_at[(PROMPT, revision)] = answered, sent
            late = [c for c in clients if not c.wait_for(f"got {PROMPT} {revision}")]
            if late:
                print(f"  revision {revision}: not at every stream after {WAIT_SECONDS} s")
        # The stream process's CPU per change (fan-out, keep-alives meanwhile, nothing else):
        # what a change costs it whatever else the machine runs, unlike the delays.
        change_cpu = (cpu_seconds(server.pid) - cpu_before_changes) / changes
        delays, from_sent = [], []
        for client in clients:
            arrivals = client.stop()
            for change_key, answered in answers.items():
                times = arrivals.get(f"{change_key[0]} {change_key[1]}", [])
                delays.extend(t - answered for t in times)
                from_sent.extend(t - sent_at[change_key] for t in times)
        still_held = sum(c.held_at_end for c in clients)
        for client in clients:
            if client.missing:
                print(f"  streams that missed a change: {client.missing}")
        return {
            "held": held,
            "held_at_end": still_held,
            "sockets": sockets,
            "kb_per_stream": (memory - baseline) / max(held, 1) / 1024,
            "rss_mb": memory / 2**20,
            "idle_cpu": idle_cpu * 100,
            "cpu_per_change": change_cpu * 1000,
            "deliveries": len(delays),
            "expected": held * changes,
            "p50": percentile(delays, 50) * 1000,
            "p99": percentile(delays, 99) * 1000,
            "max": max(delays) * 1000,
            "sent_p99": percentile(from_sent, 99) * 1000,
        }
    finally:
        for client in clients:
            client.kill()
        stop(server)


class ClientProcess:
    """A ``--client`` process and its stdout protocol; every read is bounded."""

    def __init__(self, count: int, key: str) -> None:
        self.process = subprocess.Popen(
            [PYTHON, __file__, "--client", str(count), "--key", key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        self.held = self.failed = self.held_at_end = 0
        self.missing: dict = {}

    def wait_ready(self) -> None:
        """Waits for its ``ready held failed`` line (its connects take up to WAIT_SECONDS per
        batch of 250)."""
        _, held, failed = self._line(WAIT_SECONDS * (1 + CONNECTIONS_PER_CLIENT // 250)).split()
        self.held, self.failed = int(held), int(failed)

    def _line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            data = os.read(fd, 1 << 20)
            if not data:
                raise SystemExit("a client process ended early")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip()

    def wait_for(self, expected: str) -> bool:
        """Whether every stream of this client had the change within WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        try:
            while (line := self._line(deadline - time.monotonic())) != expected:
                if not line.startswith("got "):
                    raise SystemExit(f"unexpected from a client: {line[:200]}")
        except TimeoutError:
            return False
        return True

    def stop(self) -> dict[str, list[float]]:
        self.process.stdin.write(b"stop\n")
        self.process.stdin.flush()
        while not (line := self._line(WAIT_SECONDS)).startswith("{"):
            pass
        final = json.loads(line)
        self.process.wait(timeout=WAIT_SECONDS)
        self.held_at_end = final["held"]  # streams still open when told to stop
        self.missing = final["missing"]
        return final["arrivals"]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)


def client_processes(count: int, key: str) -> list[ClientProcess]:
    shares = [CONNECTIONS_PER_CLIENT] * (count // CONNECTIONS_PER_CLIENT)
    if count % CONNECTIONS_PER_CLIENT:
        shares.append(count % CONNECTIONS_PER_CLIENT)
    clients = [ClientProcess(share, key) for share in shares]  # connecting side by side
    for client in clients:
        client.wait_ready()
    return clients


def finish(clients: list[ClientProcess]) -> None:
    for client in clients:
        client.stop()


def print_result(label: str, r: dict) -> None:
    print(
        f"{label:<12} held {r['held']:>6}, at the end {r['held_at_end']:>6} "
        f"(server sockets {r['sockets']:>6})  "
        f"{r['kb_per_stream']:6.1f} KB/stream (RSS {r['rss_mb']:6.1f} MB)  "
        f"idle CPU {r['idle_cpu']:5.1f} %  CPU/change {r['cpu_per_change']:6.1f} ms  "
        f"delivered {r['deliveries']}/{r['expected']}  "
        f"p50 {r['p50']:7.1f} ms  p99 {r['p99']:7.1f} ms  max {r['max']:7.1f} ms  "
        f"(p99 from the request {r['sent_p99']:7.1f} ms)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="100,1000,10000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--reuse", action="store_true", help="keep the database a run seeded")
    parser.add_argument(
        "--workers", type=int, default=1, help="stream processes (uvicorn --workers)"
    )
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    hard = raise_open_files()
    if args.client:
        try:  # the light clients share the machine's cores with the server: the cheaper loop
            import uvloop

            uvloop.run(client_main(args.key, STREAM_PORT, args.client))
        except ImportError:
            asyncio.run(client_main(args.key, STREAM_PORT, args.client))
        return
    counts = [int(c) for c in args.counts.split(",")]
    if max(counts) + 100 > hard:
        raise SystemExit(f"the open-file limit's hard maximum is {hard}: too low for {max(counts)}")
    subprocess.run([str(ROOT / "scripts" / "ensure-services")], check=True, capture_output=True)
    print("Seeding…", flush=True)
    sdk_key, manager_key = seed(reuse=args.reuse)
    api = api_server()
    print(
        f"stream process: uvicorn, {args.workers} worker(s); API: gunicorn, 2 sync workers; "
        f"open files {hard}; "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    try:
        results: dict[int, list[dict]] = {count: [] for count in counts}
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}")
            for count in counts:
                result = one_round(count, sdk_key, manager_key, args.changes, args.workers)
                results[count].append(result)
                print_result(f"N={count}", result)
    finally:
        stop(api)
    print(f"\nmedian of {args.rounds} rounds:")
    for count in counts:
        runs = results[count]
        median = {field: statistics.median(r[field] for r in runs) for field in runs[0]}
        print_result(f"N={count}", median)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
