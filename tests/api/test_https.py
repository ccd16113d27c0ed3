"""SECURE_SSL_REDIRECT on the runtime path, which answers before SecurityMiddleware runs.

A GET or HEAD over plain http is redirected to https (301), as Django redirects the rest of the
site; any other method is refused with a 403 problem, because a redirected write comes back as a
GET without its body. Over https (the proxy's header) the same requests are served."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from tests.api.helpers import assert_problem

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
BEHIND_TLS = {"HTTP_X_FORWARDED_PROTO": "https"}
PROXY = ("HTTP_X_FORWARDED_PROTO", "https")
BODY = {"environment": "staging", "subject": "user-1", "variables": {"customer_name": "Ada"}}

GETS = [
    f"/api/v1/prompts/{KEY}/resolve?environment=staging&subject=user-1",
    "/api/v1/environments/staging/bundle",
    "/api/v1/environments/staging/stream",
]
POSTS = [f"/api/v1/prompts/{KEY}/render", f"/api/v1/prompts/{KEY}/run"]

https_only = override_settings(
    SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=PROXY, SECURE_HSTS_SECONDS=3600
)


@pytest.fixture
def service(make_client):
    # No runs:execute: a served /run answers insufficient-scope without calling a model.
    return make_client("prompts:read", name="checkout-service")


def post(client, url, **extra):
    return client.post(url, json.dumps(BODY), content_type="application/json", **extra)


@https_only
@pytest.mark.parametrize("url", GETS)
def test_a_get_over_http_is_redirected_to_https_before_the_view(service, released, url):
    response = service.get(url)

    assert response.status_code == 301
    assert response["Location"] == f"https://testserver{url}"


@https_only
def test_a_head_over_http_is_redirected_too(service, released):
    response = service.head(GETS[0])

    assert response.status_code == 301


@https_only
@pytest.mark.parametrize("url", POSTS)
def test_a_post_over_http_is_refused_with_a_problem_never_redirected(service, released, url):
    body = assert_problem(post(service, url), 403, "/problems/https-required")

    assert f"https://testserver{url}" in body["detail"]


@https_only
def test_a_write_to_the_rest_of_the_api_over_http_is_refused_the_same_way(author_client):
    response = author_client.post(
        "/api/v1/prompts", json.dumps({"key": "support.new"}), content_type="application/json"
    )

    assert_problem(response, 403, "/problems/https-required")


@https_only
def test_resolve_render_and_bundle_are_served_over_https_with_hsts(service, released):
    resolve = service.get(GETS[0], **BEHIND_TLS)
    render = post(service, POSTS[0], **BEHIND_TLS)
    bundle = service.get(GETS[1], **BEHIND_TLS)

    for response in (resolve, render, bundle):
        assert response.status_code == 200, response.content
        assert response["Strict-Transport-Security"].startswith("max-age=3600")
        assert response["X-Content-Type-Options"] == "nosniff"
    assert render.json()["rendered"]["instruction"] == "Greet Ada."


@https_only
def test_run_and_stream_reach_their_views_over_https(service, make_client, released):
    production_only = make_client("prompts:read", environments=("production",))

    run = post(service, POSTS[1], **BEHIND_TLS)
    stream = production_only.get(GETS[2], **BEHIND_TLS)

    # The views answered (the keys lack the scope, the environment): https let both through.
    assert_problem(run, 403, "/problems/insufficient-scope")
    assert_problem(stream, 403, "/problems/environment-forbidden")


@override_settings(
    SECURE_SSL_REDIRECT=True,
    SECURE_PROXY_SSL_HEADER=PROXY,
    SECURE_REDIRECT_EXEMPT=[r"^api/v1/environments/"],
    SECURE_SSL_HOST="secure.example.com",
)
def test_exempt_paths_are_served_over_http_and_redirects_go_to_the_ssl_host(service, released):
    bundle = service.get(GETS[1])
    resolve = service.get(GETS[0])

    assert bundle.status_code == 200
    assert "Strict-Transport-Security" not in bundle
    assert resolve.status_code == 301
    assert resolve["Location"] == f"https://secure.example.com{GETS[0]}"


@override_settings(SECURE_SSL_REDIRECT=False)
def test_without_the_setting_plain_http_is_served(service, released):
    assert service.get(GETS[0]).status_code == 200
    assert post(service, POSTS[0]).status_code == 200


@https_only
def test_the_host_check_still_comes_first(service, released):
    response = service.get(GETS[0], HTTP_HOST="evil.example.com")

    assert_problem(response, 400, "/problems/bad-host")


@pytest.mark.parametrize(
    "url", [f"/api/v1/prompts/{KEY}/resolve%0A", "/api/v1/environments/staging/bundle%0A"]
)
def test_a_runtime_path_with_a_trailing_newline_is_not_the_runtime_path(service, released, url):
    response = service.get(url, {"environment": "staging"})

    assert response.status_code == 404
