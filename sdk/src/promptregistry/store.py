"""The last-known-good bundle on disk: what a client serves when it starts while the registry is down.

One file per environment, ``<cache_dir>/<environment>.json``: the bundle exactly as the server
sent it, with its ETag and when it was saved. Every good bundle replaces the file atomically (a
temporary file in the same directory, flushed and fsynced, then ``os.replace``), so a crash or a
second process never leaves a half-written file for the next start to read. A file that cannot be
read or parsed is treated as absent (and logged), never as an error of the caller.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

logger = logging.getLogger(__name__)

# The file's own format: a reader meeting another number ignores the file instead of misreading it.
FORMAT = 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class Saved:
    """A bundle read back from disk: the server's JSON body, its ETag and when it was saved."""

    etag: str
    bundle: Mapping[str, Any]
    saved_at: float  # seconds since the epoch


class BundleStore:
    """Reads and writes ``<directory>/<environment>.json``. Thread-safe: writes never share a
    temporary file, and ``os.replace`` makes the last one win whole."""

    def __init__(self, directory: str | os.PathLike[str], environment: str) -> None:
        self.directory = Path(directory)
        # Environment names are slugs on the server; anything else is quoted, never a path.
        name = environment if _SAFE_NAME.fullmatch(environment) else quote(environment, safe="")
        self.path = self.directory / f"{name}.json"

    def save(self, *, etag: str, bundle: Mapping[str, Any]) -> bool:
        """Writes the bundle atomically; False (and a warning) when the disk refuses: the client
        keeps serving from memory either way."""
        payload = json.dumps(
            {"format": FORMAT, "etag": etag, "saved_at": time.time(), "bundle": bundle},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        temporary = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # mkstemp creates the file 0600: prompts are the service's business, not the host's.
            fd, temporary = tempfile.mkstemp(
                dir=self.directory, prefix=f".{self.path.stem}.", suffix=".tmp"
            )
            with os.fdopen(fd, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
            temporary = None
            self._sync_directory()
        except OSError:
            logger.warning(
                "Could not save the last-known-good bundle to %s", self.path, exc_info=True
            )
            return False
        finally:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        return True

    def load(self) -> Saved | None:
        """The saved bundle, or None when there is none or it cannot be read (logged)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError:
            logger.warning("Could not read the last-known-good bundle %s", self.path, exc_info=True)
            return None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            logger.warning("Ignoring a corrupt last-known-good bundle %s", self.path)
            return None
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or not isinstance(data.get("etag"), str)
            or not isinstance(data.get("bundle"), dict)
            or not isinstance(data.get("saved_at"), (int, float))
        ):
            logger.warning("Ignoring a last-known-good file of an unknown shape: %s", self.path)
            return None
        return Saved(etag=data["etag"], bundle=data["bundle"], saved_at=float(data["saved_at"]))

    def _sync_directory(self) -> None:
        # The rename itself is durable only once the directory entry is (POSIX); Windows cannot
        # open a directory, and there os.replace is as good as it gets.
        if os.name != "posix":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
