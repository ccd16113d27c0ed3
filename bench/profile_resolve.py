"""Where a resolve request's time goes, without a network or a load generator (STYLE R17).

    .venv/bin/python bench/profile_resolve.py [--requests 20000] [--top 25] [--bare]

Calls the project's WSGI application in this process, the way gunicorn's worker does (an
``environ`` dict in, the body iterated out), for the same resolve request as ``bench/resolve.py``,
on the database and key that ``bench/resolve.py`` seeded (``promptregistry_bench_small``; pass
``--database`` and ``--key`` for another). Prints:

- function calls per request under cProfile: independent of the machine's load, so a change that
  removes work shows here even on a busy machine;
- the functions that cost most per request (own time, and cumulative);
- CPU microseconds per request without the profiler (the median of 5 batches, ``process_time``,
  so other processes on the machine disturb it less than wall time);
- the calls per request again, each counted in the step of the path it is made in (``STEPS``:
  the Host check, the query, the key and rate limit...; the rest is Django's and WSGI's own, as
  in the bare view). The table in docs/releases.md, Performance, is this output.

``--bare`` profiles ``bench/bare_app.py`` the same way (the baseline of the ratio). Run from the
repository root; needs PostgreSQL and Redis as ``bench/resolve.py`` does. Never run by the tests.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/api/v1/prompts/bench.prompt-7/resolve"
QUERY = "environment=production&subject=user-42&locale=fr-CA"


def environ(path: str, query: str, key: str) -> dict:
    env = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8790",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8790",
        "HTTP_USER_AGENT": "profile_resolve",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if key:
        env["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return env


# A function of the path -> the step its calls are counted in (the innermost step wins). Names of
# before and after issue 14 both, so that the same table compares them.
STEPS = {
    "get_host": "Host check",
    "host_allowed": "Host check",
    "GET": "reading the query",
    "query_values": "reading the query",
    "_authenticate": "key check and rate limit",
    "authenticate": "key check and rate limit",
    "allow_environment": "key check and rate limit",
    "_resolve": "cache lookup and resolution",
    "cached_release": "cache lookup and resolution",
    "resolve": "cache lookup and resolution",
    "resolution_answer": "answer, JSON and ETag",
    "dumps": "answer, JSON and ETag",
    "_etag": "answer, JSON and ETag",
    "resolution_body": "answer, JSON and ETag",
    "resolution_etag": "answer, JSON and ETag",
    "_json": "response object and headers",
    "_json_bytes": "response object and headers",
    "json_bytes_response": "response object and headers",
    "_not_modified": "response object and headers",
    "not_modified": "response object and headers",
    "secure_headers": "response object and headers",
    "stack_headers": "response object and headers",
}
_STEP_FILES = ("/api/", "/handlers/wsgi.py", "/http/request.py", "/json/__init__.py")
OTHER = "Django and WSGI, the middleware and view themselves"


def calls_by_step(one, requests: int) -> dict[str, float]:
    """Python and C function calls per request, by step (``sys.setprofile``: this thread only)."""
    counts: dict[str, int] = {}
    stack: list[tuple[object, str]] = []

    def hook(frame, event, arg):
        if event == "call":
            code = frame.f_code
            step = STEPS.get(code.co_name)
            new_step = step and (not stack or stack[-1][1] != step)
            if new_step and any(f in code.co_filename for f in _STEP_FILES):
                stack.append((frame, step))
        elif event == "return":
            if stack and stack[-1][0] is frame:
                stack.pop()
            return
        elif event != "c_call":
            return
        where = stack[-1][1] if stack else OTHER
        counts[where] = counts.get(where, 0) + 1

    sys.setprofile(hook)
    try:
        for _ in range(requests):
            one()
    finally:
        sys.setprofile(None)
    return {step: n / requests for step, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def application(bare: bool):
    if bare:
        sys.path.insert(0, str(ROOT / "bench"))
        from bare_app import application as app

        return app
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "sdk" / "src"))
    from config.wsgi import application as app

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--bare", action="store_true", help="profile bench/bare_app.py instead")
    parser.add_argument("--database", default="promptregistry_bench_small")
    parser.add_argument("--key", default="", help="an API key (default: one made here)")
    parser.add_argument("--dump", default="", help="also write the raw profile to this file")
    args = parser.parse_args()

    if not args.bare:
        # The same settings as bench/resolve.py's project processes.
        sys.path.insert(0, str(ROOT / "bench"))
        from resolve import project_env

        os.environ.update(project_env(args.database))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    else:
        os.environ["BARE_BODY_BYTES"] = "1300"
    app = application(args.bare)
    key = args.key if args.bare else (args.key or _make_key())
    path, query = ("/bare", "") if args.bare else (PATH, QUERY)
    statuses: list[str] = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)

    def one() -> None:
        response = app(environ(path, query, "" if args.bare else key), start_response)
        for _ in response:
            pass
        response.close()

    for _ in range(200):  # warm: the release cache, the keyring, the rate limit lease
        one()
    if not statuses[-1].startswith("200"):
        raise SystemExit(f"{path}: {statuses[-1]}")

    batches = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(args.requests // 5):
            one()
        batches.append((time.process_time() - started) / (args.requests // 5) * 1e6)

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(args.requests):
        one()
    profile.disable()
    if args.dump:
        profile.dump_stats(args.dump)
    stats = pstats.Stats(profile)
    calls = stats.total_calls / args.requests  # type: ignore[attr-defined]
    print(f"{'bare Django view' if args.bare else 'resolve, ' + args.database}")
    print(
        f"CPU per request: {statistics.median(batches):.1f} µs (median of 5 batches of "
        f"{args.requests // 5}; min {min(batches):.1f})"
    )
    print(f"function calls per request under cProfile: {calls:.1f}\n")
    steps = calls_by_step(one, min(args.requests, 2000))
    print("function calls per request, by step of the path:")
    for step, count in steps.items():
        print(f"{count:8.1f}  {step}")
    print(f"{sum(steps.values()):8.1f}  total\n")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
        body = out.getvalue()
        print(f"-- by {order} --")
        print(body[body.index("   ncalls") :])


def _make_key() -> str:
    from django.core.management import call_command

    out = io.StringIO()
    call_command("apikey", "create", "profile", "--scope", "prompts:read", stdout=out)
    return out.getvalue().strip().splitlines()[-1]


if __name__ == "__main__":
    main()
