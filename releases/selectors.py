"""Reads of releases: environments, a release and its history, the board, and the served
snapshots the runtime cache is built from (STYLE R16: a fixed number of queries per call,
whatever the number of prompts, versions or events)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from datetime import datetime

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.utils import timezone
from promptregistry.core.snippets import SnippetText

from registry.content import ModelBinding
from registry.models import LocalizedTemplate, Prompt, PromptVersion, SnippetUse, Variable
from registry.rendering import templates_snippet_refs
from registry.snippets import Following, Ref, snippet_library
from registry.variables import VariableSpec

from .errors import ChangeRequestNotFound, EnvironmentNotFound, ReleaseNotFound, ScheduleNotFound
from .models import ChangeRequest, Environment, Release, ReleaseEvent, Schedule, ScheduledStep
from .nodes import HeldEnvironment
from .resolution import ServedRelease, ServedVersion
from .state import release_state


def environment_list(*, names: Iterable[str] = ()) -> QuerySet[Environment]:
    """Every environment in promotion order; only ``names`` when given (a key's limits)."""
    environments = Environment.objects.order_by("position")
    names = list(names)
    return environments.filter(name__in=names) if names else environments


def environment_exists(*, name: str) -> bool:
    return Environment.objects.filter(name=name).exists()


def environment_get(*, name: str) -> Environment:
    try:
        return Environment.objects.get(name=name)
    except Environment.DoesNotExist as exc:
        known = ", ".join(environment_list().values_list("name", flat=True))
        raise EnvironmentNotFound(f"There is no environment {name!r}; known: {known}.") from exc


def _releases() -> QuerySet[Release]:
    return Release.objects.select_related(
        "prompt", "environment", "stable_version", "canary_version"
    )


def release_get(*, prompt: Prompt, environment: Environment) -> Release:
    try:
        return _releases().get(prompt=prompt, environment=environment)
    except Release.DoesNotExist as exc:
        raise ReleaseNotFound(
            f"{prompt.key} has never been released in {environment.name}."
        ) from exc


def environment_stable_versions(*, environment: Environment) -> QuerySet[PromptVersion]:
    """The version each of the environment's releases serves as stable (what a subject outside
    any canary, experiment or shadow gets), in one subquery."""
    stable = Release.objects.filter(environment=environment, stable_version__isnull=False)
    return PromptVersion.objects.filter(pk__in=stable.values("stable_version"))


def release_history(*, release: Release) -> QuerySet[ReleaseEvent]:
    """Newest first; paginate it, never load it whole."""
    return ReleaseEvent.objects.filter(release=release).order_by("-id")


def release_board(*, environment: Environment | None = None) -> QuerySet[Release]:
    """Releases with their versions and latest event (``latest_events``, a list of at most one),
    in two queries for any number of rows: one environment's, or every environment's (the admin's
    changelist filters it itself)."""
    latest = ReleaseEvent.objects.order_by("-id")[:1]  # a window function per release, one query
    releases = (
        _releases()
        .prefetch_related(Prefetch("events", queryset=latest, to_attr="latest_events"))
        .order_by("prompt__key")
    )
    return releases if environment is None else releases.filter(environment=environment)


def _schedules() -> QuerySet[Schedule]:
    steps = ScheduledStep.objects.select_related("release_event").order_by("position")
    return Schedule.objects.select_related("prompt", "environment").prefetch_related(
        Prefetch("steps", queryset=steps)
    )


def schedule_active(*, prompt: Prompt, environment: Environment) -> Schedule | None:
    """The release's active schedule with its steps, or None (at most one: a constraint)."""
    return (
        _schedules()
        .filter(prompt=prompt, environment=environment, state=Schedule.State.ACTIVE)
        .first()
    )


def schedule_shown(*, prompt: Prompt, environment: Environment) -> Schedule:
    """The release's active schedule, else its latest (how it ended: done, cancelled, stopped by
    a skipped step), with its steps; ``ScheduleNotFound`` if it has never been scheduled."""
    schedule = schedule_active(prompt=prompt, environment=environment) or (
        _schedules().filter(prompt=prompt, environment=environment).order_by("-id").first()
    )
    if schedule is None:
        raise ScheduleNotFound(f"{prompt.key} has never been scheduled in {environment.name}.")
    return schedule


def schedule_by_id(*, schedule_id: int) -> Schedule:
    """One schedule with its steps (an id the caller holds: it exists)."""
    return _schedules().get(pk=schedule_id)


def schedules_active_by_release(releases: Iterable[Release]) -> dict[tuple[int, int], Schedule]:
    """The active schedule of each release, by (prompt id, environment id), with its steps: two
    queries for a whole page of the board."""
    releases = list(releases)
    prompts = {r.prompt_id for r in releases}
    environments = {r.environment_id for r in releases}
    active = _schedules().filter(
        prompt_id__in=prompts, environment_id__in=environments, state=Schedule.State.ACTIVE
    )
    return {(s.prompt_id, s.environment_id): s for s in active}


def prompt_releases(*, prompt_ids: Iterable[int]) -> QuerySet[Release]:
    """The releases of these prompts in every environment, versions joined: one query for a
    whole page of prompts (the prompt list's columns, a prompt's page)."""
    return _releases().filter(prompt_id__in=list(prompt_ids)).order_by("environment__position")


def prompt_release_history(*, prompt: Prompt) -> QuerySet[ReleaseEvent]:
    """Every release event of a prompt, in all its environments, newest first; paginate it."""
    return (
        ReleaseEvent.objects.filter(release__prompt=prompt)
        .select_related("release__environment", "release__prompt", "restores")
        .order_by("-id")
    )


EVENTS_PER_PAGE = 20


def events_page(
    events: QuerySet[ReleaseEvent], *, before: int | None, size: int = EVENTS_PER_PAGE
) -> tuple[list[ReleaseEvent], int | None]:
    """One page of an event list, newest first, and the cursor of the next (older) page.

    Keyset pagination on the id: an append-only log only grows at the top, so a page never shifts
    under the reader, and no query counts the whole history."""
    if before is not None:
        events = events.filter(pk__lt=before)
    rows = list(events.order_by("-id")[: size + 1])
    older = rows[size - 1].pk if len(rows) > size else None
    return rows[:size], older


def _served_versions(pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], ServedVersion]:
    """The versions named by (prompt id, number) pairs, with their content, in three queries."""
    pairs = set(pairs)
    if not pairs:
        return {}
    prompt_ids = {p for p, _ in pairs}
    numbers = {n for _, n in pairs}
    versions = PromptVersion.objects.filter(
        prompt_id__in=prompt_ids, number__in=numbers
    ).prefetch_related(
        Prefetch("variables", queryset=Variable.objects.order_by("position")),
        Prefetch("templates", queryset=LocalizedTemplate.objects.order_by("locale")),
    )
    served = {}
    for v in versions:
        if (v.prompt_id, v.number) not in pairs:
            continue  # the IN lists over-select across prompts; the pairs decide
        served[(v.prompt_id, v.number)] = ServedVersion(
            pk=v.pk,
            number=v.number,
            content_hash=v.content_hash,
            variables=tuple(
                VariableSpec(
                    name=var.name,
                    type=var.type,
                    required=var.required,
                    default=var.default,
                    description=var.description,
                    after=var.after or None,
                ).as_dict()
                for var in v.variables.all()
            ),
            model={
                "provider": v.provider,
                "model": v.model_name,
                "parameters": v.parameters,
                "response_schema": v.response_schema,
                "fallbacks": v.fallbacks,
                # Only when set, as in the canonical content (registry.content.ModelBinding).
                **ModelBinding(
                    provider=v.provider,
                    model=v.model_name,
                    tools=tuple(v.tools or ()),
                    tool_choice=v.tool_choice,
                    parallel_tool_calls=v.parallel_tool_calls,
                ).tools_dict(),
                **({"cache": v.cache} if v.cache is not None else {}),
                **({"guardrails": v.guardrails} if v.guardrails is not None else {}),
            },
            templates=(
                templates := {
                    t.locale: {
                        "system": t.system,
                        "context": t.context,
                        "instruction": t.instruction,
                        "format": t.format,
                    }
                    for t in v.templates.all()
                }
            ),
            snippets=templates_snippet_refs(templates),
        )
    return served


def _pinned_snippets(versions: Iterable[ServedVersion]) -> dict[Ref, SnippetText]:
    """The pinned snippet versions ``versions`` include, every level (no query without one)."""
    pinned = {ref for v in versions for ref in v.snippets if ref[1] is not None}
    if not pinned:
        return {}
    # Followed includes are not resolved here: ServedSnippets reads them live.
    return snippet_library(refs=pinned, following=lambda keys: {})


def stable_following(environment: str) -> Following:
    """How an environment resolves includes that follow: each snippet's stable version there
    (evaluations and shadow runs, which render outside the release cache). One query a call."""

    def following(keys: Collection[str]) -> dict[str, int]:
        return dict(
            Release.objects.filter(
                environment__name=environment,
                prompt__key__in=list(keys),
                prompt__is_snippet=True,
                stable_version__isnull=False,
            ).values_list("prompt__key", "stable_version__number")
        )

    return following


def served_version(*, prompt_id: int, number: int) -> ServedVersion | None:
    """One version as the runtime serves it (a shadow run renders it in a worker; the playground
    runs a draft too)."""
    return _served_versions([(prompt_id, number)]).get((prompt_id, number))


def release_with_version(*, release: ServedRelease, number: int) -> ServedRelease | None:
    """``release`` able to serve committed version ``number`` of its prompt too, for a caller
    that pins it (decision 0042): the release as it is when it serves that version already (no
    query), else a copy holding the version and the snippet versions it pins (a few queries, on
    each such call); None when the prompt has no committed version ``number``."""
    if number in release.versions:
        return release
    committed = PromptVersion.objects.filter(
        prompt_id=release.prompt_id, number=number, status=PromptVersion.Status.COMMITTED
    )
    if not committed.exists():
        return None
    version = served_version(prompt_id=release.prompt_id, number=number)
    if version is None:  # deleted since: versions are not, but a prompt may be
        return None
    return dataclasses.replace(
        release,
        versions={**release.versions, number: version},
        pinned={**release.pinned, **_pinned_snippets([version])},
    )


def served_releases(*, environment: str, prompt: str | None = None) -> list[ServedRelease]:
    """Snapshots of the environment's releases (or one prompt's) as the runtime serves them."""
    releases = list(
        _releases().filter(
            environment__name=environment, **({"prompt__key": prompt} if prompt is not None else {})
        )
    )
    states = {r.pk: release_state(r) for r in releases}
    versions = _served_versions((r.prompt_id, n) for r in releases for n in states[r.pk].versions())
    pinned = _pinned_snippets(versions.values())
    return [
        ServedRelease(
            prompt=r.prompt.key,
            environment=environment,
            prompt_id=r.prompt_id,
            environment_id=r.environment_id,
            default_locale=r.prompt.default_locale,
            revision=r.revision,
            state=states[r.pk],
            versions={n: versions[(r.prompt_id, n)] for n in states[r.pk].versions()},
            pinned=pinned,
        )
        for r in releases
    ]


SNIPPET_EVENTS_SHOWN = 20


def followed_snippet_events(*, release: Release) -> list[ReleaseEvent]:
    """The release changes, in the same environment, of the snippets that the versions this
    release serves follow (``{{ snippet("key") }}``, not pinned), newest first: the history of
    what those includes served, which the release's own events do not show (decision 0035).
    Two queries, the last ``SNIPPET_EVENTS_SHOWN`` events."""
    numbers = release_state(release).versions()
    if not numbers:
        return []
    keys = SnippetUse.objects.filter(
        version__prompt_id=release.prompt_id, version__number__in=numbers, pinned__isnull=True
    ).values("snippet__key")
    return list(
        ReleaseEvent.objects.filter(
            release__environment_id=release.environment_id, release__prompt__key__in=keys
        )
        .select_related("release__prompt")
        .order_by("-id")[:SNIPPET_EVENTS_SHOWN]
    )


def release_revisions(*, environment: str) -> dict[str, int]:
    """prompt key -> revision, for the cache's periodic check (one narrow query)."""
    return dict(
        Release.objects.filter(environment__name=environment).values_list("prompt__key", "revision")
    )


def environment_revision_totals(*, names: Collection[str]) -> dict[str, HeldEnvironment]:
    """Per environment of ``names``: its releases and the sum of their revisions, as a process's
    status record counts what it holds (releases.nodes). One aggregate query."""
    totals = (
        Release.objects.filter(environment__name__in=list(names))
        .values("environment__name")
        .annotate(releases=Count("id"), revisions=Sum("revision"))
        .order_by()
    )
    return {
        row["environment__name"]: HeldEnvironment(row["releases"], row["revisions"] or 0)
        for row in totals
    }


# --- change requests (decision 0048) ---------------------------------------------------------------


def change_requests_in_state(
    requests: QuerySet[ChangeRequest], state: str, *, now: datetime
) -> QuerySet[ChangeRequest]:
    """``requests`` in ``state`` as of ``now`` (``ChangeRequest.state_at``): an open or approved
    request past its time counts as expired, before the sweep marks it."""
    State = ChangeRequest.State
    live = (State.OPEN, State.APPROVED)
    if state in live:
        return requests.filter(state=state, expires_at__gt=now)
    if state == State.EXPIRED:
        return requests.filter(Q(state=State.EXPIRED) | Q(state__in=live, expires_at__lte=now))
    return requests.filter(state=state)


def change_request_list(
    *,
    environments: Iterable[str] = (),
    environment: str | None = None,
    prompt: str | None = None,
    state: str | None = None,
    now: datetime | None = None,
) -> QuerySet[ChangeRequest]:
    """Change requests, newest first; ``environments`` limits them (an API key's limit),
    ``environment``, ``prompt`` (a key) and ``state`` filter them."""
    requests = ChangeRequest.objects.select_related("prompt", "environment").prefetch_related(
        "reviews"
    )
    if environments:
        requests = requests.filter(environment__name__in=list(environments))
    if environment:
        requests = requests.filter(environment__name=environment)
    if prompt:
        requests = requests.filter(prompt__key=prompt)
    if state:
        requests = change_requests_in_state(requests, state, now=now or timezone.now())
    return requests.order_by("-id")


def change_request_get(*, change_request_id: int) -> ChangeRequest:
    change_request = (
        ChangeRequest.objects.select_related("prompt", "environment", "release_event")
        .prefetch_related("reviews")
        .filter(pk=change_request_id)
        .first()
    )
    if change_request is None:
        raise ChangeRequestNotFound()
    return change_request


def change_request_conflicts(
    requests: Collection[ChangeRequest], *, now: datetime | None = None
) -> dict[int, list[int]]:
    """For each live request of ``requests``, the other live requests on the same release (one
    query for the lot): several open requests on one release conflict, since applying one moves
    the release the others were proposed against."""
    now = now or timezone.now()
    live = [r for r in requests if r.state_at(now) in (r.State.OPEN, r.State.APPROVED)]
    if not live:
        return {}
    pairs = Q()
    for request in live:
        pairs |= Q(prompt_id=request.prompt_id, environment_id=request.environment_id)
    others = change_requests_in_state(ChangeRequest.objects.filter(pairs), "open", now=now) | (
        change_requests_in_state(ChangeRequest.objects.filter(pairs), "approved", now=now)
    )
    by_release: dict[tuple[int, int], list[int]] = {}
    for pk, prompt_id, environment_id in others.values_list("pk", "prompt_id", "environment_id"):
        by_release.setdefault((prompt_id, environment_id), []).append(pk)
    return {
        r.pk: sorted(pk for pk in by_release.get((r.prompt_id, r.environment_id), []) if pk != r.pk)
        for r in live
    }
