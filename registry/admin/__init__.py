"""The admin for prompt authors (STYLE R13): prompts, the version editor, preview, diff, and the
verbs commit / new draft from this version / discard, each calling ``registry.services``.

Modules: ``prompts`` (the prompt list and page), ``versions`` (the editor and its URLs), ``pages``
(preview and diff), ``verbs`` (commit, new draft, discard), ``forms`` (the forms, and
``DraftEditor``, which checks a draft's three forms as one content), ``display`` (badges, links). Templates live in
``templates/admin/registry/promptversion/``.
"""

from .prompts import PromptAdmin
from .versions import PromptVersionAdmin

__all__ = ["PromptAdmin", "PromptVersionAdmin"]
