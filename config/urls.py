from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from api.mcpserver.view import mcp_view
from api.metrics import metrics_view

# status_admin: importing it adds /admin/status/, the operator's page, to the admin site's URLs.
from . import status_admin, views  # noqa: F401
from .site import by_use

admin.site.site_header = "Prompt Registry"
admin.site.site_title = "Prompt Registry"
admin.site.index_title = "Prompts, versions and releases"
admin.site.site_url = "/"  # "View site": the home page (config/views.py)
admin.site.get_app_list = by_use(admin.site.get_app_list)  # Prompts first (config/site.py)

urlpatterns = [
    path("", views.home, name="home"),
    # Also answered ahead of the middleware stack (config.middleware.ProbeMiddleware).
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    # Answered by api.metrics.MetricsMiddleware before the stack; named here to be reversed.
    path("metrics", metrics_view, name="metrics"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
    # OpenAI's chat completions and responses, for a registry prompt (docs/openai-compatible.md).
    path(f"{settings.OPENAI_COMPAT_PREFIX}/", include("api.openai_compat.urls")),
    # The MCP server over streamable HTTP (docs/mcp.md, decision 0043).
    path("mcp", mcp_view, name="mcp"),
]

handler404 = "api.problems.not_found_view"
handler500 = "api.problems.server_error_view"
