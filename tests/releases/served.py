"""``ServedRelease`` values built directly, for the pure resolution tests (no database)."""

from __future__ import annotations

from releases.resolution import ServedRelease, ServedVersion
from releases.state import ReleaseState


def version(number: int, *locales: str) -> ServedVersion:
    """Version ``number`` with a template per locale (English alone by default)."""
    return ServedVersion(
        pk=number,
        number=number,
        content_hash=f"{number:064x}",
        variables=(),
        model={"provider": "local", "model": "echo-1"},
        templates={
            locale: {
                "system": f"v{number} {locale}",
                "context": "",
                "instruction": "",
                "format": "",
            }
            for locale in locales or ("en",)
        },
    )


def served(state: ReleaseState, *locales: str) -> ServedRelease:
    """``support.refund-reply`` in production at revision 7, serving ``state``."""
    return ServedRelease(
        prompt="support.refund-reply",
        environment="production",
        prompt_id=1,
        environment_id=3,
        default_locale="en",
        revision=7,
        state=state,
        versions={n: version(n, *locales) for n in state.versions()},
    )
