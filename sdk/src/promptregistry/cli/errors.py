"""The command's exit codes and its errors, each a sentence for the person reading stderr."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    OK = 0
    # diff: the files differ from the registry; eval: a promotion gate would refuse the version;
    # release: a promotion gate refused the change.
    REFUSED = 1
    # A wrong command line, no configuration, a registry that cannot be reached or that refused
    # the request (its problem document is shown), a bad file: nothing was changed.
    ERROR = 2
    INTERRUPTED = 130


class CliError(Exception):
    """Ends the command with ``message`` on stderr and ``exit_code``."""

    def __init__(self, message: str, *, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def as_json(self) -> dict[str, Any]:
        return {"message": self.message}


class ProblemError(CliError):
    """The registry refused a request with an RFC 9457 problem document."""

    def __init__(self, problem: Mapping[str, Any], *, exit_code: ExitCode = ExitCode.ERROR) -> None:
        self.problem = dict(problem)
        super().__init__(problem_text(self.problem), exit_code=exit_code)

    @property
    def type(self) -> str:
        return str(self.problem.get("type", ""))

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors = self.problem.get("errors")
        return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []

    def as_json(self) -> dict[str, Any]:
        return {"message": self.message, "problem": self.problem}


def problem_text(problem: Mapping[str, Any]) -> str:
    """A problem document as lines: its title and detail, then each listed problem (a prompt
    file's as ``file:line: detail (pointer)``, others as ``pointer: detail``) and each failed
    promotion gate."""
    title = str(problem.get("title") or "The registry refused the request.")
    detail = str(problem.get("detail") or "")
    gates = [g for g in problem.get("failed_gates") or () if isinstance(g, Mapping)]
    # A refusal by the gates says its detail again as its first failed gate: listed once, below.
    shown = detail and detail != title and not gates
    lines = [f"{title} {detail}" if shown else title]
    for error in problem.get("errors") or ():
        if not isinstance(error, Mapping):
            continue
        pointer = str(error.get("pointer") or "")
        text = str(error.get("detail", ""))
        if "file" in error:
            line = f":{error['line']}" if error.get("line") else ""
            lines.append(f"  {error['file']}{line}: {text}" + (f" ({pointer})" if pointer else ""))
        else:
            lines.append(f"  {pointer or '(request)'}: {text}")
    lines += [f"  {gate.get('gate')}: {gate.get('detail')}" for gate in gates]
    return "\n".join(lines)
