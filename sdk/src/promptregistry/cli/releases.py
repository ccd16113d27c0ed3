"""``release`` (deploy, canary, ramp, promote, abort, rollback) and ``status``.

Every change is sent with ``If-Match``: the release's revision as the command read it just
before, or as the caller read it earlier (``--expect-revision``, e.g. from ``status --json``), so
a release that moved on in between is refused (``409 stale-revision``) rather than changed from
a state nobody looked at. The gates and every other rule are the registry's.
"""

from __future__ import annotations

from typing import Any

from .errors import ExitCode, ProblemError
from .output import Output, table
from .registry import Registry, segment

# verb -> the change's path under /releases/{environment}/{key}
CHANGES = {
    "deploy": "deploy",
    "canary": "canary",
    "ramp": "canary/percent",
    "promote": "canary/promote",
    "abort": "canary/abort",
    "rollback": "rollback",
}


def release_state(release: dict[str, Any]) -> dict[str, Any]:
    """A release as the command shows it: the API's answer without its salts."""
    canary, experiment, shadow = release["canary"], release["experiment"], release["shadow"]
    return {
        "prompt": release["prompt"],
        "environment": release["environment"],
        "revision": release["revision"],
        "stable": release["stable"],
        "canary": canary and {"version": canary["version"], "percent": canary["percent"]},
        "experiment": experiment
        and {
            "name": experiment["name"],
            "planned_calls": experiment["planned_calls"],
            "variants": [
                {"name": v["name"], "version": v["version"], "percent": v["percent"]}
                for v in experiment["variants"]
            ],
        },
        "shadow": shadow
        and {"versions": shadow["versions"], "sample_percent": shadow["sample_percent"]},
    }


def _percent(basis_points: int) -> float:
    return basis_points / 100


def bundle_release_state(environment: str, key: str, release: dict[str, Any]) -> dict[str, Any]:
    """The same, from an environment bundle's release (weights in basis points)."""
    state = release["state"]
    canary, experiment, shadow = state["canary"], state["experiment"], state["shadow"]
    return release_state(
        {
            "prompt": key,
            "environment": environment,
            "revision": release["revision"],
            "stable": state["stable"],
            "canary": canary and {**canary, "percent": _percent(canary["weight"])},
            "experiment": experiment
            and {
                **experiment,
                "variants": [
                    {**v, "percent": _percent(v["weight"])} for v in experiment["variants"]
                ],
            },
            "shadow": shadow and {**shadow, "sample_percent": _percent(shadow["sample"])},
        }
    )


def _number(percent: float) -> str:
    return f"{percent:g}"


def describe(state: dict[str, Any]) -> str:
    """``stable 2, canary 3 at 10 %``: what the release serves, in one line."""
    parts = [f"stable {state['stable']}" if state["stable"] is not None else "no stable version"]
    if canary := state["canary"]:
        parts.append(f"canary {canary['version']} at {_number(canary['percent'])} %")
    if experiment := state["experiment"]:
        variants = ", ".join(
            f"{v['name']} {v['version']} at {_number(v['percent'])} %"
            for v in experiment["variants"]
        )
        parts.append(f"experiment {experiment['name']} ({variants})")
    if shadow := state["shadow"]:
        versions = ", ".join(str(v) for v in shadow["versions"])
        parts.append(f"shadow {versions} on {_number(shadow['sample_percent'])} %")
    return ", ".join(parts)


def change(
    registry: Registry,
    out: Output,
    *,
    verb: str,
    environment: str,
    key: str,
    version: int | None,
    percent: str | None,
    to_event: int | None,
    reason: str,
    override_gates: bool,
    expected_revision: int | None,
) -> ExitCode:
    path = f"/releases/{segment(environment)}/{segment(key)}"
    before = None
    if expected_revision is None:
        before = release_state(registry.get(path))
        expected_revision = before["revision"]
    body: dict[str, Any] = {"reason": reason}
    if version is not None:
        body["version"] = version
    if percent is not None:
        body["percent"] = percent
    if to_event is not None:
        body["to_event"] = to_event
    if override_gates:
        body["override_gates"] = True
    try:
        answer = registry.post(
            f"{path}/{CHANGES[verb]}", body, headers={"If-Match": f'"{expected_revision}"'}
        )
    except ProblemError as exc:
        if exc.type == "/problems/promotion-blocked":
            exc.exit_code = ExitCode.REFUSED
            exc.message += "\n  (--override-gates with a --reason releases it anyway, audited)"
        elif exc.type == "/problems/stale-revision":
            exc.message += (
                f"\n  (you read revision {expected_revision}; it is "
                f"{exc.problem.get('current_revision')} now: look again with `promptregistry "
                f"status {environment} {key}`)"
            )
        raise
    after = release_state(answer)
    lines = [f"{environment} {key}: {verb}, revision {expected_revision} -> {after['revision']}"]
    if before is not None:
        lines.append(f"  before: {describe(before)}")
    lines.append(f"  now:    {describe(after)}")
    out.result({"action": verb, "before": before, "after": after}, lines)
    return ExitCode.OK


def status(registry: Registry, out: Output, *, environment: str, key: str | None) -> ExitCode:
    if key:
        states = [release_state(registry.get(f"/releases/{segment(environment)}/{segment(key)}"))]
    else:
        bundle = registry.get(f"/environments/{segment(environment)}/bundle")
        states = [
            bundle_release_state(environment, name, release)
            for name, release in sorted(bundle["releases"].items())
        ]
    rows = [["PROMPT", "REVISION", "SERVES"]]
    rows += [[s["prompt"], str(s["revision"]), describe(s)] for s in states]
    lines = table(rows) if states else [f"Nothing is released in {environment}."]
    out.result({"environment": environment, "releases": states}, lines)
    return ExitCode.OK
