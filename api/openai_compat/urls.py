"""The OpenAI-compatible endpoints under ``OPENAI_COMPAT_PREFIX`` (config/urls.py mounts them):
the two operations, and OpenAI's 404 for any other address there."""

from django.urls import path, re_path

from . import errors, views

urlpatterns = [
    path("chat/completions", views.chat_completions_view, name="openai-chat-completions"),
    path("responses", views.responses_view, name="openai-responses"),
    re_path(r"^(?P<rest>.*)$", errors.not_found_view, name="openai-not-found"),
]
