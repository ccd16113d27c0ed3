from django.urls import path, register_converter
from django.urls.converters import StringConverter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import (
    calls,
    canary,
    change_requests,
    evaluations,
    events,
    experiments,
    gates,
    promptfiles,
    prompts,
    releases,
    run,
    runtime,
    schedules,
    stream,
    versions,
)


class PromptKeyConverter(StringConverter):
    """A prompt key; the string as it is (``StringConverter``), which the runtime path's routes
    then need not convert (``api.middleware.fast_routes``)."""

    regex = r"[a-z0-9][a-z0-9._-]*"


class EnvironmentConverter(PromptKeyConverter):
    """An environment name as ``releases.models.Environment`` allows it: any other address is a
    404, on the runtime path too (whose routes are these patterns, ``api.middleware``)."""

    regex = r"[a-z][a-z0-9-]*"


class RequestIdConverter(PromptKeyConverter):
    """A call's request id as a caller may have chosen it (events take any text of up to 100
    characters), less what no stored id holds: a NUL, which PostgreSQL's text refuses, would
    otherwise reach the query as an error instead of being the 404 it is."""

    regex = r"[^/\x00]{1,100}"


register_converter(PromptKeyConverter, "key")
register_converter(RequestIdConverter, "request_id")
register_converter(EnvironmentConverter, "environment")

R = "releases/<environment:environment>/<key:key>"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("prompts", prompts.PromptCollectionApi.as_view(), name="prompts"),
    # --- prompts as files (registry.sync): what `promptregistry pull`, `push` and `diff` send ---
    path("prompt-files", promptfiles.PromptFileListApi.as_view(), name="prompt-files"),
    path("prompt-files/plan", promptfiles.PromptFilePlanApi.as_view(), name="prompt-files-plan"),
    path(
        "prompt-files/import",
        promptfiles.PromptFileImportApi.as_view(),
        name="prompt-files-import",
    ),
    path("prompts/<key:key>", prompts.PromptDetailApi.as_view(), name="prompt"),
    path("prompts/<key:key>/versions", versions.VersionCollectionApi.as_view(), name="versions"),
    path(
        "prompts/<key:key>/versions/<int:number>",
        versions.VersionDetailApi.as_view(),
        name="version",
    ),
    path(
        "prompts/<key:key>/versions/<int:number>/commit",
        versions.VersionCommitApi.as_view(),
        name="version-commit",
    ),
    path(
        "prompts/<key:key>/versions/<int:number>/diff",
        versions.VersionDiffApi.as_view(),
        name="version-diff",
    ),
    path(
        "prompts/<key:key>/versions/<int:number>/render",
        versions.VersionRenderApi.as_view(),
        name="version-render",
    ),
    # The runtime path: their views are ``runtime_view``s, so RuntimeMiddleware answers these
    # URLs (read from here) before the middleware stack; the URLconf also keeps them reachable
    # (and reversible) behind any stack.
    path("prompts/<key:key>/resolve", runtime.resolve_view, name="resolve"),
    path("prompts/<key:key>/render", runtime.render_view, name="render"),
    path("prompts/<key:key>/run", run.run_view, name="run"),
    path(
        "calls/<request_id:request_id>/feedback",
        calls.CallFeedbackApi.as_view(),
        name="call-feedback",
    ),
    path("environments/<environment:environment>/bundle", runtime.bundle_view, name="bundle"),
    path("environments/<environment:environment>/stream", stream.stream_view, name="stream"),
    path("environments", releases.EnvironmentListApi.as_view(), name="environments"),
    path("events", events.EventBatchApi.as_view(), name="events"),
    path(R, releases.ReleaseDetailApi.as_view(), name="release"),
    path(f"{R}/history", releases.ReleaseHistoryApi.as_view(), name="release-history"),
    path(f"{R}/deploy", releases.ReleaseDeployApi.as_view(), name="release-deploy"),
    path(f"{R}/canary", releases.ReleaseCanaryStartApi.as_view(), name="release-canary"),
    path(
        f"{R}/canary/percent",
        releases.ReleaseCanaryPercentApi.as_view(),
        name="release-canary-percent",
    ),
    path(
        f"{R}/canary/promote",
        releases.ReleaseCanaryPromoteApi.as_view(),
        name="release-canary-promote",
    ),
    path(
        f"{R}/canary/abort", releases.ReleaseCanaryAbortApi.as_view(), name="release-canary-abort"
    ),
    path(
        f"{R}/experiment", releases.ReleaseExperimentStartApi.as_view(), name="release-experiment"
    ),
    path(
        f"{R}/experiment/stop",
        releases.ReleaseExperimentStopApi.as_view(),
        name="release-experiment-stop",
    ),
    path(f"{R}/shadow", releases.ReleaseShadowStartApi.as_view(), name="release-shadow"),
    path(f"{R}/shadow/stop", releases.ReleaseShadowStopApi.as_view(), name="release-shadow-stop"),
    path(f"{R}/rollback", releases.ReleaseRollbackApi.as_view(), name="release-rollback"),
    path(f"{R}/schedule", schedules.ScheduleApi.as_view(), name="release-schedule"),
    path(
        f"{R}/schedule/cancel",
        schedules.ScheduleCancelApi.as_view(),
        name="release-schedule-cancel",
    ),
    # --- change requests (decision 0048) ---
    path(
        "change-requests",
        change_requests.ChangeRequestCollectionApi.as_view(),
        name="change-requests",
    ),
    path(
        "change-requests/<int:change_request_id>",
        change_requests.ChangeRequestDetailApi.as_view(),
        name="change-request",
    ),
    path(
        "change-requests/<int:change_request_id>/approve",
        change_requests.ChangeRequestApproveApi.as_view(),
        name="change-request-approve",
    ),
    path(
        "change-requests/<int:change_request_id>/reject",
        change_requests.ChangeRequestRejectApi.as_view(),
        name="change-request-reject",
    ),
    path(
        "change-requests/<int:change_request_id>/apply",
        change_requests.ChangeRequestApplyApi.as_view(),
        name="change-request-apply",
    ),
    path(
        "change-requests/<int:change_request_id>/withdraw",
        change_requests.ChangeRequestWithdrawApi.as_view(),
        name="change-request-withdraw",
    ),
    # --- eval runs ---
    path(
        "prompts/<key:key>/versions/<int:number>/evaluations",
        evaluations.EvalRunStartApi.as_view(),
        name="evaluation-start",
    ),
    path("prompts/<key:key>/evaluations", evaluations.EvalRunListApi.as_view(), name="evaluations"),
    path("evaluations/<int:run_id>", evaluations.EvalRunDetailApi.as_view(), name="evaluation"),
    path(
        "evaluations/<int:run_id>/cancel",
        evaluations.EvalRunCancelApi.as_view(),
        name="evaluation-cancel",
    ),
    # --- promotion gates ---
    path(
        "environments/<environment:environment>/gates",
        gates.EnvironmentGateCollectionApi.as_view(),
        name="environment-gates",
    ),
    path(
        "environments/<environment:environment>/gates/<int:gate_id>",
        gates.EnvironmentGateDetailApi.as_view(),
        name="environment-gate",
    ),
    path(
        "prompts/<key:key>/versions/<int:number>/gates",
        gates.VersionGateStatusApi.as_view(),
        name="version-gates",
    ),
    # --- canary analysis ---
    path(
        f"{R}/canary/analysis", canary.CanaryAnalysisApi.as_view(), name="release-canary-analysis"
    ),
    path(
        f"{R}/canary/analysis/resume",
        canary.CanaryAnalysisResumeApi.as_view(),
        name="release-canary-analysis-resume",
    ),
    path(
        f"{R}/canary/analysis/stop",
        canary.CanaryAnalysisStopApi.as_view(),
        name="release-canary-analysis-stop",
    ),
    # --- experiment results ---
    path(f"{R}/experiments", experiments.ExperimentListApi.as_view(), name="release-experiments"),
    path(
        f"{R}/experiment/results",
        experiments.ExperimentResultsApi.as_view(),
        name="release-experiment-results",
    ),
]
