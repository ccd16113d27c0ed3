"""Snippets on the registry's side: what a version includes, the commit's checks, and the
snippet versions a render outside any environment includes.

A snippet is a prompt marked ``is_snippet``; a section includes it with ``{{ snippet("key") }}``
(following the snippet's stable release in the environment served) or
``{{ snippet("key", version=3) }}`` (pinned). Rendering includes is the SDK's shared module
(``promptregistry.core.snippets``); this module owns what needs the database:

- ``snippet_uses_write``: the ``SnippetUse`` rows of a draft, rewritten with its templates;
- ``snippet_references_check``: every problem with a version's includes, for the commit (and the
  editor): unknown keys, prompts that are not snippets, pinned versions that are not committed,
  a snippet without a template for a locale the version has, cycles, too deep a chain, and a
  snippet that declares variables;
- ``snippet_library``: the snippet versions a render includes, every level, given how the
  caller resolves the snippets it follows (``latest_committed``: the authoring render's rule;
  an environment's stable versions: ``releases``' and ``evaluations``').

Commit-time checks look at committed versions: for an include that follows, the snippet's
versions that could be served (every committed one for cycles; the latest for locales, since a
render of another one that lacks the locale is refused in place with ``snippet_locale_missing``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

from django.db.models import Max, Prefetch, QuerySet
from promptregistry.core.locales import locale_index
from promptregistry.core.snippets import MAX_SNIPPET_DEPTH, SnippetText, snippet_locale

from .content import VersionContent, pointer_token
from .errors import Problem
from .models import LocalizedTemplate, Prompt, PromptVersion, SnippetUse
from .rendering import SECTIONS, Sections, snippets_used, templates_snippet_refs

Ref = tuple[str, int | None]  # (snippet key, pinned version or None: follows the stable release)
# keys followed -> the version number each resolves to (absent: none to include)
Following = Callable[[Collection[str]], Mapping[str, int]]


def content_snippet_refs(content: VersionContent) -> dict[str, list[tuple[str, Ref, int]]]:
    """locale -> (section, (key, pinned), line) of every include in the content's templates."""
    found: dict[str, list[tuple[str, Ref, int]]] = {}
    for locale, sections in content.templates.items():
        for section in SECTIONS:
            for call in snippets_used(Sections(**{section: getattr(sections, section)})):
                found.setdefault(locale, []).append((section, (call.key, call.version), call.line))
    return found


def snippet_uses_write(*, version: PromptVersion, content: VersionContent) -> None:
    """Rewrites the draft's ``SnippetUse`` rows from its templates. Includes of keys that are no
    snippet are left out here; the commit refuses them (``snippet_references_check``)."""
    SnippetUse.objects.filter(version=version).delete()
    refs = {ref for calls in content_snippet_refs(content).values() for _s, ref, _l in calls}
    if not refs:
        return
    snippets = dict(
        Prompt.objects.filter(key__in={key for key, _ in refs}, is_snippet=True).values_list(
            "key", "pk"
        )
    )
    SnippetUse.objects.bulk_create(
        SnippetUse(version=version, snippet_id=snippets[key], pinned=pinned)
        for key, pinned in sorted(refs, key=lambda ref: (ref[0], ref[1] or 0))
        if key in snippets
    )


def latest_committed(keys: Collection[str]) -> dict[str, int]:
    """The latest committed version of each snippet key (how a render outside any environment,
    such as the workbench preview or the authoring API's render, resolves an include that
    follows). One query."""
    return dict(
        PromptVersion.objects.filter(
            prompt__key__in=list(keys),
            prompt__is_snippet=True,
            status=PromptVersion.Status.COMMITTED,
        )
        .values("prompt__key")
        .annotate(latest=Max("number"))
        .values_list("prompt__key", "latest")
    )


def _versions(pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], PromptVersion]:
    """Committed snippet versions by (key, number), templates prefetched: two queries."""
    pairs = set(pairs)
    if not pairs:
        return {}
    rows = PromptVersion.objects.filter(
        prompt__key__in={k for k, _ in pairs},
        prompt__is_snippet=True,
        number__in={n for _, n in pairs},
        status=PromptVersion.Status.COMMITTED,
    ).prefetch_related(Prefetch("templates", queryset=LocalizedTemplate.objects.order_by("locale")))
    found = {}
    for row in rows.select_related("prompt"):
        if (row.prompt.key, row.number) in pairs:
            found[(row.prompt.key, row.number)] = row
    return found


def _text(key: str, version: PromptVersion) -> SnippetText:
    return SnippetText(
        key,
        version.number,
        {
            t.locale: {s: getattr(t, s) for s in SECTIONS if getattr(t, s)}
            for t in version.templates.all()
        },
    )


def snippet_library(*, refs: Iterable[Ref], following: Following) -> dict[Ref, SnippetText]:
    """The snippet versions a render of templates including ``refs`` includes, every level down
    to ``MAX_SNIPPET_DEPTH`` (deeper is refused when rendered): ``(key, pinned)`` -> its text.

    ``following`` resolves the includes that follow (``latest_committed``, or an environment's
    stable versions). A fixed number of queries per level, whatever the number of includes.
    """
    library: dict[Ref, SnippetText] = {}
    todo = set(refs)
    for _level in range(MAX_SNIPPET_DEPTH):
        todo -= library.keys()
        if not todo:
            break
        followed = following({key for key, pinned in todo if pinned is None})
        wanted = {
            ref: (ref[0], ref[1] if ref[1] is not None else followed.get(ref[0])) for ref in todo
        }
        versions = _versions((k, n) for k, n in wanted.values() if n is not None)
        found = {ref: versions[pair] for ref, pair in wanted.items() if pair in versions}
        todo = set()
        for ref, version in found.items():
            library[ref] = text = _text(ref[0], version)
            todo.update(templates_snippet_refs(text.templates))
    return library


def library_for_templates(
    templates: Mapping[str, Mapping[str, str]], *, following: Following = latest_committed
) -> dict[Ref, SnippetText]:
    """``snippet_library`` for what a version's templates include (none: no query)."""
    refs = templates_snippet_refs(templates)
    return snippet_library(refs=refs, following=following) if refs else {}


# --- the commit's checks ----------------------------------------------------------------------


def _committed_uses(snippet_ids: Collection[int]) -> dict[int, dict[int, set[Ref]]]:
    """snippet prompt id -> version number -> what that committed version includes."""
    uses: dict[int, dict[int, set[Ref]]] = {pk: {} for pk in snippet_ids}
    rows = SnippetUse.objects.filter(
        version__prompt_id__in=list(snippet_ids),
        version__status=PromptVersion.Status.COMMITTED,
    ).values_list("version__prompt_id", "version__number", "snippet__key", "pinned")
    for prompt_id, number, key, pinned in rows:
        uses[prompt_id].setdefault(number, set()).add((key, pinned))
    return uses


def _cycle_problems(prompt: Prompt, refs: Collection[Ref], pointer: str) -> list[Problem]:
    """A chain of includes that comes back to ``prompt`` (a cycle), or goes deeper than
    ``MAX_SNIPPET_DEPTH``, through any committed version the includes could serve."""
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    paths: list[tuple[Ref, ...]] = [(ref,) for ref in sorted(refs, key=lambda r: (r[0], r[1] or 0))]
    for depth in range(1, MAX_SNIPPET_DEPTH + 2):
        keys = {p[-1][0] for p in paths} - ids.keys()
        ids.update(Prompt.objects.filter(key__in=keys, is_snippet=True).values_list("key", "pk"))
        uses = _committed_uses({ids[p[-1][0]] for p in paths if p[-1][0] in ids})
        longer: list[tuple[Ref, ...]] = []
        for path in paths:
            key, pinned = path[-1]
            if key not in ids:
                continue
            versions = uses.get(ids[key], {})
            chosen = [versions.get(pinned, set())] if pinned is not None else versions.values()
            for included in sorted({r for refs_ in chosen for r in refs_}, key=str):
                chain = " → ".join([prompt.key, *(k for k, _ in path), included[0]])
                if included[0] == prompt.key or included in path:
                    problems.append(
                        Problem(
                            "snippet_cycle", f"The snippets include each other: {chain}.", pointer
                        )
                    )
                elif depth >= MAX_SNIPPET_DEPTH:
                    problems.append(
                        Problem(
                            "snippet_too_deep",
                            f"Snippets nest at most {MAX_SNIPPET_DEPTH} levels: {chain}.",
                            pointer,
                        )
                    )
                else:
                    longer.append((*path, included))
        if problems or not longer:
            break
        paths = longer
    return list({p.detail: p for p in problems}.values())


def snippet_references_check(*, prompt: Prompt, content: VersionContent) -> list[Problem]:
    """Every problem with what ``content`` (a version of ``prompt``) includes, by pointer.

    1. A snippet declares no variables (``snippet_variables``): its text is the same wherever
       it is included.
    2. Each include names a prompt (``unknown_snippet``) that is a snippet (``not_a_snippet``),
       not this one (``snippet_cycle``); a pinned version is committed (``unknown_snippet_version``),
       and one that follows has a committed version at all (``unknown_snippet_version``).
    3. The snippet version (the pinned one, or the latest committed for one that follows) has a
       template for the including locale or a less specific one (``snippet_locale_missing``).
    4. No chain of includes comes back here (``snippet_cycle``) or goes deeper than
       ``MAX_SNIPPET_DEPTH`` (``snippet_too_deep``), through any committed version.
    A few queries, whatever the number of includes.
    """
    problems: list[Problem] = []
    if prompt.is_snippet and content.variables:
        problems.append(
            Problem(
                "snippet_variables",
                f"{prompt.key} is a snippet: it declares no variables, so its text is the same "
                "in every prompt that includes it.",
                "/variables",
            )
        )
    by_locale = content_snippet_refs(content)
    refs = {ref for calls in by_locale.values() for _s, ref, _l in calls}
    if not refs:
        return problems
    prompts = {p.key: p for p in Prompt.objects.filter(key__in={k for k, _ in refs})}
    latest = latest_committed({k for k, _ in refs})
    versions = _versions(
        [(k, n) for k, n in refs if n is not None] + [(k, n) for k, n in latest.items()]
    )
    valid: set[Ref] = set()
    for locale, calls in by_locale.items():
        for section, (key, pinned), line in calls:
            at = f"/templates/{pointer_token(locale)}/{section}"
            where = f"The {section} section ({locale}), line {line}"
            snippet = prompts.get(key)
            number = pinned if pinned is not None else latest.get(key)
            version = versions.get((key, number)) if number is not None else None
            if key == prompt.key:
                problem = Problem(
                    "snippet_cycle", f"{where}: a prompt cannot include itself.", at, line
                )
            elif snippet is None:
                problem = Problem(
                    "unknown_snippet", f"{where}: there is no snippet {key!r}.", at, line
                )
            elif not snippet.is_snippet:
                problem = Problem(
                    "not_a_snippet",
                    f"{where}: {key} is a prompt, not a snippet; mark it as a snippet to "
                    "include it.",
                    at,
                    line,
                )
            elif version is None:
                what = (
                    f"no committed version {pinned}"
                    if pinned is not None
                    else "no committed version"
                )
                problem = Problem(
                    "unknown_snippet_version", f"{where}: {key} has {what}.", at, line
                )
            elif snippet_locale(locale, locale_index(_text(key, version).templates)) is None:
                problem = Problem(
                    "snippet_locale_missing",
                    f"{where}: the snippet {key} (version {version.number}) has no {locale} "
                    "template, nor one of a less specific locale.",
                    at,
                    line,
                )
            else:
                valid.add((key, pinned))
                continue
            problems.append(problem)
    if valid:
        problems += _cycle_problems(prompt, valid, "/templates")
    return problems


def snippet_users(*, snippet: Prompt) -> QuerySet[SnippetUse]:
    """Every version that includes ``snippet`` (drafts too), by prompt key then newest first,
    each with its version and prompt joined: slice it for a page."""
    return (
        SnippetUse.objects.filter(snippet=snippet)
        .select_related("version__prompt")
        .order_by("version__prompt__key", "-version__number", "pinned")
    )
