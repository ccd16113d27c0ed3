"""A canary analysis policy: validation with a JSON pointer per problem, defaults filled in, and
the derived times (earliest promotion, latest verdict of the current step).

The stored policy is always the validated one, every field present: ``min_minutes``,
``min_calls`` and ``max_minutes`` may be given as one number for every step or as a list with
one entry per step, and are stored as lists. Pure module: no database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from registry.errors import Problem, ProblemsError

from .metrics import MIN_VALUES

# --- fields -----------------------------------------------------------------------------------

MAX_STEPS = 10
_TOLERANCE = Decimal("1e-9")
WEEK_MINUTES = 7 * 24 * 60

DEFAULT_STEPS = [5, 25, 50, 100]
# Per step: one number for every step, or a list with one per step. (default, minimum, maximum)
PER_STEP = {
    "min_minutes": (30, 0, WEEK_MINUTES),
    # Calls per arm, sticky only; below MIN_VALUES no interval means anything.
    "min_calls": (500, MIN_VALUES, 10_000_000),
    "max_minutes": (240, 1, 4 * WEEK_MINUTES),
}
# Margins and knobs: (default, minimum, maximum, what the number is).
NUMBERS = {
    "max_error_rate_increase": (1.0, 0, 100, "percentage points"),
    "max_schema_failure_increase": (1.0, 0, 100, "percentage points"),
    "max_p95_latency_increase": (20.0, 0, 1000, "percent"),
    "max_cost_increase": (20.0, 0, 1000, "percent"),
    "max_feedback_decrease": (0.1, 0, 2, "points on the -1..1 feedback scale"),
    "min_shadow_agreement": (80.0, 0, 100, "percent"),
    "alpha": (0.05, 0.001, 0.5, "the significance level"),
}
MEASURE_RETRIES = (3, 0, 20)
# Which calls the analysis counts (decision 0017): the registry's own runs, reports sent to
# POST /events (and feedback sent by API keys), and, to narrow reports, the ids of the keys trusted.
# The default keeps every source: a key may report only for its own environments, and services that
# call the model themselves have nothing but reports to be judged on.
DEFAULT_SOURCES: dict[str, Any] = {"runs": True, "reports": True, "keys": None}
MAX_TRUSTED_KEYS = 100
FIELDS = frozenset({"steps", *PER_STEP, *NUMBERS, "measure_retries", "sources"})


class CanaryPolicyInvalid(ProblemsError):
    message = "The canary analysis policy is not valid."


def _is_number(value: object) -> bool:
    # bool is an int to Python; "true minutes" is a caller's mistake, not 1.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _steps(value: object, problems: list[Problem]) -> list[int | float]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STEPS:
        problems.append(
            Problem("invalid_steps", f"Give 1 to {MAX_STEPS} percentages, e.g. [5, 25, 50, 100].")
        )
        return []
    steps: list[int | float] = []
    for i, step in enumerate(value):
        try:
            exact = Decimal(str(step)) if _is_number(step) else None
        except InvalidOperation:
            exact = None
        if exact is not None and exact.is_finite() and isinstance(step, float):
            # A float arrives as the binary number nearest to what was sent: 0.07 computed as
            # 7 * 0.01 is 0.07000000000000001. Within a billionth of a hundredth it is that
            # hundredth (as the API's percents, and JSON Schema's ``multipleOf`` on floats).
            hundredths = (exact * 100).to_integral_value()
            if abs(exact * 100 - hundredths) <= _TOLERANCE:
                exact = hundredths / 100
                step = float(exact)
        if exact is None or not exact.is_finite() or not 0 < exact <= 100:
            problems.append(
                Problem("invalid_percent", "A step is a percentage above 0, at most 100.", f"/{i}")
            )
        elif exact != exact.quantize(Decimal("0.01")):
            problems.append(Problem("invalid_percent", "A step has at most two decimals.", f"/{i}"))
        elif steps and step <= steps[-1]:
            problems.append(
                Problem("steps_not_ascending", "Each step must be above the one before.", f"/{i}")
            )
        else:
            steps.append(step)
    if len(steps) == len(value) and steps[0] >= 100:
        problems.append(
            Problem(
                "no_step_to_judge",
                "Give at least one step below 100 %: the canary is judged before it is promoted.",
                "/0",
            )
        )
    return steps


def _whole(value: object, low: int, high: int) -> bool:
    return (
        _is_number(value) and math.isfinite(value) and value == int(value) and low <= value <= high
    )


def canary_policy_validate(policy: object, *, pointer: str = "") -> dict[str, Any]:
    """The policy with every field filled in, or ``CanaryPolicyInvalid`` listing every problem,
    each with a JSON pointer (``pointer`` prefixes them: ``/analysis`` in a canary start)."""
    problems: list[Problem] = []

    def problem(code: str, detail: str, at: str) -> None:
        problems.append(Problem(code, detail, pointer + at))

    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        raise CanaryPolicyInvalid(
            [Problem("invalid_policy", "The analysis policy is a JSON object.", pointer)]
        )
    for name in sorted(set(policy) - FIELDS):
        problem("unknown_field", f"{name!r} is not a policy field.", f"/{name}")

    step_problems: list[Problem] = []
    raw_steps = policy.get("steps", DEFAULT_STEPS)
    steps = _steps(raw_steps, step_problems)
    # Per-step lists match the steps as sent, even where a step itself is wrong.
    count = len(raw_steps) if isinstance(raw_steps, list) else 0
    problems += [Problem(p.code, p.detail, f"{pointer}/steps{p.pointer}") for p in step_problems]
    result: dict[str, Any] = {"steps": steps}

    for name, (default, low, high) in PER_STEP.items():
        value = policy.get(name, default)
        values = value if isinstance(value, list) else [value] * max(count, 1)
        if isinstance(value, list) and count and len(value) != count:
            problem("wrong_length", f"Give one {name} per step ({count}).", f"/{name}")
            result[name] = []
            continue
        bad = [i for i, v in enumerate(values) if not _whole(v, low, high)]
        for i in bad:
            at = f"/{name}/{i}" if isinstance(value, list) else f"/{name}"
            problem("invalid_number", f"{name} is a whole number from {low} to {high:,}.", at)
            if not isinstance(value, list):
                break
        result[name] = [int(v) for v in values] if not bad else []
    if result["min_minutes"] and result["max_minutes"]:
        for i, (low, high) in enumerate(
            zip(result["min_minutes"], result["max_minutes"], strict=True)
        ):
            # A final 100 % is never judged (``judged_steps``): its minutes do not matter.
            if high < low and steps[i : i + 1] != [100]:
                at = "/max_minutes" + (
                    f"/{i}" if isinstance(policy.get("max_minutes"), list) else ""
                )
                problem("max_below_min", "max_minutes must be at least min_minutes.", at)
                break

    for name, (default, low, high, meaning) in NUMBERS.items():
        value = policy.get(name, default)
        if not _is_number(value) or not low <= value <= high:
            problem("invalid_number", f"{name} is {meaning}, from {low:g} to {high:g}.", f"/{name}")
        result[name] = value
    retries = policy.get("measure_retries", MEASURE_RETRIES[0])
    if not _whole(retries, MEASURE_RETRIES[1], MEASURE_RETRIES[2]):
        problem(
            "invalid_number",
            f"measure_retries is a whole number from {MEASURE_RETRIES[1]} to {MEASURE_RETRIES[2]}.",
            "/measure_retries",
        )
    result["measure_retries"] = retries
    result["sources"] = _sources(policy.get("sources", DEFAULT_SOURCES), problem)
    if problems:
        raise CanaryPolicyInvalid(problems)
    result["measure_retries"] = int(retries)
    return result


def _sources(value: object, problem: Any) -> dict[str, Any]:
    """``{"runs": bool, "reports": bool, "keys": null | [key id, ...]}``, fields left out taking
    the defaults; ``keys`` lists the only API keys whose reports and feedback count."""
    if not isinstance(value, dict):
        problem("invalid_sources", 'sources is an object: {"runs", "reports", "keys"}.', "/sources")
        return {}
    for name in sorted(set(value) - set(DEFAULT_SOURCES)):
        problem("unknown_field", f"{name!r} is not a sources field.", f"/sources/{name}")
    result = {**DEFAULT_SOURCES, **{k: v for k, v in value.items() if k in DEFAULT_SOURCES}}
    for name in ("runs", "reports"):
        if not isinstance(result[name], bool):
            problem("invalid_boolean", f"sources.{name} is true or false.", f"/sources/{name}")
    keys = result["keys"]
    if keys is not None:
        if (
            not isinstance(keys, list)
            or not 1 <= len(keys) <= MAX_TRUSTED_KEYS
            or not all(_whole(key, 1, 2**31 - 1) for key in keys)
        ):
            problem(
                "invalid_keys",
                f"sources.keys is null (every key) or 1 to {MAX_TRUSTED_KEYS} API key ids.",
                "/sources/keys",
            )
        else:
            result["keys"] = sorted({int(key) for key in keys})
            if result["reports"] is False:
                problem(
                    "keys_without_reports",
                    "Trusted keys only count with reports: true.",
                    "/sources/keys",
                )
    if result["runs"] is False and result["reports"] is False:
        problem(
            "no_trusted_source",
            "Trust at least one source: the registry's runs or reports.",
            "/sources",
        )
    return result


def sources_text(sources: dict[str, Any]) -> str:
    """What an analysis counts, in words: for the admin and the verdicts."""
    parts = []
    if sources["runs"]:
        parts.append("the registry's runs")
    if sources["reports"]:
        keys = sources["keys"]
        parts.append(
            "reports and feedback from any key"
            if keys is None
            else "reports and feedback from keys " + ", ".join(f"#{key}" for key in keys)
        )
    return "; ".join(parts)


def judged_steps(policy: dict[str, Any]) -> int:
    """How many steps are judged: a final 100 % is not a step of its own, since at 100 % there is
    no stable arm to compare with; passing the step before it promotes."""
    steps = policy["steps"]
    return len(steps) - 1 if steps[-1] >= 100 else len(steps)


@dataclass(frozen=True, slots=True)
class CanaryTimes:
    """When the current step may end: ``earliest_promotion`` if every remaining step passes as
    soon as it may, ``latest_verdict`` after which the current step, still without its minimum
    sample, could not be measured (and, after the retries, holds)."""

    earliest_promotion: datetime
    latest_verdict: datetime


def canary_policy_times(
    *, policy: dict[str, Any], step: int, step_started_at: datetime
) -> CanaryTimes:
    remaining = sum(policy["min_minutes"][step : judged_steps(policy)])
    return CanaryTimes(
        earliest_promotion=step_started_at + timedelta(minutes=remaining),
        latest_verdict=step_started_at + timedelta(minutes=policy["max_minutes"][step]),
    )
