"""Bad input on the runtime path is the caller's 400, never an outage.

Found by the API fuzzing (tests/api/test_fuzz.py): a NUL in an environment name reached
PostgreSQL, which refuses such a string (DataError), and the release cache took any database error
for an outage, so the answer was 503 "database unavailable". Names are now checked before any
lookup, and only errors that mean the database cannot be reached count as an outage.
"""

from __future__ import annotations

import json

import pytest
from django.db import DataError

from releases import cache
from releases.cache import ReleaseCache
from tests.api.helpers import assert_problem

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
RESOLVE = f"/api/v1/prompts/{KEY}/resolve"

# Names no environment can have: PostgreSQL refuses the first outright.
IMPOSSIBLE = ["staging\x00", "\x00", "Staging", "staging\n", "-staging", "s" * 51, "stag ing"]


@pytest.fixture
def service(make_client):
    return make_client("prompts:read", "runs:execute", name="checkout-service")


@pytest.fixture(params=["trusted", "untrusted"])
def release_cache(request, monkeypatch):
    """The release cache as it runs with a Redis listener (snapshots) and without (each lookup
    reads the database): both paths must refuse the name before reading anything."""
    if request.param == "untrusted":
        monkeypatch.setattr(cache, "_cache", ReleaseCache(listen=False))
    return cache.release_cache()


def _problem_at_environment(response) -> None:
    body = assert_problem(response, 400, "/problems/validation-error")
    assert [e["pointer"] for e in body["errors"]] == ["/environment"]
    assert "X-Registry-Degraded" not in response


@pytest.mark.parametrize("environment", IMPOSSIBLE)
def test_an_impossible_environment_name_is_a_400_on_resolve(
    service, released, release_cache, environment
):
    _problem_at_environment(service.get(RESOLVE, {"environment": environment}))


@pytest.mark.parametrize("path", ["render", "run"])
@pytest.mark.parametrize("environment", ["staging\x00", "Staging"])
def test_an_impossible_environment_name_is_a_400_on_render_and_run(
    service, released, release_cache, path, environment
):
    response = service.post(
        f"/api/v1/prompts/{KEY}/{path}",
        data=json.dumps({"environment": environment, "variables": {"customer_name": "Ana"}}),
        content_type="application/json",
    )
    _problem_at_environment(response)


@pytest.mark.parametrize("path", ["bundle", "stream"])
def test_an_impossible_environment_in_a_path_is_nothing_there(service, released, path):
    for environment in ("Staging", "staging%00", "-staging"):
        response = service.get(f"/api/v1/environments/{environment}/{path}")
        assert_problem(response, 404, "/problems/not-found")


def test_a_refused_query_is_no_outage(service, released, monkeypatch):
    """Defence in depth: whatever query PostgreSQL refuses for its data, the cache does not
    answer it as a database outage (503 database-unavailable); it is the bug it is."""
    from releases import selectors

    def refused(**kwargs):
        raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")

    monkeypatch.setattr(cache, "_cache", ReleaseCache(listen=False))
    monkeypatch.setattr(selectors, "served_releases", refused)
    with pytest.raises(DataError):
        cache.release_cache().lookup("staging", KEY)
    with pytest.raises(DataError):
        cache.release_cache().environment("staging")


def test_a_bearer_token_with_a_nul_is_an_unknown_key(released, client):
    """The key's lookup id is checked before it is looked up: a NUL never reaches PostgreSQL."""
    for path in (f"{RESOLVE}?environment=staging", f"/api/v1/prompts/{KEY}"):
        response = client.get(path, HTTP_AUTHORIZATION="Bearer pr_\x00\x00\x00\x00\x00\x00_secret")
        assert_problem(response, 401, "/problems/unauthenticated")
