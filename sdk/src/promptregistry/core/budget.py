"""What one render may spend, charged *before* the work wherever the work's size is known.

``RenderBudget`` holds four limits for one render (its four sections together):

- ``output``: characters rendered, at most ``max_chars``;
- ``work``: characters of text built or read on the way (filter inputs and results, ``~``,
  method calls on text, captured blocks), at most ``max_chars * WORK_FACTOR``;
- ``steps``: loop iterations, calls (``CALL_STEPS`` each), and every item an operation touches
  (a filter over a list of n items costs n, a new list or dict costs its length), at most
  ``max_steps``;
- a wall-clock ``deadline`` (seconds), read every ``CLOCK_EVERY`` steps: the backstop for what
  no counter sees, such as one comparison of two large values inside a loop.

Values built by a template are *weighed* (``weigh``): the number of characters they would print
as, counting a nested value each time it appears. The weight of every list, tuple and dict seen in
a render is remembered by identity, so weighing a new container costs one lookup per item (its
length, charged as steps), and a template that nests a value in itself
(``{% set ns.l = [ns.l, ns.l] %}``) is refused after about twenty doublings instead of building a
structure whose printing, comparing or hashing would run for ever. A printed value (``{{ x }}``,
``~``, ``|string``, ``|tojson``) is refused when its weight exceeds ``max_chars``, before
anything walks it.

Pure module: no Jinja, no Django, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

MAX_RENDER_CHARS = 200_000
# Steps: a loop iteration is one, a call (macro, method, global, filter) costs CALL_STEPS because
# it costs about that much more time, and an operation over a list costs one per item it touches.
# A million steps is about a second of CPU at worst; prompts use a few thousand.
MAX_RENDER_STEPS = 1_000_000
CALL_STEPS = 5
# Text built along the way may be this many times the output cap: a chain of filters over a
# long document builds several copies of it.
WORK_FACTOR = 10
# Every render ends within this many milliseconds or is refused (render_too_slow).
RENDER_DEADLINE_MS = 250.0
# The clock is read once this many steps (or characters / TEXT_PER_STEP) have been charged since
# it was last read: often enough that a render overruns its deadline by well under a millisecond
# of counted work, rarely enough that reading it costs nothing next to the work.
CLOCK_EVERY = 64
TEXT_PER_STEP = 64
# Values nested deeper than this are not walked (the caller's variables arrive as trees that a
# template can wrap further; Python's own recursion limit is about 1000).
MAX_WALK_DEPTH = 200

_CONTAINERS = (list, tuple, dict)


class BudgetExceeded(Exception):
    """A render went over one of its budgets; ``code`` is the problem code to report."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _scalar_weight(value: object) -> int:
    """What a value that is not a container prints as, about (``repr`` inside a container)."""
    kind = type(value)
    if kind is str:
        return len(value) + 2  # type: ignore[arg-type]
    if kind is int:
        # Decimal digits, without building them: bit_length * log10(2) ≈ * 77 / 256.
        return (value.bit_length() * 77 >> 8) + 2  # type: ignore[attr-defined]
    if isinstance(value, str):
        return len(value) + 2
    return 8  # floats, booleans, None; anything else is refused when printed


class RenderBudget:
    """What one render may still spend, across its four sections (see the module docstring)."""

    __slots__ = (
        "_clock",
        "_countdown",
        "_deadline_at",
        "_weights",
        "deadline",
        "max_chars",
        "max_steps",
        "max_work",
        "output",
        "steps",
        "work",
    )

    def __init__(
        self,
        max_chars: int = MAX_RENDER_CHARS,
        max_steps: int = MAX_RENDER_STEPS,
        deadline: float | None = RENDER_DEADLINE_MS / 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_chars = max_chars
        self.max_steps = max_steps
        self.max_work = max_chars * WORK_FACTOR
        self.deadline = deadline
        self.output = self.work = self.steps = 0
        self._clock = clock
        self._deadline_at = clock() + deadline if deadline is not None else None
        self._countdown = CLOCK_EVERY
        # id -> (the container, its weight): the container is kept so that its id cannot be
        # reused by a new value within the render. Bounded by the step budget (weighing charges
        # each container's length).
        self._weights: dict[int, tuple[object, int]] = {}

    # --- the counters ---------------------------------------------------------------------

    def _tick(self, cost: int) -> None:
        self._countdown -= cost
        if self._countdown <= 0:
            self.check_clock()

    def check_clock(self) -> None:
        """Refuse the render once it is past its deadline."""
        self._countdown = CLOCK_EVERY
        if self._deadline_at is not None and self._clock() > self._deadline_at:
            milliseconds = (self.deadline or 0) * 1000
            raise BudgetExceeded(
                "render_too_slow",
                f"The template runs longer than its deadline of {milliseconds:g} ms.",
            )

    def emit(self, chunk: str) -> None:
        self.output += len(chunk)
        if self.output > self.max_chars:
            raise BudgetExceeded(
                "render_too_large",
                f"The rendered prompt is longer than {self.max_chars} characters.",
            )

    def charge_text(self, length: int) -> None:
        """``length`` characters of text built or read."""
        self.work += length
        if self.work > self.max_work:
            raise BudgetExceeded(
                "render_too_large",
                f"The template builds more than {self.max_work} characters of text on the way "
                "to its output.",
            )
        self._tick(length // TEXT_PER_STEP)

    def step(self, weight: int = 1) -> None:
        self.steps += weight
        if self.steps > self.max_steps:
            raise BudgetExceeded(
                "render_too_complex",
                f"The template runs more than {self.max_steps} steps (a loop iteration is one, "
                f"a call {CALL_STEPS}, an operation over a list one per item).",
            )
        self._tick(weight)

    def allow(self, size: int, what: str) -> None:
        """Refuse *before* building a value of ``size`` characters that could not be output."""
        if size > self.max_chars:
            raise BudgetExceeded(
                "render_too_large",
                f"{what} would build more than the {self.max_chars} characters a prompt may have.",
            )

    # --- values -----------------------------------------------------------------------------

    def charge(self, value: object) -> None:
        """Charge a value just built: text by its length, a container by its weight."""
        kind = type(value)
        if kind is str:
            self.charge_text(len(value))  # type: ignore[arg-type]
        elif kind in _CONTAINERS:
            self.weigh(value)

    def touch(self, value: object) -> None:
        """Charge reading ``value`` once over: text by its length, a container by its length
        (the items an operation such as ``max``, ``in`` or ``sort`` goes through)."""
        kind = type(value)
        if kind is str:
            self.charge_text(len(value))  # type: ignore[arg-type]
        elif kind in _CONTAINERS or kind is range:
            self.step(len(value))  # type: ignore[arg-type]
        elif isinstance(value, str):
            self.charge_text(len(value))

    def weigh(self, value: object) -> int:
        """The characters ``value`` prints as, nested values counted each time they appear.

        Refuses a value heavier than the work budget: whatever walks it (printing, ``==``,
        hashing a tuple, ``tojson``) would take that long. Each container is walked once per
        render; later weighings of it are a lookup.
        """
        weight = self._weigh(value, 0)
        if weight > self.max_work:
            raise BudgetExceeded(
                "render_too_large",
                f"The template builds a value that would print as more than {self.max_work} "
                "characters (a value nested in another counts each time it appears).",
            )
        return weight

    def printable(self, value: object, what: str) -> None:
        """Refuse to turn ``value`` into text when the text could not be output."""
        if type(value) in _CONTAINERS:
            self.allow(self.weigh(value), what)

    def _weigh(self, value: object, depth: int) -> int:
        kind = type(value)
        if kind is not list and kind is not tuple and kind is not dict:
            return _scalar_weight(value)
        known = self._weights.get(id(value))
        if known is not None:
            return known[1]
        if depth > MAX_WALK_DEPTH:
            raise BudgetExceeded(
                "render_too_complex",
                f"The template uses a value nested more than {MAX_WALK_DEPTH} levels deep.",
            )
        self.step(len(value) + 1)  # type: ignore[arg-type]
        weigh = self._weigh
        total = 2
        if kind is dict:
            for key, item in value.items():  # type: ignore[attr-defined]
                total += weigh(key, depth + 1) + weigh(item, depth + 1) + 4
        else:
            for item in value:  # type: ignore[attr-defined]
                # Flat lists of text and numbers are the common case: weighed inline.
                item_kind = type(item)
                if item_kind is str:
                    total += len(item) + 4
                elif item_kind is int:
                    total += (item.bit_length() * 77 >> 8) + 4
                else:
                    total += weigh(item, depth + 1) + 2
        self._weights[id(value)] = (value, total)
        return total


# One budget per render; a ContextVar so concurrent renders (threads, async) never share one.
_BUDGET: ContextVar[RenderBudget | None] = ContextVar("prompt_render_budget", default=None)


class budget_scope:
    """Charge everything the templates do inside the ``with`` block to ``budget``.

    A class rather than a ``@contextmanager`` generator: it is entered on every render, and
    costs a tenth as much."""

    __slots__ = ("_budget", "_token")

    def __init__(self, budget: RenderBudget) -> None:
        self._budget = budget

    def __enter__(self) -> RenderBudget:
        self._token = _BUDGET.set(self._budget)
        return self._budget

    def __exit__(self, *exc_info: object) -> None:
        _BUDGET.reset(self._token)


def current_budget() -> RenderBudget:
    # Outside budget_scope (Jinja folding constants at compile time) a fresh default budget still
    # applies the per-value limits.
    budget = _BUDGET.get()
    return budget if budget is not None else RenderBudget(deadline=None)
