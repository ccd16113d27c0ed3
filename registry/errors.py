"""The registry's domain errors and the ``Problem`` they carry.

Services and pure modules raise these; ``api.problems`` maps them to RFC 9457 problem documents and
the admin shows their problems in place. None of them knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong (or worth a look) in what an author wrote.

    ``pointer`` is a JSON Pointer into the request body the author sent (``/templates/fr/instruction``,
    ``/variables/2/type``), so an API client and the admin can both put the message next to its field.
    """

    code: str
    detail: str
    pointer: str = ""
    line: int | None = None
    severity: Severity = Severity.ERROR

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "code": self.code,
            "detail": self.detail,
            "pointer": self.pointer,
        }
        if self.line is not None:
            data["line"] = self.line
        if self.severity is not Severity.ERROR:
            data["severity"] = str(self.severity)
        return data


def errors_only(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is Severity.ERROR]


class RegistryError(Exception):
    """Base of the registry's domain errors. ``message`` is a user-facing sentence."""

    message = "The request could not be applied."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message


class ProblemsError(RegistryError):
    """A domain error that lists every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem], message: str | None = None) -> None:
        self.problems = list(problems)
        super().__init__(message)


class TemplateInvalid(ProblemsError):
    message = "The prompt's templates are not valid."


class VariablesInvalid(ProblemsError):
    message = "The variables do not match the ones the version declares."


class ConversationInvalid(ProblemsError):
    message = "The conversation is not valid."


class ContentInvalid(ProblemsError):
    message = "The version's content is not valid."


class RenderFailed(ProblemsError):
    message = "The prompt could not be rendered with these variables."


class LocaleInvalid(RegistryError):
    message = "That is not a valid BCP 47 language tag."


class LocaleUnavailable(RegistryError):
    message = "The version has no template for that locale or any of its fallbacks."


class PromptNotFound(RegistryError):
    message = "There is no prompt with that key."


class PromptExists(RegistryError):
    message = "A prompt with that key exists already."


class PromptInvalid(ProblemsError):
    message = "The prompt's fields are not valid."


class VersionNotFound(RegistryError):
    message = "The prompt has no version with that number."


class VersionImmutable(RegistryError):
    message = "A committed version never changes; start a new draft from it instead."


class DraftExists(RegistryError):
    """A prompt has at most one draft, so two authors never edit diverging drafts unknowingly."""

    message = "The prompt has an open draft already; edit, commit or discard it first."

    def __init__(self, draft_number: int, message: str | None = None) -> None:
        self.draft_number = draft_number
        super().__init__(
            message
            or f"The prompt has an open draft already (version {draft_number}); "
            "edit, commit or discard it first."
        )


class DraftConflict(RegistryError):
    """The draft changed since the caller read it: its content hash moved on (``If-Match``)."""

    message = "The draft changed since you read it; reload it and apply your change again."

    def __init__(self, current_tag: str) -> None:
        self.current_tag = current_tag
        super().__init__()
