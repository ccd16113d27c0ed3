"""Release changes: deploy, canary, experiment, shadow, rollback (STYLE R1, R3, R5, R6).

Every change follows the same steps, in one transaction:

1. lock the release row (creating it on first use), in the project's lock order: prompt first;
2. compare the caller's revision *inside* the lock (a revision read outside it is stale by the
   time we write) and refuse a stale one with ``ReleaseConflict``;
3. compute the new state from the locked row, validating versions, percents and gates;
4. save with ``update_fields``, bump the revision, write the ``ReleaseEvent`` with the full state
   before and after;
5. after commit, tell every web node (``releases.cache``): never from inside the transaction.
"""

from __future__ import annotations

from .changes import (
    release_canary_abort,
    release_canary_promote,
    release_canary_set_percent,
    release_canary_start,
    release_deploy,
    release_experiment_start,
    release_experiment_stop,
    release_shadow_start,
    release_shadow_stop,
)
from .common import (
    STATE_FIELDS,
    ensure_revision_matches,
    environment_order_refusal,
    percent_to_basis_points,
)
from .rollback import release_rollback, rollback_target

__all__ = [
    "STATE_FIELDS",
    "ensure_revision_matches",
    "environment_order_refusal",
    "percent_to_basis_points",
    "release_canary_abort",
    "release_canary_promote",
    "release_canary_set_percent",
    "release_canary_start",
    "release_deploy",
    "release_experiment_start",
    "release_experiment_stop",
    "release_rollback",
    "release_shadow_start",
    "release_shadow_stop",
    "rollback_target",
]
