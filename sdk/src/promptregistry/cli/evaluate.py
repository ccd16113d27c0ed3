"""``eval``: eval runs of a version, waited for, and the promotion gates' verdict on it.

With ``--gate ENV`` the runs are gate runs (holdout included, which needs ``releases:write``),
compared with ENV's stable version, over the datasets the environment's gates name for the
prompt (unless ``--dataset`` says which); once they end, the registry judges the version against
every gate that applies there (``GET …/versions/{n}/gates``) and the command exits 1 if one would
refuse it. The judgement is the registry's: the command only reports it.
"""

from __future__ import annotations

import time
from typing import Any

from .errors import CliError, ExitCode, ProblemError
from .output import Output
from .registry import Registry, segment

ENDED = frozenset({"finished", "failed", "cancelled"})
KEYS_SHOWN = 10


def version_number(registry: Registry, key: str, spec: str) -> int:
    """A version number, or ``latest`` (the latest committed) or ``draft`` (the open draft)."""
    if spec.isascii() and spec.isdigit() and int(spec) > 0:
        return int(spec)
    if spec not in ("latest", "draft"):
        raise CliError(f"{spec!r} is no version: give a number, latest or draft.")
    prompt = registry.get(f"/prompts/{segment(key)}")
    number = prompt["latest_version" if spec == "latest" else "draft_version"]
    if number is None:
        what = "committed version" if spec == "latest" else "open draft"
        raise CliError(f"{key} has no {what}.")
    return int(number)


def _keys(keys: list[str]) -> str:
    more = len(keys) - KEYS_SHOWN
    return ", ".join(keys[:KEYS_SHOWN]) + (f" and {more} more" if more > 0 else "")


def _progress(runs: list[dict[str, Any]]) -> str:
    return " | ".join(
        f"run {r['id']} {r['dataset']}: {r['progress']['done']}/{r['progress']['total']} cases "
        f"({r['progress']['percent']:.0f} %) {r['status']}"
        for r in runs
    )


def _wait(
    registry: Registry, out: Output, runs: list[dict[str, Any]], *, wait: float, poll: float
) -> list[dict[str, Any]]:
    """Polls each run until every one has ended, or raises once ``wait`` seconds have passed
    (the runs go on: the registry never needed the command to stay)."""
    deadline = time.monotonic() + wait
    shown = ""
    while True:
        runs = [
            r if r["status"] in ENDED else registry.get(f"/evaluations/{segment(r['id'])}")
            for r in runs
        ]
        line = _progress(runs)
        if line != shown:
            out.progress(line)
            shown = line
        if all(r["status"] in ENDED for r in runs):
            out.progress_end()
            return runs
        if time.monotonic() >= deadline:
            out.progress_end()
            urls = ", ".join(f"{registry.settings.url}{r['url']}" for r in runs)
            raise CliError(
                f"The eval runs had not ended after {wait / 60:g} minute(s) (--wait); they go on: "
                f"{urls}"
            )
        time.sleep(poll)


def _run_lines(run: dict[str, Any]) -> list[str]:
    holdout = " (holdout included)" if run["include_holdout"] else ""
    lines = [
        f"run {run['id']}: {run['prompt']} version {run['version']} on {run['dataset']}"
        f"{holdout}: {run['status']}"
    ]
    if run["pass_rate"] is not None:
        progress = run["progress"]
        line = f"  pass rate {run['pass_rate']:.1f} % of {progress['done']} scored"
        baseline = run["baseline"]
        if baseline is not None and baseline["pass_rate"] is not None:
            line += (
                f"; stable version {baseline['version']} (run {baseline['id']}): "
                f"{baseline['pass_rate']:.1f} %, {run['delta_points']:+.1f} points"
            )
        lines.append(line)
    cases = run.get("report", {}).get("cases", [])
    must = [c["key"] for c in cases if c["must_pass"] and not c["passed"]]
    if must:
        lines.append(f"  must-pass failing: {_keys(must)}")
    for change in ("regressed", "fixed"):
        keys = [c["key"] for c in cases if c["change"] == change]
        if keys:
            lines.append(f"  {change}: {_keys(keys)}")
    return lines


def evaluate(
    registry: Registry,
    out: Output,
    *,
    key: str,
    version: str,
    datasets: list[str],
    baseline: str | None,
    gate: str | None,
    wait: float,
    poll: float,
) -> ExitCode:
    number = version_number(registry, key, version)
    where = f"/prompts/{segment(key)}/versions/{number}"
    if gate and not datasets:
        standing = registry.get(f"{where}/gates", {"environment": gate})
        datasets = sorted({g["gate"]["dataset"] for g in standing["gates"]})
        if not datasets:
            out.result(
                {"prompt": key, "version": number, "runs": [], "gates": standing, "passed": True},
                [
                    f"No promotion gate of {gate} applies to {key}: none would refuse version {number}."
                ],
            )
            return ExitCode.OK
    started, missing = [], []
    for dataset in datasets:
        body: dict[str, Any] = {"dataset": dataset, "include_holdout": bool(gate)}
        if baseline or gate:
            body["environment"] = baseline or gate
        try:
            started.append(registry.post(f"{where}/evaluations", body))
        except ProblemError as exc:
            if not (gate and exc.type == "/problems/dataset-not-found"):
                raise
            # A gate naming a dataset the prompt lacks: the gates' verdict below says so.
            missing.append(dataset)
    for run in started:
        out.say(f"Started run {run['id']}: {key} version {number} on {run['dataset']}.")
    runs = _wait(registry, out, started, wait=wait, poll=poll) if started else []
    lines = [line for run in runs for line in _run_lines(run)]
    lines += [f"{key} has no dataset {name!r}." for name in missing]
    ended_badly = [r for r in runs if r["status"] != "finished"]
    standing, passed = None, None
    if gate and not ended_badly:
        standing = registry.get(f"{where}/gates", {"environment": gate})
        passed = bool(standing["passed"])
        lines.append(f"{gate} gates for version {number}: {'passed' if passed else 'refused'}")
        lines += [
            f"  {'ok' if c['passed'] else 'FAILED'} {c['gate']}: {c['detail']}"
            for g in standing["gates"]
            for c in g["checks"]
        ]
    out.result(
        {"prompt": key, "version": number, "runs": runs, "gates": standing, "passed": passed},
        lines,
    )
    if ended_badly:
        statuses = ", ".join(f"run {r['id']} {r['status']}" for r in ended_badly)
        out.warn(f"Not every eval run finished ({statuses}).")
        return ExitCode.ERROR
    return ExitCode.REFUSED if passed is False else ExitCode.OK
