"""The runtime path: GET .../resolve, POST .../render and GET /environments/{e}/bundle.

Plain Django views over the in-process release cache (api/runtime.py): answers with an ETag and
304, problem documents for every refusal, zero SQL on a warm cache, and a header saying so when
the database is down and a cached copy answers."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from api.services import apikey_revoke
from registry.actors import Actor
from releases import cache, services
from releases.cache import ReleaseCache
from tests.api.helpers import assert_problem, error_codes
from tests.factories import PromptFactory, make_version

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
RESOLVE = f"/api/v1/prompts/{KEY}/resolve"
RENDER = f"/api/v1/prompts/{KEY}/render"
MANAGER = Actor(label="release-manager")
DEGRADED = "X-Registry-Degraded"


def bundle_url(environment: str) -> str:
    return f"/api/v1/environments/{environment}/bundle"


@pytest.fixture
def service(make_client):
    """A service calling the runtime path: reads prompts in every environment."""
    return make_client("prompts:read", name="checkout-service")


def render(client, body, **extra):
    return client.post(RENDER, json.dumps(body), content_type="application/json", **extra)


def change(released, service_, environment: str = "staging", **kwargs):
    return service_(
        prompt=released.prompt,
        environment=released.environments[environment],
        actor=MANAGER,
        **kwargs,
    )


@pytest.fixture
def publish_changes(django_capture_on_commit_callbacks):
    """Runs a release change's after-commit callbacks (the pub/sub message), as a real commit
    would: inside the test's transaction they would otherwise never run."""

    def run(call):
        with django_capture_on_commit_callbacks(execute=True):
            return call()

    return run


# --- resolve -------------------------------------------------------------------------------------


def test_resolve_answers_the_stable_version_with_everything_a_client_needs(service, released):
    response = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "private, no-cache"
    assert response["ETag"].startswith('"')
    assert DEGRADED not in response
    body = response.json()
    v2 = released.versions[2]
    assert body == {
        "prompt": KEY,
        "environment": "staging",
        "version": 2,
        "variant": "stable",
        "reason": "stable",
        "sticky": True,
        "locale": "en",
        "requested_locale": "en",
        "sections": {
            "system": "You are a support agent (v2)",
            "context": "",
            "instruction": body["sections"]["instruction"],
            "format": "",
        },
        "variables": [
            {
                "name": "customer_name",
                "type": "string",
                "required": True,
                "default": None,
                "description": "",
            },
            {
                "name": "order_total",
                "type": "number",
                "required": False,
                "default": None,
                "description": "",
            },
        ],
        "model": {
            "provider": "local",
            "model": "echo-1",
            "parameters": {"temperature": 0.2},
            "response_schema": None,
            "fallbacks": [],
        },
        "revision": released.release("staging").revision,
        "content_hash": v2.content_hash,
        "shadow": [],
        "snippets": [],
        "trace": {"bucket": None, "salt": "", "hash_version": 1},
    }
    assert "{{ customer_name }}" in body["sections"]["instruction"]


def test_each_environment_serves_its_own_release(service, released):
    production = service.get(RESOLVE, {"environment": "production", "subject": "user-1"})

    assert (production.json()["version"], production.json()["environment"]) == (1, "production")


def test_resolve_names_the_canary_with_its_bucket_and_salt(service, released):
    release = change(released, services.release_canary_start, version=3, percent=Decimal(100))

    body = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"}).json()

    assert (body["version"], body["variant"], body["reason"]) == (3, "canary", "canary")
    assert body["trace"]["salt"] == release.canary_salt
    assert 0 <= body["trace"]["bucket"] < 10000


def test_resolve_names_the_experiment_variant(service, released):
    change(
        released,
        services.release_experiment_start,
        name="tone",
        variants=[("warm", 3, Decimal(100)), ("brief", 1, Decimal(0))],
    )

    body = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"}).json()

    assert (body["version"], body["variant"], body["reason"]) == (3, "warm", "experiment")


def test_resolve_lists_the_shadow_versions_of_a_sampled_call(service, released):
    change(released, services.release_shadow_start, versions=[3], sample_percent=Decimal(100))

    body = service.get(RESOLVE, {"environment": "staging", "subject": "user-1"}).json()

    assert (body["version"], body["shadow"]) == (2, [3])


def test_an_answer_without_a_subject_says_sticky_false(service, released):
    change(released, services.release_canary_start, version=3, percent=Decimal(50))

    body = service.get(RESOLVE, {"environment": "staging"}).json()

    assert body["sticky"] is False
    assert body["trace"]["bucket"] is not None


@pytest.mark.parametrize(
    ("requested", "used", "system"),
    [
        ("fr-CA", "fr", "Vous êtes un agent (v2)"),
        ("fr", "fr", "Vous êtes un agent (v2)"),
        ("de-AT", "en", "You are a support agent (v2)"),
    ],
)
def test_the_locale_falls_back_to_the_language_then_the_default(
    service, released, requested, used, system
):
    body = service.get(RESOLVE, {"environment": "staging", "locale": requested}).json()

    assert (body["requested_locale"], body["locale"]) == (requested, used)
    assert body["sections"]["system"] == system


def test_a_malformed_locale_is_a_400(service, released):
    response = service.get(RESOLVE, {"environment": "staging", "locale": "not a locale"})

    assert_problem(response, 400, "/problems/invalid-locale")


@pytest.mark.parametrize(
    ("url", "environment"),
    [
        ("/api/v1/prompts/no.such-prompt/resolve", "staging"),
        (RESOLVE, "nowhere"),
        (RESOLVE, "development"),  # exists, never released there
    ],
)
def test_an_unknown_prompt_or_environment_is_not_released(service, released, url, environment):
    response = service.get(url, {"environment": environment})

    assert_problem(response, 404, "/problems/not-released")


def test_resolve_needs_an_environment(service, released):
    body = assert_problem(service.get(RESOLVE), 400, "/problems/validation-error")

    assert body["errors"][0]["pointer"] == "/environment"


def test_a_repeated_resolve_answers_304_for_its_etag(service, released):
    query = {"environment": "staging", "subject": "user-1"}
    etag = service.get(RESOLVE, query)["ETag"]

    again = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=etag)
    weak = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=f'"other", W/{etag}')
    other = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH='"something-else"')

    assert (again.status_code, again["ETag"], again.content) == (304, etag, b"")
    assert again["Cache-Control"] == "private, no-cache"
    assert weak.status_code == 304
    assert other.status_code == 200


def test_answers_and_refusals_say_their_length_and_a_304_does_not(
    service, anonymous_client, released
):
    """The runtime path skips CommonMiddleware, which sets Content-Length on every other answer;
    without it the WSGI server would send the answer chunked. A 304's Content-Length would have
    to be the 200's (RFC 9110 8.6): it has none."""
    query = {"environment": "staging", "subject": "user-1"}
    answer = service.get(RESOLVE, query)
    refused = anonymous_client.get(RESOLVE, query)
    bad_host = service.get(RESOLVE, query, HTTP_HOST="elsewhere.example")
    not_modified = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=answer["ETag"])
    bundle = service.get(bundle_url("staging"))
    head = service.head(RESOLVE, query)

    assert bad_host.status_code == 400
    for response in (answer, refused, bad_host, bundle):
        assert int(response["Content-Length"]) == len(response.content) > 0
        assert response["X-Content-Type-Options"] == "nosniff"
    assert not_modified.status_code == 304
    assert "Content-Length" not in not_modified
    # A HEAD says the GET's length and sends no body.
    assert (head.status_code, head["Content-Length"], head.content) == (
        200,
        answer["Content-Length"],
        b"",
    )


def test_the_rest_of_the_stack_says_its_length_where_http_allows_one(service, released):
    """CommonMiddleware gives a length to the answers it sees, but not to one made before it (a
    refused Host), and a 0 where HTTP forbids one (a 204, a 304): RuntimeMiddleware's
    ``stack_headers`` sets both right on the way out."""
    bad_host = service.get("/api/v1/environments", HTTP_HOST="elsewhere.example")
    listed = service.get("/api/v1/environments")

    assert bad_host.status_code == 400
    for response in (bad_host, listed):
        assert int(response["Content-Length"]) == len(response.content) > 0
    # A version's 304 and a discard's 204 (tests/api/test_versions.py), a gate's 204
    # (tests/api/test_gates_api.py): no Content-Length.


def test_a_release_change_shows_at_once_and_changes_the_etag(service, released, publish_changes):
    query = {"environment": "staging", "subject": "user-1"}
    first = service.get(RESOLVE, query)

    publish_changes(
        lambda: change(released, services.release_canary_start, version=3, percent=Decimal(100))
    )

    after = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=first["ETag"])
    assert after.status_code == 200
    assert after.json()["version"] == 3
    assert after["ETag"] != first["ETag"]

    publish_changes(lambda: change(released, services.release_rollback))

    rolled_back = service.get(RESOLVE, query, HTTP_IF_NONE_MATCH=after["ETag"])
    assert (rolled_back.status_code, rolled_back.json()["version"]) == (200, 2)


def test_two_subjects_can_get_different_etags(service, released):
    change(released, services.release_canary_start, version=3, percent=Decimal(50))
    etags = {
        service.get(RESOLVE, {"environment": "staging", "subject": f"user-{i}"})["ETag"]
        for i in range(20)
    }

    assert len(etags) > 2  # the trace (bucket) differs, so the representation does


# --- who may resolve -----------------------------------------------------------------------------


def test_no_key_is_a_401_with_a_bearer_challenge(anonymous_client, released):
    response = anonymous_client.get(RESOLVE, {"environment": "staging"})

    assert_problem(response, 401, "/problems/unauthenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_an_unknown_key_is_a_401(anonymous_client, released):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Bearer pr_000000000000_nope")

    assert_problem(
        anonymous_client.get(RESOLVE, {"environment": "staging"}), 401, "/problems/unauthenticated"
    )


def test_a_key_without_prompts_read_is_a_403(make_client, released):
    writer = make_client("releases:write")

    response = writer.get(RESOLVE, {"environment": "staging"})

    body = assert_problem(response, 403, "/problems/insufficient-scope")
    assert body["required_scope"] == "prompts:read"


def test_a_key_limited_to_staging_cannot_read_production(make_client, released):
    staging_only = make_client("prompts:read", environments=("staging",))

    refused = staging_only.get(RESOLVE, {"environment": "production"})
    allowed = staging_only.get(RESOLVE, {"environment": "staging"})

    body = assert_problem(refused, 403, "/problems/environment-forbidden")
    assert body["environment"] == "production"
    assert allowed.status_code == 200
    assert_problem(
        staging_only.get(bundle_url("production")), 403, "/problems/environment-forbidden"
    )
    assert_problem(
        render(staging_only, {"environment": "production", "variables": {"customer_name": "Ana"}}),
        403,
        "/problems/environment-forbidden",
    )


def test_a_revoked_key_stops_working_at_once(service, released, publish_changes):
    assert service.get(RESOLVE, {"environment": "staging"}).status_code == 200

    publish_changes(lambda: apikey_revoke(key=service.key))

    assert_problem(
        service.get(RESOLVE, {"environment": "staging"}), 401, "/problems/unauthenticated"
    )


def test_a_key_created_after_the_keyring_was_loaded_works(service, make_client, released):
    assert service.get(RESOLVE, {"environment": "staging"}).status_code == 200

    # Its "key created" message is never delivered here (the test's transaction never commits).
    newcomer = make_client("prompts:read", name="newcomer")

    assert newcomer.get(RESOLVE, {"environment": "staging"}).status_code == 200


RUN = f"/api/v1/prompts/{KEY}/run"
STREAM = "/api/v1/environments/staging/stream"
# Each runtime view with the methods it answers: any other is a 405 naming them in ``Allow``
# (RFC 9110 15.5.6), as the DRF views' 405s do.
RUNTIME_ALLOWED = {
    RESOLVE: {"GET", "HEAD"},
    RENDER: {"POST"},
    RUN: {"POST"},
    bundle_url("staging"): {"GET", "HEAD"},
    STREAM: {"GET"},
}


@pytest.mark.parametrize(
    ("method", "url"),
    [
        (method, url)
        for url, allowed in RUNTIME_ALLOWED.items()
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        if method not in allowed
    ],
)
def test_other_methods_are_a_405_naming_the_allowed_ones(service, released, method, url):
    response = service.generic(method, url)

    problem = assert_problem(response, 405, "/problems/method-not-allowed")
    assert method in problem["detail"]
    assert {m.strip() for m in response["Allow"].split(",")} == RUNTIME_ALLOWED[url]


# --- render --------------------------------------------------------------------------------------


def test_render_adds_the_rendered_sections_and_chat_messages(service, released):
    response = render(
        service,
        {
            "environment": "staging",
            "subject": "user-1",
            "variables": {"customer_name": "Ana", "order_total": 12.5},
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["version"], body["variant"], body["sticky"]) == (2, "stable", True)
    assert body["rendered"] == {
        "system": "You are a support agent (v2)",
        "context": "",
        "instruction": "Greet Ana about the 12.5 refund.",
        "format": "",
    }
    assert body["messages"] == [
        {"role": "system", "content": "You are a support agent (v2)"},
        {"role": "user", "content": "Greet Ana about the 12.5 refund."},
    ]


def test_render_uses_the_locale_fallback(service, released):
    body = render(
        service,
        {"environment": "staging", "locale": "fr-CA", "variables": {"customer_name": "Ana"}},
    ).json()

    assert (body["locale"], body["rendered"]["instruction"]) == ("fr", "Saluez Ana.")


def test_render_lists_every_variable_problem(service, released):
    response = render(
        service,
        {"environment": "staging", "variables": {"customer_nam": "Ana", "order_total": "ten"}},
    )

    body = assert_problem(response, 400, "/problems/invalid-variables")
    assert sorted(error_codes(body)) == ["missing_variable", "unknown_variable", "wrong_type"]
    pointers = {e["code"]: e["pointer"] for e in body["errors"]}
    assert pointers == {
        "unknown_variable": "/variables/customer_nam",
        "missing_variable": "/variables/customer_name",
        "wrong_type": "/variables/order_total",
    }


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_an_oversized_body_is_a_413(service, released):
    response = render(
        service, {"environment": "staging", "variables": {"customer_name": "A" * 4096}}
    )

    assert_problem(response, 413, "/problems/request-too-large")


def test_a_body_that_is_not_json_is_refused(service, released):
    form = service.post(RENDER, {"environment": "staging"})
    broken = service.post(RENDER, "{not json", content_type="application/json")
    listed = service.post(RENDER, "[1, 2]", content_type="application/json")
    deep = service.post(RENDER, "[" * 100_000, content_type="application/json")

    assert_problem(form, 415, "/problems/unsupported-media-type")
    assert_problem(broken, 400, "/problems/malformed-request")
    assert_problem(listed, 400, "/problems/malformed-request")
    assert_problem(deep, 400, "/problems/malformed-request")


def test_fields_of_the_wrong_type_are_listed(service, released):
    response = render(service, {"environment": ["staging"], "subject": 7, "variables": []})

    body = assert_problem(response, 400, "/problems/validation-error")
    assert {e["pointer"] for e in body["errors"]} == {"/environment", "/subject", "/variables"}


def test_render_checks_the_key_before_reading_the_body(anonymous_client, released):
    response = anonymous_client.post(RENDER, "{not json", content_type="application/json")

    assert_problem(response, 401, "/problems/unauthenticated")


def test_render_of_an_unknown_prompt_is_not_released(service, released):
    response = service.post(
        "/api/v1/prompts/no.such-prompt/render",
        json.dumps({"environment": "staging"}),
        content_type="application/json",
    )

    assert_problem(response, 404, "/problems/not-released")


# --- bundle --------------------------------------------------------------------------------------


def test_the_bundle_carries_every_release_with_its_versions(service, released):
    change(released, services.release_canary_start, version=3, percent=Decimal(10))

    response = service.get(bundle_url("staging"))

    assert response.status_code == 200
    assert response["ETag"]
    body = response.json()
    assert (body["environment"], body["hash_version"]) == ("staging", 1)
    entry = body["releases"][KEY]
    release = released.release("staging")
    assert entry["revision"] == release.revision
    assert entry["default_locale"] == "en"
    assert entry["state"]["stable"] == 2
    assert entry["state"]["canary"] == {"version": 3, "weight": 1000, "salt": release.canary_salt}
    assert sorted(entry["versions"]) == ["2", "3"]
    assert entry["versions"]["2"]["content_hash"] == released.versions[2].content_hash
    assert sorted(entry["versions"]["2"]["templates"]) == ["en", "fr"]


def test_the_bundle_carries_the_shadow_budget_for_local_evaluation(service, released):
    change(
        released,
        services.release_shadow_start,
        versions=[3],
        sample_percent=Decimal(10),
        budget_per_hour=90,
    )

    state = service.get(bundle_url("staging")).json()["releases"][KEY]["state"]

    release = released.release("staging")
    assert state["shadow"] == {
        "versions": [3],
        "sample": 1000,
        "salt": release.shadow_salt,
        "budget_per_hour": 90,
    }


def test_the_bundle_answers_304_until_a_release_changes(service, released, publish_changes):
    etag = service.get(bundle_url("staging"))["ETag"]

    assert service.get(bundle_url("staging"), HTTP_IF_NONE_MATCH=etag).status_code == 304

    publish_changes(lambda: change(released, services.release_deploy, version=3))

    changed = service.get(bundle_url("staging"), HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert changed.json()["releases"][KEY]["state"]["stable"] == 3


def test_the_bundle_of_an_environment_without_releases_is_empty(service, released):
    assert service.get(bundle_url("development")).json()["releases"] == {}


def test_the_bundle_of_an_unknown_environment_is_a_404(service, released):
    assert_problem(service.get(bundle_url("nowhere")), 404, "/problems/environment-not-found")


def test_the_bundle_needs_a_key(anonymous_client, released):
    assert_problem(anonymous_client.get(bundle_url("staging")), 401, "/problems/unauthenticated")


# --- the database down ---------------------------------------------------------------------------


@pytest.fixture
def untrusted_cache(monkeypatch) -> ReleaseCache:
    """This process's release cache without a Redis listener (Redis down or unset): every lookup
    reads the database, so a database outage shows."""
    node = ReleaseCache(listen=False)
    monkeypatch.setattr(cache, "_cache", node)
    return node


def test_without_redis_a_change_shows_at_once_though_its_message_never_came(
    service, released, untrusted_cache
):
    query = {"environment": "staging", "subject": "user-1"}
    assert service.get(RESOLVE, query).json()["version"] == 2

    # No after-commit callback runs here: no message, no announcement.
    change(released, services.release_canary_start, version=3, percent=Decimal(100))

    assert service.get(RESOLVE, query).json()["version"] == 3


def test_the_bundle_reads_a_fixed_number_of_queries_whatever_the_number_of_prompts(
    service, released, untrusted_cache
):
    def count() -> int:
        untrusted_cache.clear()
        with CaptureQueriesContext(connection) as queries:
            assert service.get(bundle_url("staging")).status_code == 200
        return len(queries)

    few = count()
    for i in range(4):
        other = PromptFactory(key=f"support.other-{i}")
        for _ in range(3):
            make_version(other)
        services.release_deploy(
            prompt=other, environment=released.environments["staging"], version=3, actor=MANAGER
        )

    assert count() == few
    assert len(service.get(bundle_url("staging")).json()["releases"]) == 5


def test_with_the_database_down_cached_releases_are_served_and_said_to_be(
    service, released, untrusted_cache, database_down
):
    query = {"environment": "staging", "subject": "user-1"}
    warm = service.get(RESOLVE, query)
    warm_bundle = service.get(bundle_url("staging"))
    assert DEGRADED not in warm

    database_down()

    resolved = service.get(RESOLVE, query)
    assert resolved.status_code == 200
    assert resolved[DEGRADED] == "database-unavailable"
    assert resolved.json() == warm.json()
    bundled = service.get(bundle_url("staging"))
    assert bundled[DEGRADED] == "database-unavailable"
    assert bundled.json() == warm_bundle.json()
    rendered = render(service, {"environment": "staging", "variables": {"customer_name": "Ana"}})
    assert (rendered.status_code, rendered[DEGRADED]) == (200, "database-unavailable")


def test_with_the_database_down_an_uncached_release_is_a_503(
    service, released, untrusted_cache, database_down
):
    service.get(RESOLVE, {"environment": "staging"})  # the key is known from now on

    database_down()

    response = service.get(RESOLVE, {"environment": "production"})
    assert_problem(response, 503, "/problems/database-unavailable")
    assert response[DEGRADED] == "database-unavailable"
    assert_problem(service.get(bundle_url("production")), 503, "/problems/database-unavailable")


# --- budgets -------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_resolve_on_a_warm_cache_runs_no_sql_query(
    service, released, needs_redis, django_assert_num_queries
):
    for environment in ("staging", "production"):  # warm: one request per environment
        assert service.get(RESOLVE, {"environment": environment}).status_code == 200
    # Render and the bundle also read the providers' strict_output flags, held in memory once read.
    assert service.get(bundle_url("staging")).status_code == 200

    with django_assert_num_queries(0):
        for i in range(5):
            response = service.get(RESOLVE, {"environment": "staging", "subject": f"user-{i}"})
            assert response.status_code == 200
        assert service.get(RESOLVE, {"environment": "production"}).status_code == 200
        assert service.get(bundle_url("staging")).status_code == 200
        assert (
            render(
                service, {"environment": "staging", "variables": {"customer_name": "Ana"}}
            ).status_code
            == 200
        )


# --- the schema ----------------------------------------------------------------------------------


def test_the_openapi_schema_lists_the_runtime_paths(anonymous_client):
    response = anonymous_client.get("/api/v1/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "get" in paths["/api/v1/prompts/{key}/resolve"]
    assert "post" in paths["/api/v1/prompts/{key}/render"]
    assert "get" in paths["/api/v1/environments/{environment}/bundle"]


def test_the_runtime_path_still_refuses_a_host_it_does_not_serve(service, released):
    response = service.get(
        RESOLVE, {"environment": "staging", "subject": "user-1"}, HTTP_HOST="evil.example.com"
    )
    assert_problem(response, 400, "/problems/bad-host")


def test_a_host_once_allowed_is_refused_again_when_the_settings_change(service, released):
    """The middleware remembers hosts Django's check allowed; a change of ``ALLOWED_HOSTS``
    forgets them."""
    query = {"environment": "staging", "subject": "user-1"}
    with override_settings(ALLOWED_HOSTS=["api.example.com", "other.example.com"]):
        assert service.get(RESOLVE, query, HTTP_HOST="api.example.com").status_code == 200
        assert service.get(RESOLVE, query, HTTP_HOST="api.example.com").status_code == 200
    with override_settings(ALLOWED_HOSTS=["other.example.com"]):
        response = service.get(RESOLVE, query, HTTP_HOST="api.example.com")

    assert_problem(response, 400, "/problems/bad-host")


@override_settings(ALLOWED_HOSTS=["api.example.com"], USE_X_FORWARDED_HOST=True)
def test_a_remembered_host_never_lets_a_forwarded_host_through(service, released):
    query = {"environment": "staging", "subject": "user-1"}
    assert service.get(RESOLVE, query, HTTP_HOST="api.example.com").status_code == 200

    response = service.get(
        RESOLVE, query, HTTP_HOST="api.example.com", HTTP_X_FORWARDED_HOST="evil.example.com"
    )

    assert_problem(response, 400, "/problems/bad-host")
