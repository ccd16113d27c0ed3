"""The sample values an author last previewed a version with, kept in their session for the
playground (``registry.admin.samples``): per version, the newest kept, bounded in count and size,
and written only when they change."""

from __future__ import annotations

from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.test import RequestFactory

from registry.admin.samples import (
    SAMPLES_MAX_CHARS,
    VERSIONS_KEPT,
    samples_recall,
    samples_remember,
)


def request_with_session():
    request = RequestFactory().get("/")
    request.session = SessionStore()
    return request


def test_the_last_preview_of_each_version_is_recalled():
    request = request_with_session()
    samples_remember(request, version_id=1, values={"name": "Ada"}, locale="fr")
    samples_remember(request, version_id=2, values={"name": "Bo"}, locale="")
    samples_remember(request, version_id=1, values={"name": "Cy"}, locale="en")

    assert samples_recall(request, version_id=1) == ({"name": "Cy"}, "en")
    assert samples_recall(request, version_id=2) == ({"name": "Bo"}, "")
    assert samples_recall(request, version_id=3) is None


def test_an_unchanged_preview_does_not_write_the_session_again():
    request = request_with_session()
    samples_remember(request, version_id=1, values={"name": "Ada"}, locale="en")
    request.session.modified = False

    samples_remember(request, version_id=1, values={"name": "Ada"}, locale="en")

    assert not request.session.modified


def test_the_oldest_versions_go_first_and_a_huge_sample_is_not_kept():
    request = request_with_session()
    for version_id in range(VERSIONS_KEPT + 5):
        samples_remember(request, version_id=version_id, values={"n": version_id}, locale="")
    samples_remember(request, version_id=999, values={"n": "x" * SAMPLES_MAX_CHARS}, locale="")

    assert samples_recall(request, version_id=4) is None
    assert samples_recall(request, version_id=5) == ({"n": 5}, "")
    assert samples_recall(request, version_id=999) is None
