"""The sample variables an author last previewed a version with, kept in their session.

The preview page and the workbench's live preview remember them here; the playground (an app
above, ``evaluations.admin.playground``) starts from them, so a run is one click after a preview.
Per user (the session), per version, a bounded number of versions: the session is not a store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

SESSION_KEY = "registry_preview_samples"
VERSIONS_KEPT = 20  # the versions an author previewed most recently
SAMPLES_MAX_CHARS = 100_000  # a larger sample is not kept (the session cookie or row stays small)


def samples_remember(
    request: HttpRequest, *, version_id: int, values: Mapping[str, Any], locale: str
) -> None:
    """Keeps ``values`` and ``locale`` as the version's last preview, unless unchanged (so a
    preview repeated as the author types writes the session once) or too large to keep."""
    entry = {"values": dict(values), "locale": locale}
    if len(json.dumps(entry, ensure_ascii=False)) > SAMPLES_MAX_CHARS:
        return
    kept: dict[str, Any] = request.session.get(SESSION_KEY) or {}
    key = str(version_id)
    if kept.get(key) == entry:
        return
    kept.pop(key, None)
    kept[key] = entry  # the newest last
    while len(kept) > VERSIONS_KEPT:
        kept.pop(next(iter(kept)))
    request.session[SESSION_KEY] = kept


def samples_recall(request: HttpRequest, *, version_id: int) -> tuple[dict[str, Any], str] | None:
    """The values and locale of the version's last preview in this session, if any."""
    entry = (request.session.get(SESSION_KEY) or {}).get(str(version_id))
    if not isinstance(entry, dict) or not isinstance(entry.get("values"), dict):
        return None
    return entry["values"], str(entry.get("locale") or "")
