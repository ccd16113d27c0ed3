from django.urls import path, register_converter
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from . import prompts, versions


class PromptKeyConverter:
    regex = r"[a-z0-9][a-z0-9._-]*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(PromptKeyConverter, "key")

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("prompts", prompts.PromptCollectionApi.as_view(), name="prompts"),
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
]
