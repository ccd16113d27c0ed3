"""A release change kept to be applied later: as a change request's proposal or a scheduled step.

``change_stored(change)`` is a JSON object, ``{"action": "deploy", "arguments": {"version": 3}}``,
named by the event the change writes (``ReleaseEvent.Action``); ``change_from_stored`` builds the
same ``ReleaseChange`` back, or raises ``ReleaseInvalid`` for an object that names no verb or
holds arguments the verb does not take. Percentages are kept as text (a ``Decimal`` read back
exactly); an experiment's variants as ``[name, version, percent]`` lists.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal, InvalidOperation
from typing import Any

from registry.errors import Problem

from ..errors import ReleaseInvalid
from .canary import CanaryAbort, CanaryPercent, CanaryPromote, CanaryStart
from .common import ReleaseChange
from .deploy import Deploy
from .experiment import ExperimentStart, ExperimentStop
from .rollback import Rollback
from .shadow import ShadowStart, ShadowStop

CHANGES: dict[str, type[ReleaseChange]] = {
    str(change.action): change
    for change in (
        Deploy,
        CanaryStart,
        CanaryPercent,
        CanaryPromote,
        CanaryAbort,
        ExperimentStart,
        ExperimentStop,
        ShadowStart,
        ShadowStop,
        Rollback,
    )
}
# Arguments kept as text and read back as Decimal.
_DECIMALS = frozenset({"percent", "sample_percent"})


def change_stored(change: ReleaseChange) -> dict[str, Any]:
    """The change as a JSON object (``change_from_stored`` reads it back)."""
    arguments: dict[str, Any] = {}
    for field in dataclasses.fields(change):  # type: ignore[arg-type]
        value = getattr(change, field.name)
        if isinstance(value, Decimal):
            value = str(value)
        elif field.name == "variants":
            value = [[name, version, str(percent)] for name, version, percent in value]
        arguments[field.name] = value
    return {"action": str(change.action), "arguments": arguments}


def change_from_stored(stored: Any) -> ReleaseChange:
    """The ``ReleaseChange`` a stored object holds, or ``ReleaseInvalid``."""
    action = stored.get("action") if isinstance(stored, dict) else None
    arguments = stored.get("arguments", {}) if isinstance(stored, dict) else None
    verb = CHANGES.get(action) if isinstance(action, str) else None
    if verb is None or not isinstance(arguments, dict):
        raise _invalid("/action", f"Name one of: {', '.join(CHANGES)}.")
    names = {field.name for field in dataclasses.fields(verb)}  # type: ignore[arg-type]
    unknown = sorted(set(arguments) - names)
    if unknown:
        raise _invalid("/arguments", f"{action} takes no {', '.join(unknown)}.")
    values = dict(arguments)
    try:
        for name in _DECIMALS & set(values):
            values[name] = Decimal(str(values[name]))
        if "variants" in values:
            values["variants"] = [
                (str(name), int(version), Decimal(str(percent)))
                for name, version, percent in values["variants"]
            ]
        return verb(**values)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise _invalid("/arguments", f"The arguments of {action} are not its own: {exc}") from exc


def _invalid(pointer: str, detail: str) -> ReleaseInvalid:
    return ReleaseInvalid([Problem("invalid_change", detail, pointer)])
