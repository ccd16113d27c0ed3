"""Fresh Python processes, started by forking one that has imported the heavy libraries already.

Tests of what a process reads once at start (tests/test_settings.py: the settings module) run
each case in a process of its own, with the environment the case states. Starting an interpreter
and importing the libraries the project loads (openai, mcp, celery, redis, httpx, Django itself)
took about two of the three seconds a ``manage.py check`` took; a ``FreshPython`` pays that once
and forks a child per case:

- the parent (this file run as a script) imports those libraries, none of the project's modules,
  and never reads the settings: it refuses to serve if any import configured them;
- each child is a new process: it takes the case's environment (all of it, nothing of the
  parent's), working directory, arguments and standard streams, then runs ``-c code`` or a script
  as ``python`` would, in a ``__main__`` of its own, and exits with the code ``python`` would;
- the libraries read no variable a case sets while they are imported (the project's names).

``FreshPython(env).run(args, env=..., cwd=...)`` answers like ``subprocess.run(..., text=True,
capture_output=True)``; ``close()`` ends the parent.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Imported once by the parent: what the project's modules import, and that reads no settings.
PRELOADED = (
    "openai",
    "mcp.server.streamable_http",
    "mcp.client.session",
    "mcp.client.streamable_http",
    "celery.app",
    "redis",
    "httpx",
    "rest_framework.fields",
    "django.core.management",
    "django.db.models",
)


class FreshPython:
    """A parent process to fork fresh Pythons from (see the module docstring)."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(
        self, args: list[str], *, env: dict[str, str], cwd: Path, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        request = {"args": args, "env": env, "cwd": str(cwd), "timeout": timeout}
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"The fresh Pythons' parent exited ({self.process.wait()})")
        answer = json.loads(line)
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(["python", *args], timeout)
        return subprocess.CompletedProcess(
            ["python", *args], answer["returncode"], answer["stdout"], answer["stderr"]
        )

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the parent ----------------------------------------------------------------------------------


def serve() -> None:
    import importlib

    # The requests come on what was stdin, the answers go to what was stdout; a child gets its
    # own standard streams in their place.
    requests = os.fdopen(os.dup(0), "r")
    answers = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    for name in PRELOADED:
        importlib.import_module(name)
    from django.conf import settings

    if settings.configured:
        raise RuntimeError("A preloaded library read the settings: a child would inherit them.")
    for line in requests:
        answers.write(json.dumps(_run_child(json.loads(line), requests, answers)) + "\n")
        answers.flush()


def _run_child(request: dict[str, Any], *inherited) -> dict[str, Any]:
    scratch = tempfile.mkdtemp(prefix="fresh-python-")
    try:
        out, err = Path(scratch, "stdout"), Path(scratch, "stderr")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70  # EX_SOFTWARE: the child failed before running the case
            try:
                for stream in inherited:
                    stream.close()
                os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT), 1)
                os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT), 2)
                code = _child(request["args"], request["env"], request["cwd"])
            finally:
                os._exit(code)  # never back into the parent's loop
        timed_out = not _wait_for(pid, request["timeout"])
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        return {
            "returncode": os.waitstatus_to_exitcode(status),
            "stdout": out.read_text(errors="replace"),
            "stderr": err.read_text(errors="replace"),
            "timed_out": timed_out,
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_for(pid: int, timeout: float) -> bool:
    """Whether the child ended within ``timeout`` seconds (it is not reaped)."""
    if not hasattr(os, "pidfd_open"):  # not Linux: ask every hundredth of a second
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            time.sleep(0.01)
        return False
    descriptor = os.pidfd_open(pid)
    try:
        return bool(select.select([descriptor], [], [], timeout)[0])
    finally:
        os.close(descriptor)


def _child(args: list[str], env: dict[str, str], cwd: str) -> int:
    """Runs ``python *args`` in this process, as the interpreter would; returns its exit code."""
    import atexit
    import runpy
    import traceback
    import types

    # What the parent registered to run at its exit is the parent's: at the child's exit run
    # what the child registers.
    atexit._clear()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    try:
        if args[0] == "-c":
            sys.argv, sys.path[0] = ["-c", *args[2:]], ""
            exec(compile(args[1], "<string>", "exec"), main.__dict__)
        else:
            script = os.path.abspath(args[0])
            sys.argv, sys.path[0] = list(args), os.path.dirname(script)
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    # Run as a script, this file's folder comes first on the path, where tests/mcp would stand
    # for the mcp library: a child sets its own first entry anyway.
    del sys.path[0]
    serve()
