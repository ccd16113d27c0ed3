"""The Jinja environment prompts render in, and the budget that bounds one render.

It is the SDK's (``promptregistry.core.sandbox``, installed with the server): services that render
locally from a bundle and ``POST …/render`` here must produce the same text and refuse the same
templates, and one implementation is the only way that stays true. ``registry.rendering`` owns
the contract (what is checked, cached, rendered, and how errors read).
"""

from promptregistry.core.sandbox import (
    CALL_STEPS,
    ENVIRONMENT,
    GLOBAL_NAMES,
    MAX_RENDER_CHARS,
    MAX_RENDER_STEPS,
    RENDER_DEADLINE_MS,
    WORK_FACTOR,
    BudgetExceeded,
    RenderBudget,
    SnippetFailed,
    Unprintable,
    budget_scope,
    compile_template,
    count_loop_iterations,
    new_context,
    render_template,
)

__all__ = [
    "CALL_STEPS",
    "ENVIRONMENT",
    "GLOBAL_NAMES",
    "MAX_RENDER_CHARS",
    "MAX_RENDER_STEPS",
    "RENDER_DEADLINE_MS",
    "WORK_FACTOR",
    "BudgetExceeded",
    "RenderBudget",
    "SnippetFailed",
    "Unprintable",
    "budget_scope",
    "compile_template",
    "count_loop_iterations",
    "new_context",
    "render_template",
]
