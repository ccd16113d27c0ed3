"""What ``snippet(...)`` includes when a release is served in its environment.

An include that follows (``snippet("brand.voice")``) serves the snippet's *current* stable
version in the same environment, read from the snippet's own release at the moment of the render
(``ServedSnippets``), never a copy taken when the including release was loaded: a deploy or a
rollback of the snippet is a release change of the snippet, which every node hears at once
(``releases.cache``), and from then on every prompt that follows it renders the new text, with no
change to their own releases (decision 0035). A pinned include (``version=3``) serves that
committed version, immutable, loaded with the release that includes it (``ServedRelease.pinned``).

``snippet_versions`` lists, without rendering, which snippet version each include of a version
serves now: the resolve answer carries it, and it is part of the resolve ETag, so a snippet's
release change is visible to a caller of a prompt that follows it.

Pure module: the caller hands in how to look a release up (the cache, or the database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from promptregistry.core.snippets import MAX_SNIPPET_DEPTH, SnippetText

from registry.rendering import templates_snippet_refs

if TYPE_CHECKING:
    from .resolution import ServedRelease, ServedVersion

Ref = tuple[str, int | None]
Lookup = Callable[[str], "ServedRelease | None"]


def text_of(key: str, version: ServedVersion) -> SnippetText:
    """A served version as a snippet's text, built once per loaded version."""
    text = version.memo.get("snippet-text")
    if text is None:
        text = version.memo["snippet-text"] = SnippetText(key, version.number, version.templates)
    return text


class ServedSnippets:
    """A ``SnippetLibrary`` over the environment a release is served in: ``get((key, None))``
    is the snippet's stable version there now, ``get((key, n))`` the pinned version ``n``
    (loaded with the including release, or with the release of a snippet followed on the way)."""

    __slots__ = ("_lookup", "_pinned")

    def __init__(self, *, lookup: Lookup, pinned: Mapping[Ref, SnippetText]) -> None:
        self._lookup = lookup
        self._pinned: list[Mapping[Ref, SnippetText]] = [pinned]

    def get(self, ref: Ref, default: SnippetText | None = None) -> SnippetText | None:
        key, pinned = ref
        if pinned is not None:
            for texts in self._pinned:
                if ref in texts:
                    return texts[ref]
            return default
        release = self._lookup(key)
        if release is None or release.state.stable is None:
            return default
        version = release.versions.get(release.state.stable)
        if version is None:
            return default
        # What the followed snippet pins is loaded with its own release.
        if release.pinned and release.pinned not in self._pinned:
            self._pinned.append(release.pinned)
        return text_of(key, version)

    def __getitem__(self, ref: Ref) -> SnippetText:
        found = self.get(ref)
        if found is None:
            raise KeyError(ref)
        return found


def snippet_versions(
    refs: Iterable[Ref], *, library: ServedSnippets
) -> tuple[tuple[str, int | None, int | None], ...]:
    """``(key, pinned, version served or None)`` for every include reachable from ``refs``
    (snippets included by snippets too, to ``MAX_SNIPPET_DEPTH`` levels), sorted."""
    seen: dict[Ref, int | None] = {}
    todo = list(refs)
    for _level in range(MAX_SNIPPET_DEPTH):
        following: list[Ref] = []
        for ref in todo:
            if ref in seen:
                continue
            text = library.get(ref)
            seen[ref] = text.number if text is not None else None
            if text is not None:
                following.extend(templates_snippet_refs(text.templates))
        todo = following
        if not todo:
            break
    return tuple(
        (key, pinned, number)
        for (key, pinned), number in sorted(seen.items(), key=lambda i: (i[0][0], i[0][1] or 0))
    )


def snippets_preloaded(refs: Iterable[Ref], *, library: ServedSnippets) -> dict[Ref, SnippetText]:
    """The text every include reachable from ``refs`` serves now (snippets included by snippets
    too, to ``MAX_SNIPPET_DEPTH`` levels), as a plain dict: a ``SnippetLibrary`` that a render in
    another thread reads without a query (a moderation's classifier, runs.moderation). An
    include that serves nothing is left out, so the render fails on it as it would live."""
    found: dict[Ref, SnippetText] = {}
    todo = list(refs)
    for _level in range(MAX_SNIPPET_DEPTH):
        following: list[Ref] = []
        for ref in todo:
            if ref in found:
                continue
            text = library.get(ref)
            if text is not None:
                found[ref] = text
                following.extend(templates_snippet_refs(text.templates))
        todo = following
        if not todo:
            break
    return found
