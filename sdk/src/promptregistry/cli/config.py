"""Where the command finds the registry and its key.

Each setting is taken from the first place that has it (decision 0044):

1. the command line (``--url``, ``--timeout``; the key never: a command line is seen by every
   user of the machine in its process list);
2. the environment (``PROMPTREGISTRY_URL``, ``PROMPTREGISTRY_API_KEY``,
   ``PROMPTREGISTRY_TIMEOUT``);
3. the project's file, ``promptregistry.toml`` in the working directory or the nearest of its
   parents (meant to be committed: the URL, not the key);
4. the user's file, ``$XDG_CONFIG_HOME/promptregistry/config.toml`` (by default
   ``~/.config/promptregistry/config.toml``).

``--config FILE`` (or ``PROMPTREGISTRY_CONFIG``) names one file that takes the place of 3 and 4.
A file holds ``url``, ``api_key`` and ``timeout`` at its top level; anything else in it is an
error, as is a file named that does not exist: a typo never silently falls back to another
registry.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CliError

URL_VARIABLE = "PROMPTREGISTRY_URL"
API_KEY_VARIABLE = "PROMPTREGISTRY_API_KEY"
TIMEOUT_VARIABLE = "PROMPTREGISTRY_TIMEOUT"
CONFIG_VARIABLE = "PROMPTREGISTRY_CONFIG"
PROJECT_FILE = "promptregistry.toml"
DEFAULT_TIMEOUT = 30.0
SETTINGS = ("url", "api_key", "timeout")
# A config file is a few lines; anything larger is not one.
CONFIG_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    url: str
    api_key: str
    timeout: float
    # Where each setting came from ("--url", "PROMPTREGISTRY_URL", a file's path): said in errors.
    sources: Mapping[str, str] = field(default_factory=dict)


def user_config_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "promptregistry" / "config.toml"


def project_config_path(cwd: Path) -> Path | None:
    for directory in (cwd, *cwd.parents):
        candidate = directory / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            raw = file.read(CONFIG_MAX_BYTES + 1)
    except OSError as exc:
        raise CliError(f"Cannot read the config file {path}: {exc.strerror or exc}.") from exc
    if len(raw) > CONFIG_MAX_BYTES:
        raise CliError(f"{path} is larger than {CONFIG_MAX_BYTES} bytes: not a config file.")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"{path} is not valid TOML: {exc}.") from exc
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise CliError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; a config file holds "
            f"{', '.join(SETTINGS)}."
        )
    for name in ("url", "api_key"):
        if name in data and not (isinstance(data[name], str) and data[name]):
            raise CliError(f"{path}: {name} must be a non-empty string.")
    return data


def _timeout(value: Any, source: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (math.isfinite(seconds) and seconds > 0):
        raise CliError(f"The timeout from {source} must be a number of seconds above 0.")
    return seconds


def settings_load(
    *,
    url: str | None = None,
    timeout: float | None = None,
    config: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """The settings, each from the first place that has it (the module's docstring)."""
    environ = os.environ if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    layers: list[tuple[str, Mapping[str, Any]]] = [
        ("--url/--timeout", {"url": url, "timeout": timeout}),
        (
            "the environment",
            {
                "url": environ.get(URL_VARIABLE),
                "api_key": environ.get(API_KEY_VARIABLE),
                "timeout": environ.get(TIMEOUT_VARIABLE),
            },
        ),
    ]
    named = config or environ.get(CONFIG_VARIABLE)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise CliError(f"The config file {path} does not exist.")
        files = [path]
    else:
        project = project_config_path(cwd)
        user = user_config_path(environ)
        files = [p for p in (project, user) if p is not None and p.is_file()]
    layers += [(str(path), _read_file(path)) for path in files]

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for name in SETTINGS:
            if name not in values and layer.get(name) not in (None, ""):
                values[name], sources[name] = layer[name], source
    looked = f"{', '.join(str(p) for p in files)}" if files else "no config file found"
    if "url" not in values:
        raise CliError(
            f'No registry URL: set {URL_VARIABLE}, pass --url, or put url = "https://…" in '
            f"{PROJECT_FILE} (looked in: {looked})."
        )
    if "api_key" not in values:
        raise CliError(
            f"No API key: set {API_KEY_VARIABLE} (or api_key in {user_config_path(environ)}; "
            f"looked in: {looked})."
        )
    registry_url = str(values["url"]).rstrip("/")
    if not registry_url.startswith(("http://", "https://")):
        raise CliError(
            f"The registry URL from {sources['url']} must start with https:// or http://."
        )
    seconds = (
        _timeout(values["timeout"], sources["timeout"]) if "timeout" in values else DEFAULT_TIMEOUT
    )
    return Settings(registry_url, str(values["api_key"]), seconds, sources)
