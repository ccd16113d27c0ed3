from django.contrib import admin
from django.urls import include, path

admin.site.site_header = "Prompt Registry"
admin.site.site_title = "Prompt Registry"
admin.site.index_title = "Prompts, versions and releases"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("api.urls")),
]

handler404 = "api.problems.not_found_view"
handler500 = "api.problems.server_error_view"
