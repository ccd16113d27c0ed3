"""The SDK's errors: one base class, so a service can catch everything the registry raises.

Errors that list problems (``VariablesInvalid``, ``RenderError``) carry them as the server's
problem documents do: dicts with ``code``, ``detail``, ``pointer`` (a JSON Pointer such as
``/variables/customer_name`` or ``/templates/fr/instruction``) and, for a template, ``line``.
The codes and pointers are the server's, so a service can handle a local render and a server
answer the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class RegistryError(Exception):
    """Base of every error the SDK raises. ``message`` is a sentence meant for people."""

    message = "The prompt registry could not answer."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or type(self).message
        super().__init__(self.message)


class PromptNotFound(RegistryError):
    message = "There is no prompt with that key in this environment."


class NotReleased(PromptNotFound):
    """The prompt has a release in the environment, but no version is served (no stable)."""

    message = "The prompt has no version released in this environment."


class RegistryUnavailable(RegistryError):
    message = "The registry cannot be reached and there is no last-known-good bundle."


class BundleInvalid(RegistryError):
    """A bundle the SDK cannot serve from: malformed, or computed with another hash version.

    The client keeps serving the bundle it had; a new one is never half applied."""

    message = "The environment's bundle is not one this SDK can read."


class LocaleInvalid(RegistryError, ValueError):
    message = "That is not a valid BCP 47 language tag."


class LocaleUnavailable(RegistryError):
    message = "The version has no template for that locale or any of its fallbacks."


class _ProblemsError(RegistryError):
    """An error listing every problem found, not only the first."""

    def __init__(self, errors: Iterable[Mapping[str, object]], message: str | None = None) -> None:
        self.errors: list[dict[str, object]] = [dict(error) for error in errors]
        super().__init__(message)

    def __str__(self) -> str:
        details = "; ".join(str(error.get("detail", "")) for error in self.errors)
        return f"{self.message} {details}" if details else self.message


class VariablesInvalid(_ProblemsError):
    """Unknown, missing or wrongly typed variables (codes ``unknown_variable``,
    ``missing_variable``, ``wrong_type``), every one listed in ``errors``."""

    message = "The variables do not match the ones the version declares."


class RenderError(_ProblemsError):
    """A template could not be rendered: ``template_syntax``, ``template_forbidden``,
    ``undefined``, ``render_too_large``, ``render_too_complex``, ``render_too_slow`` or
    ``render_error``."""

    message = "The prompt could not be rendered with these variables."
