"""Which URLs the runtime path answers before the middleware stack (api/middleware.py): exactly the
URLconf's URLs whose view is a ``runtime_view``, with the URLconf's own patterns, so that a
pattern exists once and the fast path cannot drift from the URLconf."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import URLResolver, get_resolver, include, path, resolve
from django.urls.resolvers import RegexPattern

from api import run, runtime, stream
from api.fastpath import is_runtime_view, runtime_view
from api.middleware import RuntimeMiddleware, fast_routes
from api.openai_compat import views as openai_views
from registry.errors import DraftExists

# A value each converter of the URLconf accepts, to build an address for every pattern.
SAMPLES = {
    "key": "support.refund-reply",
    "environment": "staging",
    "request_id": "req-1",
    "int": "7",
    "slug": "some-slug",
    "str": "some-text",
    "path": "some/path",
}
CONVERTER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")
RUNTIME_VIEWS = {
    "resolve": runtime.resolve_view,
    "render": runtime.render_view,
    "run": run.run_view,
    "bundle": runtime.bundle_view,
    "stream": stream.stream_view,
    "openai-chat-completions": openai_views.chat_completions_view,
    "openai-responses": openai_views.responses_view,
}
# The API's prefixes: the REST API's, and the OpenAI-compatible endpoints' (OPENAI_COMPAT_PREFIX).
PREFIXES = ("/api/", f"/{settings.OPENAI_COMPAT_PREFIX}/")


class PassedOn(HttpResponse):
    """What the rest of the stack would answer: the request was not the runtime path's."""


def passed_on(request) -> HttpResponse:
    return PassedOn()


def api_addresses() -> list[tuple[str, object]]:
    """An address for every URL pattern under the API's prefixes, with the view the URLconf
    routes it to; under the OpenAI prefix, ``models`` for its catch-all (OpenAI's 404)."""
    found: list[tuple[str, object]] = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            route = str(entry.pattern)
            address = prefix + CONVERTER.sub(
                lambda m: SAMPLES[m["converter"] or "str"], route.removeprefix("^")
            )
            if entry.pattern.regex.pattern == "^(?P<rest>.*)$":
                address = prefix + "models"
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, address)
            elif address.startswith(PREFIXES):
                found.append((address, entry.callback))

    walk(get_resolver().url_patterns, "/")
    return found


def test_the_samples_reach_the_views_the_urlconf_names():
    addresses = api_addresses()

    assert len(addresses) > 40
    for address, view in addresses:
        assert resolve(address).func is view, address


def test_every_runtime_url_of_the_urlconf_is_served_by_the_fast_path_and_no_other():
    middleware = RuntimeMiddleware(passed_on)
    factory = RequestFactory()
    served = {}

    for address, view in api_addresses():
        # No key: a runtime view answers 401 at once, without reading anything.
        response = middleware(factory.get(address))

        if is_runtime_view(view):
            assert not isinstance(response, PassedOn), address
            assert response.status_code in {401, 405}, address
            [route] = [r for r in middleware.routes if r.regex.fullmatch(address)]
            served[resolve(address).url_name] = route.view
        else:
            assert isinstance(response, PassedOn), address

    assert served == RUNTIME_VIEWS
    assert len(middleware.routes) == len(RUNTIME_VIEWS)


def test_the_fast_routes_follow_the_urlconf_wherever_it_mounts_the_views():
    """The middleware has no pattern of its own: mounted elsewhere, with other parameters, the
    views are served there and only there."""

    def plain(request, **kwargs):
        return HttpResponse()

    urlconf = type(
        "URLconf",
        (),
        {
            "urlpatterns": [
                path("api/v2/", include([path("r/<int:key>/now", runtime.resolve_view)])),
                path("api/v2/plain/<slug:key>", plain),
            ]
        },
    )
    [route] = fast_routes(URLResolver(RegexPattern(r"^/"), urlconf))

    assert route.view is runtime.resolve_view
    assert route.regex.fullmatch("/api/v2/r/42/now")["key"] == "42"
    assert not route.regex.fullmatch("/api/v2/r/support.refund-reply/now")
    assert not route.regex.fullmatch("/api/v2/r/42/now\n")
    assert not route.regex.fullmatch("/api/v1/prompts/support.refund-reply/resolve")
    assert [name for name, _ in route.converters] == ["key"]  # an int; a str needs no call


def test_a_fast_route_hands_the_view_its_parameters_converted_as_the_urlconf_does(monkeypatch):
    @runtime_view("GET")
    def echo(request, *, number):
        return HttpResponse(repr(number))

    urlconf = type("URLconf", (), {"urlpatterns": [path("api/v2/<int:number>", echo)]})
    monkeypatch.setattr(
        "api.middleware.get_resolver", lambda: URLResolver(RegexPattern(r"^/"), urlconf)
    )
    middleware = RuntimeMiddleware(passed_on)

    response = middleware(RequestFactory().get("/api/v2/42"))

    assert response.content == b"42"  # an int, as Django's resolver would pass it
    assert isinstance(middleware(RequestFactory().get("/api/v2/4x2")), PassedOn)


@pytest.mark.parametrize("view", RUNTIME_VIEWS.values())
def test_a_runtime_view_is_csrf_exempt_when_reached_through_the_urlconf(view):
    assert view.csrf_exempt is True


RUNTIME_MODULES = ("fastpath", "middleware", "problems", "run", "runtime", "stream")


@pytest.mark.parametrize("module", RUNTIME_MODULES)
def test_no_runtime_module_imports_another_modules_private_names(module):
    source = Path(__file__).parents[2] / "api" / f"{module}.py"
    tree = ast.parse(source.read_text())

    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__future__"
    ]

    assert private == []


def test_a_runtime_view_answers_a_domain_error_as_the_drf_views_do():
    """The same table and the same handler (``api.problems.answer_exception``): the document a
    DRF view sends for this error (tests/api/test_problems.py), with the request it answers."""

    @runtime_view("GET")
    def refuses(request):
        raise DraftExists(7)

    response = refuses(RequestFactory().get("/api/v2/somewhere"))

    assert response.status_code == 409
    assert response["Content-Type"] == "application/problem+json"
    assert json.loads(response.content) == {
        "type": "/problems/draft-exists",
        "title": "The prompt has an open draft already.",
        "status": 409,
        "detail": DraftExists(7).message,
        "instance": "/api/v2/somewhere",
        "draft_number": 7,
    }


def test_a_runtime_view_leaves_a_bug_to_djangos_500_handler():
    @runtime_view("GET")
    def broken(request):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        broken(RequestFactory().get("/api/v2/somewhere"))


def test_a_runtime_view_refuses_another_method_with_the_allowed_ones():
    @runtime_view("GET", "HEAD")
    def reads(request):
        return HttpResponse()

    response = reads(RequestFactory().delete("/api/v2/somewhere"))

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert json.loads(response.content)["type"] == "/problems/method-not-allowed"
