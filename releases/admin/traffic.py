"""What traffic moves between two release states, exactly, before anything is applied.

Pure: release states in, numbers and sentences out; no ORM. The serving rule is the one in
``releases.resolution`` (canary draws first, then the experiment, then stable), and each draw is
uniform over its own salt's 10,000 buckets, independently of the others. So:

1. every distinct salt of either state is an axis; its edges are the canary weight or the
   experiment's cumulative variant edges (a placeholder salt stands for a draw not made yet);
2. the axes' edges cut the subject space into cells (a product of bucket ranges), and inside a cell
   both states serve one version each;
3. a cell's share of subjects is the product of its ranges' lengths over 10,000;
4. summing the cells where the versions differ gives who moves from which version to which, and
   a move that is one contiguous range of one draw (the rest of every other draw) gets its bucket
   range named: "20 % of subjects (canary buckets 500–2499) move from version 7 to version 8".

Worked example: canary 8 @ 5 % ramped to 25 % with the same salt gives one axis with edges
0, 500, 2500, 10000; only the cell 500–2499 changes (7 -> 8), a share of 2000 / 10000 = 20 %.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise, product

from registry.templatetags.registry_display import share_of_all
from releases.bucketing import BUCKETS, assign
from releases.state import ReleaseState

from .display import budget_text, same_sampling

Range = tuple[int, int]  # [low, high) in buckets


@dataclass(frozen=True, slots=True)
class Move:
    source: int | None  # the version served before (None: nothing was released)
    target: int | None  # the version served after (None: nothing will be)
    share: Fraction  # of all subjects
    draw: str = ""  # "canary" or "experiment" when the move is one range of one draw
    buckets: Range | None = None


@dataclass(frozen=True, slots=True)
class Traffic:
    moves: list[Move]
    before: dict[int | None, Fraction]  # version -> share of subjects served it
    after: dict[int | None, Fraction]

    def rows(self) -> list[tuple[int | None, str, str]]:
        """(version, share before, share after) for every version either state serves."""
        versions = sorted(set(self.before) | set(self.after), key=lambda v: (v is None, v or 0))
        return [
            (
                v,
                share_of_all(self.before.get(v, Fraction(0))),
                share_of_all(self.after.get(v, Fraction(0))),
            )
            for v in versions
        ]


def _axes(*states: ReleaseState) -> dict[str, tuple[str, set[int]]]:
    """salt -> (draw kind, edges)."""
    axes: dict[str, tuple[str, set[int]]] = {}
    for state in states:
        if state.canary is not None:
            axes.setdefault(state.canary.salt, ("canary", {0, BUCKETS}))[1].add(state.canary.weight)
        if state.experiment is not None:
            edges = axes.setdefault(state.experiment.salt, ("experiment", {0, BUCKETS}))[1]
            edge = 0
            for variant in state.experiment.variants:
                edge += variant.weight
                edges.add(min(edge, BUCKETS))
    return axes


def served(state: ReleaseState, buckets: dict[str, int]) -> int | None:
    """The version ``state`` serves a subject whose bucket per salt is ``buckets``."""
    canary = state.canary
    if canary is not None and canary.weight > 0 and buckets[canary.salt] < canary.weight:
        return canary.version
    experiment = state.experiment
    if experiment is not None:
        name = assign([(v.name, v.weight) for v in experiment.variants], buckets[experiment.salt])
        if name is not None:
            return next(v.version for v in experiment.variants if v.name == name)
    return state.stable


def traffic_between(before: ReleaseState, after: ReleaseState) -> Traffic:
    axes = _axes(before, after)
    salts = list(axes)
    ranges = [
        [(lo, hi) for lo, hi in pairwise(edges) if hi > lo]
        for edges in (sorted(axes[salt][1]) for salt in salts)
    ]
    shares_before: dict[int | None, Fraction] = defaultdict(Fraction)
    shares_after: dict[int | None, Fraction] = defaultdict(Fraction)
    moved: dict[tuple[int | None, int | None], list[tuple[Range, ...]]] = defaultdict(list)
    amount: dict[tuple[int | None, int | None], Fraction] = defaultdict(Fraction)
    for cell in product(*ranges):  # no axes: one cell, everyone
        buckets = {salt: lo for salt, (lo, _) in zip(salts, cell, strict=True)}
        size = Fraction(1)
        for lo, hi in cell:
            size *= Fraction(hi - lo, BUCKETS)
        old, new = served(before, buckets), served(after, buckets)
        shares_before[old] += size
        shares_after[new] += size
        if old != new:
            moved[(old, new)].append(cell)
            amount[(old, new)] += size
    moves = []
    for (old, new), cells in moved.items():
        draw, buckets_ = _one_range(cells, amount[(old, new)], [axes[s][0] for s in salts])
        moves.append(Move(old, new, amount[(old, new)], draw, buckets_))
    moves.sort(key=lambda m: -m.share)
    return Traffic(moves, dict(shares_before), dict(shares_after))


def _one_range(
    cells: list[tuple[Range, ...]], size: Fraction, kinds: list[str]
) -> tuple[str, Range | None]:
    """The draw and bucket range a move covers, when it is one contiguous range of one draw and
    all of every other draw; otherwise no range (the numbers alone)."""
    for axis, kind in enumerate(kinds):
        spans = sorted({cell[axis] for cell in cells})
        contiguous = all(a[1] == b[0] for a, b in pairwise(spans))
        low, high = spans[0][0], spans[-1][1]
        if contiguous and Fraction(high - low, BUCKETS) == size and (low, high) != (0, BUCKETS):
            return kind, (low, high)
    return "", None


def sentence(move: Move, *, stable_before: int | None) -> str:
    """ "5 % of subjects (canary buckets 0–499) move from version 7 to version 8"."""
    where = ""
    if move.buckets is not None:
        where = f" ({move.draw} buckets {move.buckets[0]}–{move.buckets[1] - 1})"
    who = f"{share_of_all(move.share)} of subjects{where}"
    if move.source is None:
        return f"{who} start getting version {move.target}"
    if move.target is None:
        return f"{who} stop getting version {move.source}: nothing is released to them"
    # Going back to what everyone had as stable reads as a return, the way a rollback is meant.
    verb = "return" if move.target == stable_before else "move"
    return f"{who} {verb} from version {move.source} to version {move.target}"


def shadow_sentence(before: ReleaseState, after: ReleaseState) -> str:
    """Shadows serve nobody, so they are not moves; say what changes for them separately."""
    old, new = before.shadow, after.shadow
    if old == new:
        return ""
    if new is None:
        return "Shadows stop: no call runs another version out of users' sight."
    budget = budget_text(new)
    if old is not None and same_sampling(old, new):
        return (
            f"Shadows: the same calls stay sampled; their budget goes from {budget_text(old)} "
            f"to {budget}."
        )
    versions = ", ".join(map(str, new.versions))
    return (
        f"Shadows: a sample of {share_of_all(Fraction(new.sample, BUCKETS))} of calls also runs "
        f"version{'s' if len(new.versions) > 1 else ''} {versions}, out of users' sight, within "
        f"{budget}; no subject changes version because of it."
    )


def sentences(before: ReleaseState, after: ReleaseState) -> tuple[Traffic, list[str]]:
    result = traffic_between(before, after)
    lines = [sentence(m, stable_before=before.stable) for m in result.moves]
    if not lines:
        lines.append("No subject changes version.")
    if shadow := shadow_sentence(before, after):
        lines.append(shadow)
    return result, lines
