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
from ..models import Environment, Release, ReleaseEvent


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
