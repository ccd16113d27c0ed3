"""Who did it: the acting user or API key, as services record it.

Services take an explicit ``actor`` (STYLE R1). The registry is the bottom app, so the actor is a
plain value here; ``api`` turns an API key into one, the admin turns a user into one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    # What history shows: a username, or "key:<name>#<id>" for an API key. Labels are stored as
    # written; events recorded before the id was added read "key:<name>".
    label: str
    user_id: int | None = None
    # An API key's environment limits (``ApiKey.environments``): empty, none. The release rights
    # (``releases.rights``) refuse a key's change outside them, whichever door it came through.
    environments: tuple[str, ...] = ()
    # The registry itself (canary analysis following its policy, the demo's loader): never a
    # person or a key. A protected environment does not hold its changes for review (0048).
    is_system: bool = False

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(label=user.get_username(), user_id=user.pk)

    @classmethod
    def for_api_key(
        cls,
        *,
        name: str,
        key_id: int,
        environments: tuple[str, ...] | list[str] = (),
        owner: Any = None,
    ) -> Actor:
        """``key:ci-bot#12``: a key's name is not unique (two teams may both call theirs
        "ci-bot"), its id is, and the admin finds the key by it. A key a person owns acts as
        that person (``alice via key:laptop#3``): it may review change requests and change
        releases as they may, within the key's own environment limits."""
        label = f"key:{name}#{key_id}"
        if owner is None:
            return cls(label=label, environments=tuple(environments))
        return cls(
            label=f"{owner.get_username()} via {label}",
            user_id=owner.pk,
            environments=tuple(environments),
        )

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(label=label, is_system=True)
