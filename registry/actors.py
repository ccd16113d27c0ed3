"""Who did it: the acting user or API key, as services record it.

Services take an explicit ``actor`` (STYLE R1). The registry is the bottom app, so the actor is a
plain value here; ``api`` turns an API key into one, the admin turns a user into one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    label: str  # what history shows: a username, or "key:<name>" for an API key
    user_id: int | None = None

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(label=user.get_username(), user_id=user.pk)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(label=label)
