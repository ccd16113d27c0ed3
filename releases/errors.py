"""The releases app's domain errors."""

from __future__ import annotations

from registry.errors import Problem, ProblemsError, RegistryError


class EnvironmentNotFound(RegistryError):
    message = "There is no environment with that name."


class ReleaseNotFound(RegistryError):
    message = "The prompt has never been released in that environment."


class ReleaseConflict(RegistryError):
    """The caller's ``If-Match`` revision is not the release's current one."""

    message = "The release changed since you read it; reload it and decide again."

    def __init__(self, current_revision: int) -> None:
        self.current_revision = current_revision
        super().__init__(
            f"The release is at revision {current_revision}, not the one you read; "
            "reload it and decide again."
        )


class ReleaseChangeForbidden(RegistryError):
    """The actor may not change releases in the environment (``releases.rights``); the message
    says who may, or what the actor lacks."""

    message = "You may not change releases in that environment."

    def __init__(self, message: str, *, environment: str) -> None:
        self.environment = environment
        super().__init__(message)


class ReleaseStateInvalid(RegistryError):
    """The change does not apply to the release as it is (no canary to ramp, one running…)."""

    message = "That change does not apply to the release in its current state."


class ReleaseInvalid(ProblemsError):
    """The change's own values are wrong (a percent out of range, weights over 100 %…)."""

    message = "The release change is not valid."


class VersionNotReleasable(RegistryError):
    message = "Only a committed version can be released."


class PromotionBlocked(RegistryError):
    """A promotion gate or the environment order refuses the version."""

    message = "The version may not be released here yet."

    def __init__(
        self, message: str, *, gate: str, failed: tuple[dict, ...] = (), version: int | None = None
    ) -> None:
        self.gate = gate
        # Every gate that failed ({"gate", "detail"}), not only the first: an author fixes all
        # of them in one go, and an override names each one it overrides.
        self.failed = failed or ({"gate": gate, "detail": message},)
        self.version = version  # the version refused, when one is
        super().__init__(message)


class NothingToRollBack(RegistryError):
    message = "There is no change left to roll back."


def percent_problem(pointer: str, detail: str) -> Problem:
    return Problem("invalid_percent", detail, pointer)


class ScheduleExists(RegistryError):
    """The release has an active schedule already: one at a time, so two plans never race."""

    message = "The release has an active schedule already; cancel it before scheduling again."


class ScheduleNotFound(RegistryError):
    message = "The release has never been scheduled."


class ScheduleRefused(RegistryError):
    """Something else steers the release (a canary under automatic analysis): a schedule would
    fight it, so it is refused (``releases.schedule_checks``)."""

    message = "Something else steers this release; it cannot be scheduled now."


class ScheduleEnded(RegistryError):
    message = "The schedule has ended already; there is nothing left to cancel."


# --- change requests (decision 0048) ---------------------------------------------------------------


class ReviewRequired(RegistryError):
    """A change into an environment that requires review, made directly."""

    message = "This environment requires review: propose the change as a change request."

    def __init__(self, *, environment: str, action: str) -> None:
        self.environment = environment
        self.action = action
        super().__init__(
            f"{environment} requires review: {action} is proposed as a change request "
            "(POST /api/v1/change-requests, or Propose in the admin) and applied once approved. "
            "Rollback, canary abort and stopping shadows never wait."
        )


class ReviewNotRequired(RegistryError):
    """A proposal of a change that review does not hold: apply it directly."""

    message = "This change is not held for review: apply it directly."


class ChangeRequestNotFound(RegistryError):
    message = "There is no change request with that id."


class ChangeRequestClosed(RegistryError):
    """The request is not in a state that allows the step (applied, rejected, expired, not yet
    approved...)."""

    message = "The change request does not allow that in its current state."


class ReviewForbidden(RegistryError):
    """The actor may not review (or apply, or withdraw) this request."""

    message = "You may not do that to this change request."


class OwnChangeRequest(ReviewForbidden):
    """A proposer approving their own request."""

    message = "A change request is approved by someone other than its proposer."


class ChangeRequestOutdated(RegistryError):
    """The release moved since the request was proposed: what was approved is not what would
    be applied. Names the changes that moved it."""

    message = "The release changed since this request was proposed; propose the change again."

    def __init__(self, message: str, *, proposed_revision: int, current_revision: int) -> None:
        self.proposed_revision = proposed_revision
        self.current_revision = current_revision
        super().__init__(message)
