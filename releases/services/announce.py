"""What a release change tells other systems (``registry.events``; schemas in docs/webhooks.md).

Every change recorded (``change_record``) is a ``release.changed`` with the full state before and
after, as the release history keeps it; a rollback is also a ``release.rolled_back``, and a
change released past failing gates also a ``gate.overridden``. A change a gate refused is a
``gate.refused``, announced by ``ReleaseChange.execute`` after the change's own transaction
rolled back. Nothing here holds a secret or a variable value: states hold versions, weights and
salts (as the history and the bundle do), reasons are what people wrote for the history.
"""

from __future__ import annotations

from typing import Any

from registry.actors import Actor
from registry.events import EventType, event_emit
from registry.models import Prompt

from ..errors import PromotionBlocked
from ..models import ChangeRequest, ChangeRequestReview, Environment, Release, ReleaseEvent


def release_change_announce(*, release: Release, event: ReleaseEvent) -> None:
    """Call inside the change's transaction, once its event is written."""
    data = release_change_data(release=release, event=event)
    where = {"prompt_id": release.prompt_id, "environment": release.environment.name}
    event_emit(EventType.RELEASE_CHANGED, data, **where)
    if event.action == ReleaseEvent.Action.ROLLBACK:
        event_emit(EventType.RELEASE_ROLLED_BACK, data, **where)
    if event.overridden_gates:
        event_emit(EventType.GATE_OVERRIDDEN, data, **where)


def release_change_data(*, release: Release, event: ReleaseEvent) -> dict[str, Any]:
    """The data of ``release.changed``, ``release.rolled_back`` and ``gate.overridden``."""
    return {
        "prompt": release.prompt.key,
        "environment": release.environment.name,
        "action": event.action,
        "event_id": event.pk,
        "revision": event.revision,
        "actor": event.actor_label,
        "reason": event.reason,
        "before": event.before,
        "after": event.after,
        "restores_event_id": event.restores_id,
        "overridden_gates": event.overridden_gates or [],
    }


def gate_refusal_announce(
    refusal: PromotionBlocked,
    *,
    prompt: Prompt,
    environment: Environment,
    action: str,
    actor: Actor,
    reason: str,
) -> None:
    """``gate.refused``: who tried which verb with which version, and every gate that refused."""
    event_emit(
        EventType.GATE_REFUSED,
        {
            "prompt": prompt.key,
            "environment": environment.name,
            "action": action,
            "version": refusal.version,
            "actor": actor.label,
            "reason": reason,
            "failed_gates": [
                {"gate": failed["gate"], "detail": failed["detail"]} for failed in refusal.failed
            ],
        },
        prompt_id=prompt.pk,
        environment=environment.name,
    )


def change_request_data(change_request: ChangeRequest) -> dict[str, Any]:
    """What ``change_request.opened`` and ``change_request.decided`` carry (docs/webhooks.md)."""
    reviews = list(change_request.reviews.all())
    return {
        "change_request_id": change_request.pk,
        "prompt": change_request.prompt.key,
        "environment": change_request.environment.name,
        "action": change_request.action,
        "arguments": change_request.change.get("arguments", {}),
        "reason": change_request.reason,
        "proposed_by": change_request.proposed_by_label,
        "proposed_revision": change_request.base_revision,
        "before": change_request.before,
        "after": change_request.after,
        "state": change_request.state,
        "approvals": [
            r.reviewer_label for r in reviews if r.verdict == ChangeRequestReview.Verdict.APPROVE
        ],
        "approvals_required": change_request.environment.approvals_required,
        "expires_at": change_request.expires_at.isoformat(),
        "release_event_id": change_request.release_event_id,
    }


def change_request_opened_announce(change_request: ChangeRequest) -> None:
    """``change_request.opened``: inside the proposal's transaction."""
    event_emit(
        EventType.CHANGE_REQUEST_OPENED,
        change_request_data(change_request),
        prompt_id=change_request.prompt_id,
        environment=change_request.environment.name,
    )


def change_request_decided_announce(
    change_request: ChangeRequest, *, by: str, comment: str = ""
) -> None:
    """``change_request.decided``: the request reached a state (approved, rejected, applied,
    withdrawn, expired), ``by`` whom, with the comment of the review that decided it."""
    event_emit(
        EventType.CHANGE_REQUEST_DECIDED,
        {**change_request_data(change_request), "decided_by": by, "comment": comment},
        prompt_id=change_request.prompt_id,
        environment=change_request.environment.name,
    )
