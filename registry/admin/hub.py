"""A prompt's page as a hub, and the prompt list as a dashboard, filled by the apps above.

The registry sits at the bottom of the dependency graph (registry <- releases <- runs <-
evaluations) and imports nothing from the others, yet a prompt's page shows where it is released,
its datasets, eval runs, calls and A/B results. So the registry keeps two slots, the way
``registry.providers`` keeps the provider directory, and each app fills its own in
``AppConfig.ready()``:

- *panels*: a section of a prompt's page (a small table with links), one source per app;
- *columns*: extra columns of the prompt list (releases adds one per environment).

Budgets (STYLE R16): a panel reads a bounded number of rows for one prompt; a column source
fills the whole page of prompts at once in a fixed number of queries, never one per prompt. A
source returns None when the user may not see what it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from django.http import HttpRequest
from django.utils.safestring import SafeString

from registry.models import Prompt

Cell = SafeString | str


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str
    primary: bool = False


@dataclass(frozen=True, slots=True)
class Panel:
    """One section of a prompt's page: a title, a table, and links under it ("all calls")."""

    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    links: Sequence[Link] = ()
    empty: str = "None yet."
    # Where it goes on the page, smallest first: releases (10), then what was measured.
    order: int = 100
    # A line under the title, e.g. "the 10 most recent".
    note: str = ""


@dataclass(frozen=True, slots=True)
class Columns:
    """Extra columns of the prompt list: ``headers`` are (name, title) pairs; ``fill`` answers
    the cells of a page of prompts, keyed by (prompt id, column name), in a fixed number of
    queries. A missing cell shows as a dash."""

    headers: Sequence[tuple[str, str]]
    fill: Callable[[Sequence[Prompt]], Mapping[tuple[int, str], Cell]] = field(
        default=lambda prompts: {}
    )


PanelSource = Callable[[HttpRequest, Prompt], Panel | None]
ColumnSource = Callable[[HttpRequest], Columns | None]

_panels: dict[str, PanelSource] = {}
_columns: dict[str, ColumnSource] = {}


def prompt_panel_register(name: str, source: PanelSource | None) -> None:
    """Makes ``source`` answer the panel ``name``; None removes it. Registering again replaces
    it (``ready()`` may run twice in tests)."""
    if source is None:
        _panels.pop(name, None)
    else:
        _panels[name] = source


def prompt_columns_register(name: str, source: ColumnSource | None) -> None:
    """Makes ``source`` answer the list columns ``name``; None removes it."""
    if source is None:
        _columns.pop(name, None)
    else:
        _columns[name] = source


def prompt_panels(request: HttpRequest, prompt: Prompt) -> list[Panel]:
    """The panels this user may see on the prompt's page, in page order."""
    panels = [p for source in _panels.values() if (p := source(request, prompt)) is not None]
    return sorted(panels, key=lambda p: p.order)


def prompt_columns(request: HttpRequest) -> list[Columns]:
    """The extra list columns this user may see, in registration order."""
    return [c for source in _columns.values() if (c := source(request)) is not None]
