"""Package docstrings name modules that exist (issue 14: prose that is true).

A package's docstring is where a reader looks for its layout. Two kinds of names are held to the
files: a module named in the package's own module list (a paragraph that starts with "Modules",
or a bullet ``- ``name``: …``) must be a submodule of that package; and a dotted name that starts
with one of the project's packages (``releases.cache``, ``evaluations.canary.services.x``) must
import, up to its last part, which may be an attribute of the module.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
APPS = ("api", "config", "evaluations", "registry", "releases", "runs", "webhooks")
PROJECT = (*APPS, "promptregistry")
NAME = re.compile(r"``([A-Za-z_][\w.]*)``")
BULLET = re.compile(r"^\s*- ``([A-Za-z_][\w.]*)``[:,]", re.M)


def packages() -> list[tuple[str, Path]]:
    found = []
    for base in [ROOT / app for app in APPS] + [ROOT / "sdk" / "src" / "promptregistry"]:
        for init in sorted(base.rglob("__init__.py")):
            if "migrations" in init.parts:
                continue
            relative = init.parent.relative_to(
                ROOT / "sdk" / "src" if "sdk" in init.parts else ROOT
            )
            found.append((".".join(relative.parts), init))
    return found


def docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def listed_modules(text: str) -> set[str]:
    """The bullets' names, and the names of the sentence that starts with "Modules" (what its
    parentheses say about each module is left out: classes, other apps)."""
    names = set(BULLET.findall(text))
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.lstrip().startswith("Modules"):
            sentence = paragraph
            while re.search(r"\([^()]*\)", sentence):
                sentence = re.sub(r"\([^()]*\)", "", sentence)
            names |= set(NAME.findall(re.split(r"\.\s", sentence, maxsplit=1)[0]))
    return names


def is_submodule(package: Path, name: str) -> bool:
    path = package.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(value, attribute):
                return False
            value = getattr(value, attribute)
        return True
    return False


def is_permission(dotted: str) -> bool:
    """``releases.deploy_release``: a permission of one of the app's models, not a module."""
    app, _, codename = dotted.partition(".")
    try:
        config = apps.get_app_config(app)
    except LookupError:
        return False
    for model in config.get_models():
        meta = model._meta
        if codename in {f"{action}_{meta.model_name}" for action in meta.default_permissions}:
            return True
        if codename in {name for name, _ in meta.permissions}:
            return True
    return False


PACKAGES = packages()


@pytest.mark.parametrize(("name", "init"), PACKAGES, ids=[name for name, _ in PACKAGES])
def test_a_package_docstring_names_modules_that_exist(name: str, init: Path) -> None:
    text = docstring(init)
    missing = sorted(m for m in listed_modules(text) if "." not in m and not is_submodule(init, m))
    unresolved = sorted(
        d
        for d in set(NAME.findall(text))
        if "." in d and d.split(".")[0] in PROJECT and not resolves(d) and not is_permission(d)
    )
    assert (missing, unresolved) == ([], []), f"{name}: stale names in its docstring"


def test_the_check_finds_a_stale_name(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        '"""Modules: ``here`` (``Here``), ``gone``. Imports ``elsewhere``."""\n'
    )
    (package / "here.py").write_text("")
    text = docstring(package / "__init__.py")
    assert sorted(
        m for m in listed_modules(text) if not is_submodule(package / "__init__.py", m)
    ) == ["gone"]
    assert resolves("releases.cache.release_cache")
    assert not resolves("releases.queries")
    assert not resolves("runs.execution.prompt_run")
    assert is_permission("releases.deploy_release")
    assert not is_permission("releases.queries")
