"""How a release state reads in the admin: percents, one line per part, the diff between two
states, and the small pieces of HTML the board shows. Pure text functions first (no ORM), then
``format_html`` helpers (escaped by default)."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from registry.templatetags.registry_display import basis_points
from releases.state import Canary, Experiment, ReleaseState, Shadow, shadow_budget

NONE = "none"
PARTS = ("stable", "canary", "experiment", "shadows")


def canary_text(canary: Canary | None) -> str:
    return f"{canary.version} @ {basis_points(canary.weight)}" if canary else NONE


def experiment_text(experiment: Experiment | None) -> str:
    if experiment is None:
        return NONE
    variants = ", ".join(
        f"{v.name} {v.version} @ {basis_points(v.weight)}" for v in experiment.variants
    )
    planned = (
        f" (planned: {experiment.planned_calls:,} sticky calls)" if experiment.planned_calls else ""
    )
    return f"{experiment.name}: {variants}{planned}"


def budget_text(shadow: Shadow) -> str:
    """ "600 runs/hour (default)" or "120 runs/hour": the budget in force, and whether it is the
    server's setting (which follows the setting) or the release's own."""
    runs = f"{shadow_budget(ReleaseState(shadow=shadow)):,} runs/hour"
    return f"{runs} (default)" if shadow.budget_per_hour is None else runs


def shadow_text(shadow: Shadow | None) -> str:
    if shadow is None:
        return NONE
    return (
        f"{', '.join(map(str, shadow.versions))} @ {basis_points(shadow.sample)} of calls, "
        f"{budget_text(shadow)}"
    )


def part_texts(state: ReleaseState) -> dict[str, str]:
    """One line per part of the state, keyed by ``PARTS``."""
    return {
        "stable": NONE if state.stable is None else str(state.stable),
        "canary": canary_text(state.canary),
        "experiment": experiment_text(state.experiment),
        "shadows": shadow_text(state.shadow),
    }


def state_summary(state: ReleaseState) -> str:
    """ "stable 7, canary 8 @ 25 %": the parts that are set, for messages and the bulk pages."""
    texts = part_texts(state)
    parts = [f"{part} {texts[part]}" for part in PARTS if texts[part] != NONE]
    return ", ".join(parts) or "nothing released"


@dataclass(frozen=True, slots=True)
class Change:
    """One part that differs between two states: ``canary`` ``8 @ 5 %`` → ``25 %``."""

    part: str
    before: str
    after: str


def _salt(state: ReleaseState, part: str) -> str:
    value = {"canary": state.canary, "experiment": state.experiment, "shadows": state.shadow}.get(
        part
    )
    return getattr(value, "salt", "")


def state_changes(before: ReleaseState, after: ReleaseState) -> list[Change]:
    """Only what changed, in reading order. A part whose text is the same but whose salt is new
    says "new draw": its subjects are picked afresh even though the numbers did not move."""
    old, new = part_texts(before), part_texts(after)
    changes = []
    for part in PARTS:
        if old[part] != new[part]:
            if part == "canary" and before.canary and after.canary and _same_draw(before, after):
                # Same canary, new percent: "8 @ 5 % → 25 %", as a ramp reads.
                changes.append(Change(part, old[part], basis_points(after.canary.weight)))
            elif part == "shadows" and same_sampling(before.shadow, after.shadow):
                # Same shadows, new budget: "9 @ 10 % of calls, 600 runs/hour → 100 runs/hour".
                changes.append(Change(part, old[part], budget_text(after.shadow)))
            else:
                changes.append(Change(part, old[part], new[part]))
        elif new[part] != NONE and _salt(before, part) != _salt(after, part):
            changes.append(Change(part, old[part], f"{new[part]} (new draw)"))
    return changes


def _same_draw(before: ReleaseState, after: ReleaseState) -> bool:
    return (
        before.canary is not None
        and after.canary is not None
        and before.canary.version == after.canary.version
        and before.canary.salt == after.canary.salt
    )


def same_sampling(before: Shadow | None, after: Shadow | None) -> bool:
    """Both run the same versions on the same calls (a budget change at most)."""
    return (
        before is not None
        and after is not None
        and (before.versions, before.sample, before.salt)
        == (after.versions, after.sample, after.salt)
    )


# --- HTML -------------------------------------------------------------------------------------


def canary_cell(canary: Canary | None) -> SafeString | str:
    """The canary as a small bar and its numbers, for the board."""
    if canary is None:
        return "—"
    width = f"{canary.weight / 100:.2f}"  # a number we computed: safe in the style attribute
    return format_html(
        '<span class="release-bar" title="{}"><span style="width:{}%"></span></span> {} @ {}',
        f"{basis_points(canary.weight)} of subjects get version {canary.version}",
        width,
        canary.version,
        basis_points(canary.weight),
    )


def experiment_cell(experiment: Experiment | None) -> SafeString | str:
    if experiment is None:
        return "—"
    variants = format_html_join(
        mark_safe("<br>"),  # a constant; format_html_join escapes a plain separator
        '<span class="release-nowrap">{} <small>v{} @ {}</small></span>',
        ((v.name, v.version, basis_points(v.weight)) for v in experiment.variants),
    )
    return format_html("<strong>{}</strong><br>{}", experiment.name, variants)


def shadow_cell(shadow: Shadow | None) -> SafeString | str:
    if shadow is None:
        return "—"
    return format_html(
        '{} @ {}<br><small class="release-nowrap">{}</small>',
        ", ".join(map(str, shadow.versions)),
        basis_points(shadow.sample),
        budget_text(shadow),
    )


def changes_html(changes: list[Change]) -> SafeString | str:
    """ "stable 7 → 8; canary none → 8 @ 5 %", for the event list's column."""
    if not changes:
        return "no change"
    return format_html_join(
        "; ",
        '<span class="release-change"><b>{}</b> {} → {}</span>',
        ((c.part, c.before, c.after) for c in changes),
    )
