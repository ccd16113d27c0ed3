"""Releasing a snippet version checks the prompts that follow the snippet where it is released.

A version that includes ``{{ snippet("brand.voice") }}`` was checked at its commit against the
snippet's latest committed version; the snippet's stable release may later move to another
version. This promotion check (``releases.gates``, registered in ``ReleasesConfig.ready()``)
refuses a snippet version that lacks a template for a locale in which a prompt served in the same
environment includes it: those renders would fail with ``snippet_locale_missing``. It is a gate
like the others: named in ``409 promotion-blocked`` (``snippet-followers``), overridable with a
reason, never asked by a rollback.
"""

from __future__ import annotations

from promptregistry.core.locales import locale_index
from promptregistry.core.snippets import snippet_locale

from registry.models import LocalizedTemplate, Prompt, SnippetUse
from registry.rendering import SECTIONS, Sections, snippets_used

from .gates import GateVerdict
from .models import Release
from .state import release_state

GATE = "snippet-followers"


def snippet_followers_check(
    *, prompt_id: int, environment: str, version: int
) -> tuple[GateVerdict, ...]:
    """One failed verdict per follower version and locale the snippet ``version`` cannot serve;
    none for a prompt that is not a snippet (one query). A few queries whatever the number of
    followers."""
    snippet = Prompt.objects.filter(pk=prompt_id, is_snippet=True).values_list("key").first()
    if snippet is None:
        return ()
    key = snippet[0]
    available = locale_index(
        LocalizedTemplate.objects.filter(
            version__prompt_id=prompt_id, version__number=version
        ).values_list("locale", flat=True)
    )
    followers = SnippetUse.objects.filter(snippet_id=prompt_id, pinned__isnull=True)
    releases = Release.objects.filter(
        environment__name=environment, prompt_id__in=followers.values("version__prompt_id")
    ).select_related("prompt", "stable_version", "canary_version")
    served = {(r.prompt_id, n): r.prompt.key for r in releases for n in release_state(r).versions()}
    if not served:
        return ()
    templates = LocalizedTemplate.objects.filter(
        version__in=followers.values("version"),
        version__prompt_id__in={p for p, _ in served},
    ).values_list("version__prompt_id", "version__number", "locale", *SECTIONS)
    failed: list[GateVerdict] = []
    for prompt_id_, number, locale, *texts in templates:
        if (prompt_id_, number) not in served:
            continue
        calls = snippets_used(Sections(*texts))
        if any(c.key == key and c.version is None for c in calls) and (
            snippet_locale(locale, available) is None
        ):
            follower = served[(prompt_id_, number)]
            failed.append(
                GateVerdict(
                    False,
                    GATE,
                    f"{follower} v{number} includes {key} in {locale} in {environment}; "
                    f"version {version} of {key} has no {locale} template.",
                )
            )
    return tuple(failed)
