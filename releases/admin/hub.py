"""What releases adds to a prompt's page and to the prompt list (``registry.admin.hub``): where the
prompt is released in each environment, with links to the release pages.

Registered by ``ReleasesConfig.ready()``. Both read ``prompt_releases()``: the list's columns cost
two queries for a whole page of prompts (the environments, then their releases), the prompt's
page the same two. Shown to users who may read releases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from registry.admin.hub import Cell, Columns, Link, Panel
from registry.models import Prompt
from registry.templatetags.registry_display import basis_points
from releases.models import Environment, Release
from releases.rights import user_release_rights
from releases.selectors import environment_list, prompt_releases
from releases.state import ReleaseState, release_state

from .views import prompt_history_url, release_url, verb_url

VIEW_PERMISSION = "releases.view_release"
DEPLOY_PERMISSION = "releases.deploy_release"


def board_url(environment: Environment) -> str:
    return (
        f"{reverse('admin:releases_release_changelist')}?"
        f"{urlencode({'environment': environment.name})}"
    )


def deploy_url(prompt: Prompt, environment: Environment) -> str:
    """ "Deploy a prompt" with the prompt and environment chosen: the page asks for the version."""
    return (
        f"{reverse('admin:releases_release_deploy_prompt')}?"
        f"{urlencode({'prompt': prompt.pk, 'environment': environment.name})}"
    )


def served_parts(state: ReleaseState) -> dict[str, str]:
    """What the release serves, one short text per part that is set, keyed like ``PARTS``:
    ``{"stable": "v2", "canary": "v3 @ 25 %"}``."""
    parts = {} if state.stable is None else {"stable": f"v{state.stable}"}
    if state.canary:
        parts["canary"] = f"v{state.canary.version} @ {basis_points(state.canary.weight)}"
    if state.experiment:
        variants = ", ".join(
            f"{v.name} v{v.version} @ {basis_points(v.weight)}" for v in state.experiment.variants
        )
        parts["experiment"] = f"{state.experiment.name}: {variants}"
    if state.shadow:
        versions = ", ".join(f"v{n}" for n in state.shadow.versions)
        parts["shadows"] = f"{versions} @ {basis_points(state.shadow.sample)}"
    return parts


def served_cell(release: Release) -> SafeString:
    """The list's cell: the stable version as a link to the release page, the rest under it."""
    state = release_state(release)
    parts = served_parts(state)
    if state.experiment:  # the variants are on the release page; the list names the experiment
        parts["experiment"] = state.experiment.name
    # The stable version is the cell's first line, bare: the column is the environment.
    lines = [text if part == "stable" else f"{part} {text}" for part, text in parts.items()]
    first, *rest = lines or ["nothing served"]
    return format_html(
        '<a href="{}">{}</a>{}',
        release_url(release.pk),
        first,
        format_html_join("", "<br><small>{}</small>", ((r,) for r in rest)),
    )


def _releases_by_prompt(prompts: Sequence[Prompt]) -> dict[tuple[int, int], Release]:
    return {
        (r.prompt_id, r.environment_id): r
        for r in prompt_releases(prompt_ids=[p.pk for p in prompts])
    }


def release_columns(request: HttpRequest) -> Columns | None:
    """One column per environment, in promotion order, with what each prompt serves there."""
    if not request.user.has_perm(VIEW_PERMISSION):
        return None
    environments = list(environment_list())

    def fill(prompts: Sequence[Prompt]) -> Mapping[tuple[int, str], Cell]:
        releases = _releases_by_prompt(prompts)
        return {
            (prompt.pk, f"env_{e.name}"): served_cell(releases[(prompt.pk, e.pk)])
            for prompt in prompts
            for e in environments
            if (prompt.pk, e.pk) in releases
        }

    return Columns(headers=[(f"env_{e.name}", e.name) for e in environments], fill=fill)


def release_panel(request: HttpRequest, prompt: Prompt) -> Panel | None:
    """Where the prompt is released: a row per environment with what it serves and its page."""
    if not request.user.has_perm(VIEW_PERMISSION):
        return None
    may_deploy = request.user.has_perm(DEPLOY_PERMISSION)
    releases = {r.environment_id: r for r in prompt_releases(prompt_ids=[prompt.pk])}
    rows: list[list[Cell]] = []
    for environment in environment_list():
        # The environment's release rights too (releases.rights): offer only what would apply.
        can_deploy = (
            may_deploy and user_release_rights(user=request.user, environment=environment).deploy
        )
        release = releases.get(environment.pk)
        where = format_html('<a href="{}">{}</a>', board_url(environment), environment.name)
        if release is None:
            action: Cell = (
                format_html('<a href="{}">Deploy…</a>', deploy_url(prompt, environment))
                if can_deploy
                else ""
            )
            rows.append([where, "never released", "—", "—", "—", action])
            continue
        state = release_state(release)
        parts = served_parts(state)
        rows.append(
            [
                where,
                "nothing served" if state.stable is None else f"v{state.stable}",
                *(parts.get(part, "—") for part in ("canary", "experiment", "shadows")),
                _release_links(release, state, can_deploy),
            ]
        )
    return Panel(
        title="Releases",
        headers=["Environment", "Stable", "Canary", "Experiment", "Shadows", ""],
        rows=rows,
        links=[Link("Release history in every environment", prompt_history_url(prompt.pk))],
        empty="There are no environments yet.",
        order=10,
    )


def _release_links(release: Release, state: ReleaseState, can_deploy: bool) -> SafeString:
    links = [format_html('<a href="{}">Release page</a>', release_url(release.pk))]
    if can_deploy and state.experiment:
        links.append(
            format_html('<a href="{}">Stop experiment</a>', verb_url("experiment_stop", release.pk))
        )
    return format_html_join(mark_safe(" · "), "{}", ((link,) for link in links))
