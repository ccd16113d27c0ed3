"""The layout check: does a page fit its viewport, and if not, which elements stick out?

``overflowing(page)`` runs in the browser on the page as it is (Playwright's sync ``Page``) and
returns the elements that make the document wider than the viewport, each with a CSS selector to
find it and its width, so a failing test names the table or the ``pre`` at fault rather than
saying "the page is 2,110 pixels wide".

What counts:

1. an element whose right edge lies past the viewport's while its parent's does not: it is the one
   that sticks out (its ancestors only stretch to hold it, its descendants ride along);
2. an element whose own content overflows it without a scroll bar (``overflow: visible``, e.g. a
   long unbroken line) past the viewport;
3. with ``strict=True``, also a box that scrolls sideways (``overflow-x: auto``) because its content
   does not fit: the page fits, but part of it is clipped until scrolled. At 1,400 pixels nothing
   should hide that way; at 800 a wide table scrolling inside its box is the intended fallback.

Elements inside a box that scrolls sideways are contained: they never widen the page, so only the
box itself can be reported (rule 3). Hidden elements (``display: none``, zero size) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# One pixel of slack: sub-pixel layout rounds widths either way.
SLACK = 1

_SCRIPT = """
({strict, slack}) => {
  const root = document.documentElement;
  const viewport = root.clientWidth;
  const found = [];

  const selectorOf = (el) => {
    const parts = [];
    for (let node = el; node && node.nodeType === 1 && node !== root; node = node.parentElement) {
      let part = node.tagName.toLowerCase();
      if (node.id) { parts.unshift(part + '#' + CSS.escape(node.id)); break; }
      const classes = [...node.classList].slice(0, 2).map((c) => '.' + CSS.escape(c)).join('');
      part += classes;
      const parent = node.parentElement;
      if (parent) {
        const same = [...parent.children].filter((c) => c.tagName === node.tagName);
        if (same.length > 1) part += ':nth-of-type(' + (same.indexOf(node) + 1) + ')';
      }
      parts.unshift(part);
    }
    return parts.join(' > ');
  };
  const scrollsSideways = (style) => ['auto', 'scroll', 'hidden', 'clip'].includes(style.overflowX);
  const rightEdge = (el) => el.getBoundingClientRect().right + window.scrollX;

  const walk = (el, parentRight, contained) => {
    const style = getComputedStyle(el);
    if (style.display === 'none') return;
    const rect = el.getBoundingClientRect();
    const right = rect.right + window.scrollX;
    const visible = rect.width > 0 && rect.height > 0 && style.visibility !== 'hidden';
    const scrolls = scrollsSideways(style) && el !== document.body;
    if (visible && !contained) {
      if (right > viewport + slack && parentRight <= viewport + slack) {
        found.push({el, selector: selectorOf(el), width: Math.round(rect.width),
                    right: Math.round(right), reason: 'wider than the viewport'});
      } else if (!scrolls && el.scrollWidth > el.clientWidth + slack && el.clientWidth > 0
                 && rect.left + window.scrollX + el.scrollWidth > viewport + slack
                 && right <= viewport + slack) {
        found.push({el, selector: selectorOf(el), width: Math.round(el.scrollWidth),
                    right: Math.round(rect.left + window.scrollX + el.scrollWidth),
                    reason: 'content overflows it', own: true});
      }
    }
    if (visible && strict && scrolls && el.scrollWidth > el.clientWidth + slack
        && style.overflowX !== 'hidden' && style.overflowX !== 'clip') {
      found.push({el, selector: selectorOf(el), width: Math.round(el.scrollWidth),
                  right: Math.round(rect.left + window.scrollX + el.scrollWidth),
                  reason: 'clipped: scrolls sideways (' + el.clientWidth + ' px shown)'});
    }
    for (const child of el.children) walk(child, right, contained || scrolls);
  };
  walk(document.body, viewport, false);
  // An element whose content overflows only because a descendant sticks out is not a cause:
  // keep the descendant, drop the ancestors that merely carry it.
  const causes = found.filter((item) => !(item.own && found.some(
    (other) => other !== item && item.el.contains(other.el))));
  return {viewport, scrollWidth: root.scrollWidth,
          found: causes.map(({selector, width, right, reason}) => ({selector, width, right, reason}))};
}
"""


@dataclass(frozen=True, slots=True)
class Offender:
    selector: str
    width: int
    right: int
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.selector} ({self.width} px wide, right edge at {self.right} px: {self.reason})"
        )


@dataclass(frozen=True, slots=True)
class Fit:
    """A page's measure: the viewport, the document's width, and what sticks out."""

    viewport: int
    scroll_width: int
    offenders: list[Offender]

    @property
    def fits(self) -> bool:
        return self.scroll_width <= self.viewport + SLACK and not self.offenders

    def describe(self) -> str:
        if self.fits:
            return f"fits {self.viewport} px"
        lines = [f"document {self.scroll_width} px wide in a {self.viewport} px viewport"]
        lines += [f"  {offender}" for offender in self.offenders]
        return "\n".join(lines)


def measure(page: Any, *, strict: bool = False) -> Fit:
    """Measures the page as it is now; ``strict`` also reports boxes that hide content behind a
    sideways scroll bar (see the module docstring)."""
    raw = page.evaluate(_SCRIPT, {"strict": strict, "slack": SLACK})
    return Fit(
        viewport=raw["viewport"],
        scroll_width=raw["scrollWidth"],
        offenders=[Offender(**item) for item in raw["found"]],
    )


def overflowing(page: Any, *, strict: bool = False) -> list[Offender]:
    """The elements that make the page wider than its viewport (and, ``strict``, the boxes that
    clip content behind a sideways scroll bar); empty when the page fits."""
    return measure(page, strict=strict).offenders
