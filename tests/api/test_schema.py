"""The OpenAPI schema and the browsable docs: every authoring operation, the bearer scheme, and
assets served from this server (drf-spectacular-sidecar), never a CDN."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders

pytestmark = pytest.mark.django_db

AUTHORING = {
    "/api/v1/prompts": {"get", "post"},
    "/api/v1/prompts/{key}": {"get", "patch"},
    "/api/v1/prompts/{key}/versions": {"get", "post"},
    "/api/v1/prompts/{key}/versions/{number}": {"get", "patch", "delete"},
    "/api/v1/prompts/{key}/versions/{number}/commit": {"post"},
    "/api/v1/prompts/{key}/versions/{number}/diff": {"get"},
    "/api/v1/prompts/{key}/versions/{number}/render": {"post"},
}


@pytest.fixture
def schema(anonymous_client) -> dict:
    response = anonymous_client.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_it_serves_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Prompt Registry API"


def test_it_serves_yaml_by_default(anonymous_client):
    response = anonymous_client.get("/api/v1/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    assert response.content.startswith(b"openapi: 3.")


@pytest.mark.parametrize("path", sorted(AUTHORING))
def test_it_describes_every_authoring_operation(schema, path):
    operations = {m for m in schema["paths"].get(path, {}) if m != "parameters"}

    assert AUTHORING[path] <= operations, sorted(schema["paths"])


def test_it_declares_the_bearer_scheme_on_every_authoring_operation(schema):
    scheme = schema["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, methods in AUTHORING.items():
        for method in methods:
            security = schema["paths"][path][method].get("security", schema.get("security"))
            assert {"apiKey": []} in security, (path, method)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/prompts",
        "/api/v1/prompts/{key}/versions",
        "/api/v1/prompts/{key}/evaluations",
        "/api/v1/releases/{environment}/{key}/history",
    ],
)
def test_it_documents_lists_as_the_pages_they_are(schema, path):
    operation = schema["paths"][path]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert {"count", "results"} <= set(page["properties"])
    assert {"page", "page_size"} <= {p["name"] for p in operation["parameters"]}


def test_it_says_what_a_new_version_needs(schema):
    body = schema["paths"]["/api/v1/prompts/{key}/versions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    component = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert {"model", "templates"} <= set(component["required"])


def test_it_documents_the_if_match_header_of_a_draft_edit(schema):
    parameters = schema["paths"]["/api/v1/prompts/{key}/versions/{number}"]["patch"]["parameters"]

    assert "If-Match" in {p["name"] for p in parameters if p["in"] == "header"}


@pytest.mark.parametrize(
    ("path", "marker"), [("/api/v1/docs/", "swagger-ui"), ("/api/v1/redoc/", "redoc")]
)
def test_the_docs_render_with_local_assets_only(anonymous_client, path, marker):
    response = anonymous_client.get(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert marker in html.lower()
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets, html
    scripts = [a for a in assets if a.endswith((".js", ".css", ".png"))]
    assert scripts
    for asset in scripts:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        assert finders.find(asset.removeprefix("/static/")), asset
    assert not re.search(r"cdn|unpkg|jsdelivr|cdnjs", html, re.IGNORECASE)


def test_every_operation_documents_its_refusals_as_problem_documents(schema):
    """What the API fuzzing (tests/api/test_fuzz.py) found undocumented: every operation names the
    refusals it can answer (a key: 401, 403; a path naming something: 404; the database out of
    reach: 503), each as the problem types it can be, one component per type."""
    components = schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"401", "403", "429", "503"} <= set(responses), (method, path)
            if "{" in path:
                assert "404" in responses, (method, path)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status < "400":
                    continue
                if path.startswith(f"/{settings.OPENAI_COMPAT_PREFIX}/"):
                    # OpenAI's error shape, the problem document beside it (decision 0042).
                    body = response["content"]["application/json"]["schema"]
                    assert body == {"$ref": "#/components/schemas/OpenAIError"}, (path, status)
                    continue
                if path == "/mcp" and "application/json" in response["content"]:
                    # A body that is JSON but no JSON-RPC message: the MCP server's own refusal,
                    # in its protocol's shape (decision 0043), beside the API's for bad JSON.
                    assert status == "400"
                    refusal = response["content"]["application/json"]["schema"]["$ref"]
                    assert refusal.endswith("/McpRefusal")
                body = response["content"]["application/problem+json"]["schema"]
                refs = [body] if "$ref" in body else body["oneOf"]
                for ref in refs:
                    name = ref["$ref"].rsplit("/", 1)[-1]
                    if name == "RunFailure":
                        name = components[name]["$ref"].rsplit("/", 1)[-1]
                    properties = components[name]["properties"]
                    assert name.startswith("Problem"), (method, path, status, name)
                    assert properties["status"]["enum"] == [int(status)], (path, status, name)
                    assert properties["type"]["enum"][0].startswith("/problems/"), name
