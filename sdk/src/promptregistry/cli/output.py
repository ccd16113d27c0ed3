"""What the command prints: lines for people, or with ``--json`` one JSON document on stdout for
scripts. Progress and errors go to stderr either way, so stdout holds only the result."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TextIO


class Output:
    def __init__(
        self, *, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._progress_shown = False

    def result(self, data: Any, lines: Iterable[str] = ()) -> None:
        """The command's result: ``data`` as JSON, or ``lines`` as text."""
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            return
        for line in lines:
            self.stdout.write(line + "\n")

    def say(self, line: str) -> None:
        """A line for people as the command goes (left out of ``--json``'s stdout)."""
        if not self.as_json:
            self.stdout.write(line + "\n")

    def progress(self, line: str) -> None:
        """A progress line on stderr: rewritten in place on a terminal, one line each time it
        changes elsewhere (a CI log)."""
        if self.stderr.isatty():
            self.stderr.write("\r\033[K" + line)
            self._progress_shown = True
        else:
            self.stderr.write(line + "\n")
        self.stderr.flush()

    def progress_end(self) -> None:
        if self._progress_shown:
            self.stderr.write("\n")
            self._progress_shown = False

    def warn(self, message: str) -> None:
        """A message on stderr alone: the result, if any, is printed already."""
        self.progress_end()
        self.stderr.write(f"promptregistry: {message}\n")

    def error(self, message: str, data: Mapping[str, Any]) -> None:
        self.progress_end()
        self.stderr.write(f"promptregistry: {message}\n")
        if self.as_json:
            self.stdout.write(
                json.dumps({"error": dict(data)}, indent=2, ensure_ascii=False) + "\n"
            )


def table(rows: list[list[str]]) -> list[str]:
    """Rows as columns padded to their widest cell; the first row is the header."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
