"""Release changes: deploy, canary, experiment, shadow, rollback (STYLE R1, R3, R5, R6, R21).

Each verb is a small named thing, as Wagtail's actions are: a frozen ``ReleaseChange`` holding
its inputs (``Deploy(version=3)``), read top to bottom in its module (``deploy``, ``canary``,
``experiment``, ``shadow``, ``rollback``), with a ``release_<verb>`` function beside it for code
and the API. The admin's verb table names the classes (``releases.admin.verbs``).

Every change follows the same steps, in one transaction (``ReleaseChange.execute``):

0. refuse an actor who may not change releases in the environment (``releases.rights``:
   ``ReleaseChangeForbidden``, the one object-level check for every verb and every door); then,
   where the environment requires review, hold a change review holds (``ReviewRequired``) unless
   it applies an approved change request (``review``; the way back is never held);
1. check the change's own values (``check``: percents, names, an override's reason);
2. lock the release row (creating it on first use), in the project's lock order: prompt first;
3. compare the caller's revision *inside* the lock (a revision read outside it is stale by the
   time we write) and refuse a stale one with ``ReleaseConflict``;
4. ``decide`` from the locked row: a ``Decision`` with the target state (``releases.transitions``)
   after the checks that need the database (versions committed, gates), and the failing gates it
   overrode;
5. save with ``update_fields``, bump the revision, write the ``ReleaseEvent`` with the full state
   before and after and the gates overridden (``change_record``);
6. after commit, tell every web node (``releases.cache``): never from inside the transaction;
   and tell other systems through ``registry.events`` (``announce``: ``release.changed`` and the
   rest, queued in the transaction and sent after it; a gate's refusal once it rolled back).

The shared helpers are public, in ``common``. A change kept to apply later is ``stored``; a
schedule of such changes, applied by beat, is ``schedule``; a change proposed for review is a
change request (``change_requests``).
"""

from __future__ import annotations

from .canary import (
    CanaryAbort,
    CanaryPercent,
    CanaryPromote,
    CanaryStart,
    release_canary_abort,
    release_canary_promote,
    release_canary_set_percent,
    release_canary_start,
)
from .common import (
    STATE_FIELDS,
    Decision,
    GateFailure,
    PromotingChange,
    ReleaseChange,
    ensure_revision_matches,
    environment_order_refusal,
    percent_to_basis_points,
)
from .deploy import Deploy, release_deploy
from .experiment import (
    ExperimentStart,
    ExperimentStop,
    release_experiment_start,
    release_experiment_stop,
)
from .rollback import Rollback, release_rollback, rollback_target
from .schedule import PlannedStep, schedule_cancel, schedule_create, schedules_apply
from .shadow import ShadowStart, ShadowStop, release_shadow_start, release_shadow_stop

__all__ = [
    "STATE_FIELDS",
    "CanaryAbort",
    "CanaryPercent",
    "CanaryPromote",
    "CanaryStart",
    "Decision",
    "Deploy",
    "ExperimentStart",
    "ExperimentStop",
    "GateFailure",
    "PlannedStep",
    "PromotingChange",
    "ReleaseChange",
    "Rollback",
    "ShadowStart",
    "ShadowStop",
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
    "schedule_cancel",
    "schedule_create",
    "schedules_apply",
]
