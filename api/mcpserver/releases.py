"""Tools over environments and releases: what each environment serves and how it got there
(``prompts:read``), and a change to a release (``releases:write``). Each calls what its API view
calls; a change goes through the same release service, rules and promotion gates."""

from __future__ import annotations

from typing import Any

from releases.selectors import environment_list, release_get, release_history

from ..models import Scope
from ..releases import (
    EnvironmentSerializer,
    ReleaseCanaryAbortApi,
    ReleaseCanaryPercentApi,
    ReleaseCanaryPromoteApi,
    ReleaseCanaryStartApi,
    ReleaseChangeApi,
    ReleaseDeployApi,
    ReleaseEventSerializer,
    ReleaseExperimentStartApi,
    ReleaseExperimentStopApi,
    ReleaseOutputSerializer,
    ReleaseRollbackApi,
    ReleaseShadowStartApi,
    ReleaseShadowStopApi,
    release_target,
)
from .arguments import operation_arguments
from .prompts import KEY
from .tools import PAGE_NOTES, Tool, ToolCall, page_of

ENVIRONMENT = "An environment's name, e.g. `production` (`list_environments` lists them)."

# Each release change as the API serves it: its view (input serializer and service) and the
# operation whose body the change's members are. The action is the operation's name.
CHANGES: dict[str, tuple[type[ReleaseChangeApi], str]] = {
    operation.removeprefix("releases_"): (view, operation)
    for view, operation in (
        (ReleaseDeployApi, "releases_deploy"),
        (ReleaseCanaryStartApi, "releases_canary_start"),
        (ReleaseCanaryPercentApi, "releases_canary_percent"),
        (ReleaseCanaryPromoteApi, "releases_canary_promote"),
        (ReleaseCanaryAbortApi, "releases_canary_abort"),
        (ReleaseExperimentStartApi, "releases_experiment_start"),
        (ReleaseExperimentStopApi, "releases_experiment_stop"),
        (ReleaseShadowStartApi, "releases_shadow_start"),
        (ReleaseShadowStopApi, "releases_shadow_stop"),
        (ReleaseRollbackApi, "releases_rollback"),
    )
}


def _target(call: ToolCall):
    return release_target(
        call.api_key, environment=call.arguments["environment"], key=call.arguments["key"]
    )


def list_environments(call: ToolCall) -> dict[str, Any]:
    # A key limited to environments sees those only, as on the API.
    environments = environment_list(names=call.api_key.environments)
    return {"environments": EnvironmentSerializer(environments, many=True).data}


def get_release(call: ToolCall) -> dict[str, Any]:
    prompt, environment = _target(call)
    return ReleaseOutputSerializer(release_get(prompt=prompt, environment=environment)).data


def get_release_history(call: ToolCall) -> dict[str, Any]:
    prompt, environment = _target(call)
    release = release_get(prompt=prompt, environment=environment)
    return page_of(call, release_history(release=release), ReleaseEventSerializer)


def propose_release_change(call: ToolCall) -> dict[str, Any]:
    prompt, environment = _target(call)
    members = dict(call.arguments["change"])
    view, _ = CHANGES[members.pop("action")]
    data = view.InputSerializer(data=members)
    data.is_valid(raise_exception=True)
    release = view().change(
        prompt=prompt,
        environment=environment,
        actor=call.actor,
        expected_revision=call.arguments.get("expected_revision"),
        **data.validated_data,
    )
    return ReleaseOutputSerializer(release).data


def change_schema() -> dict[str, Any]:
    """``propose_release_change``'s arguments: the release (the path's ``key`` and
    ``environment``), the change as one of the release operations' bodies with its ``action``,
    and the revision read (the API's ``If-Match``)."""
    path = operation_arguments("releases_deploy").properties
    changes = []
    for action, (_, operation) in CHANGES.items():
        arguments = operation_arguments(operation)
        body = {n: s for n, s in arguments.properties.items() if n in arguments.body}
        changes.append(
            {
                "type": "object",
                "title": action,
                "properties": {"action": {"const": action}, **body},
                "required": ["action", *(n for n in arguments.required if n in body)],
                "additionalProperties": False,
            }
        )
    return {
        "type": "object",
        "properties": {
            "key": path["key"],
            "environment": path["environment"],
            "change": {
                "type": "object",
                "description": "The change: `action` and that action's members.",
                "properties": {"action": {"enum": list(CHANGES)}},
                "required": ["action"],
                "oneOf": changes,
            },
            "expected_revision": {
                "type": "integer",
                "minimum": 0,
                "description": "The release's `revision` as you read it (`get_release`): the "
                "change is refused (`stale-revision`, with `current_revision`) if the release "
                "moved on since. Left out: whatever the revision.",
            },
        },
        "required": ["key", "environment", "change"],
    }


TOOLS = (
    Tool(
        name="list_environments",
        title="List environments",
        scope=Scope.PROMPTS_READ,
        operation="environments_list",
        read_only=True,
        run=list_environments,
        description=(
            "Lists the environments releases are made to, in order (e.g. development, staging, "
            "production), each with whether it takes only versions that have been stable in "
            "the one before (`requires_previous_stable`). A key limited to some environments "
            "sees those only."
        ),
        examples=({},),
    ),
    Tool(
        name="get_release",
        title="Read a release",
        scope=Scope.PROMPTS_READ,
        operation="releases_retrieve",
        read_only=True,
        run=get_release,
        description=(
            "What a prompt serves in one environment now: its `stable` version, a running "
            "`canary` (version and percent of subjects), an `experiment` (variants with their "
            "versions and percents), a `shadow` (versions run beside live calls, never served), "
            "and the release's `revision` (send it as `expected_revision` with a change). Use "
            'it to answer "what does production serve?" and before proposing a change.'
        ),
        notes={"key": KEY, "environment": ENVIRONMENT},
        examples=({"key": "support.refund-reply", "environment": "production"},),
    ),
    Tool(
        name="get_release_history",
        title="Read a release's history",
        scope=Scope.PROMPTS_READ,
        operation="releases_history",
        read_only=True,
        run=get_release_history,
        description=(
            "The changes made to a prompt's release in one environment, newest first, one page "
            "at a time: each with its action (deploy, canary_start, rollback...), who made it "
            "and why, the whole state before and after, and the promotion gates it overrode. "
            "Use it to explain how the release got to where it is, or to pick an event to roll "
            "back to (`rollback` with `to_event`)."
        ),
        notes={"key": KEY, "environment": ENVIRONMENT, **PAGE_NOTES},
        examples=({"key": "support.refund-reply", "environment": "production", "page": 1},),
    ),
    Tool(
        name="propose_release_change",
        title="Propose a release change",
        scope=Scope.RELEASES_WRITE,
        read_only=False,
        destructive=True,
        run=propose_release_change,
        schema=change_schema,
        description=(
            "Changes what a prompt serves in one environment. `change.action` is one of: "
            "`deploy` (`version` becomes stable for everyone; refused while a canary runs), "
            "`canary_start` (`version` to `percent` % of subjects, or under an `analysis` "
            "policy that ramps it), `canary_percent` (ramp to `percent`), `canary_promote` (the "
            "canary becomes stable), `canary_abort` (back to stable), `experiment_start` "
            "(`name`, `variants` of `{name, version, percent}`), `experiment_stop` (optional "
            "`winner` becomes stable), `shadow_start` (`versions` run beside `sample_percent` % "
            "of live calls, never served), `shadow_stop`, and `rollback` (the state before the "
            "last change, or before event `to_event` of `get_release_history`). Give a `reason`: "
            "the history keeps it. The change is applied with the rules the API and the admin "
            "apply: only committed versions; the revision, when `expected_revision` is given; "
            "the environment order (e.g. production takes only versions stable in staging) and "
            "the promotion gates (`promotion-blocked` lists them; `override_gates: true` with a "
            "`reason` releases past them, recorded as an override). Rollback and canary abort "
            "are never blocked. Review: environments that will require a review of release "
            "changes will put a proposal up for review once change requests exist; until then "
            "every accepted change is applied at once. Read `get_release` first, and say what "
            "you are about to change before you call this."
        ),
        notes={"key": KEY, "environment": ENVIRONMENT},
        examples=(
            {
                "key": "support.refund-reply",
                "environment": "staging",
                "change": {"action": "deploy", "version": 3, "reason": "v3 passed review"},
            },
            {
                "key": "support.refund-reply",
                "environment": "production",
                "change": {"action": "canary_percent", "percent": 25, "reason": "ramp"},
                "expected_revision": 7,
            },
            {
                "key": "support.refund-reply",
                "environment": "production",
                "change": {"action": "rollback", "reason": "errors up since the ramp"},
            },
        ),
    ),
)
