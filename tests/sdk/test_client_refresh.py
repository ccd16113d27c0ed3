"""How a client's bundle changes: polling with ETags, the last-known-good file, refused bundles.

- a rollback reaches a polling client within its refresh interval (waited for with a deadline);
- every new good bundle is saved whole to ``cache_dir`` with its ETag;
- a bundle that is not JSON, has an unknown ``hash_version`` or a broken shape is never installed:
  the client keeps serving the one it had, says why, and keeps the good one on disk;
- ``close`` stops the threads and delivers what the prompts reported.

The refused bundles come from ``httpx.MockTransport`` handing the client real bundle bodies (the
server's ``bundle_body`` over the ``released`` data) and broken copies of them: no live server is
needed to send a body no registry would.
"""

from __future__ import annotations

import copy
import json
import logging
from decimal import Decimal

import httpx
import pytest
from promptregistry import Client, RegistryUnavailable

from api.runtime import bundle_body, bundle_etag
from registry.actors import Actor
from releases import services
from releases.selectors import served_releases
from runs.models import Call

KEY = "support.refund-reply"
MANAGER = Actor(label="release-manager")


def canary_everyone(released) -> None:
    services.release_canary_start(
        prompt=released.prompt,
        environment=released.environments["staging"],
        version=3,
        percent=Decimal(100),
        actor=MANAGER,
        reason="v3 for everyone",
    )


def rollback(released) -> None:
    services.release_rollback(
        prompt=released.prompt,
        environment=released.environments["staging"],
        actor=MANAGER,
        reason="v3 is worse",
    )


# --- polling -------------------------------------------------------------------------------------


@pytest.mark.postgres  # a live server (see test_client_stream.py)
def test_a_rollback_reaches_a_polling_client_within_its_refresh_interval(
    released, make_sdk, wait_until
):
    client = make_sdk(stream=False, refresh_interval=0.2)
    assert client.get(KEY, subject="user-1").version == 2

    canary_everyone(released)
    wait_until(lambda: client.get(KEY, subject="user-1").version == 3, what="the canary")
    assert client.get(KEY, subject="user-1").variant == "canary"

    rollback(released)
    wait_until(lambda: client.get(KEY, subject="user-1").version == 2, what="the rollback")
    assert client.get(KEY, subject="user-1").variant == "stable"


@pytest.mark.postgres  # a live server (see test_client_stream.py)
def test_refresh_answers_whether_the_bundle_changed(released, make_sdk):
    client = make_sdk(stream=False, refresh_interval=3600)
    etag = client.status.etag

    assert client.refresh() is False  # a 304
    canary_everyone(released)
    assert client.refresh() is True

    assert client.status.etag != etag
    assert client.get(KEY, subject="user-1").version == 3


@pytest.mark.postgres  # a live server (see test_client_stream.py)
def test_every_new_bundle_is_saved_whole_with_its_etag(released, make_sdk, tmp_path):
    client = make_sdk(stream=False, refresh_interval=3600)
    saved = tmp_path / "cache" / "staging.json"
    first = json.loads(saved.read_text())
    assert first["etag"] == client.status.etag

    canary_everyone(released)
    client.refresh()

    second = json.loads(saved.read_text())
    assert second["etag"] == client.status.etag != first["etag"]
    state = second["bundle"]["releases"][KEY]["state"]
    assert state["canary"]["version"] == 3
    # Written through a temporary file in the same directory, which is gone afterwards.
    assert sorted(p.name for p in saved.parent.iterdir()) == ["staging.json"]


@pytest.mark.postgres  # a live server (see test_client_stream.py)
def test_close_stops_the_threads_and_delivers_the_reports(released, make_sdk):
    client = make_sdk(report=True, refresh_interval=0.2)
    prompt = client.get(KEY, subject="user-1")
    assert prompt.report(latency_ms=812, input_tokens=412, output_tokens=96, feedback=1)

    client.close()

    assert not any(thread.is_alive() for thread in client._threads)
    assert client.reporter.sent == 1
    call = Call.objects.get()
    assert (call.version.number, call.variant, call.latency_ms, call.feedback) == (
        2,
        "stable",
        812,
        1,
    )
    assert client.get(KEY, subject="user-1").version == 2  # still answers from memory
    client.close()  # again: nothing happens


# --- bundles that are never installed ------------------------------------------------------------


class Registry:
    """A fake registry for one client: answers each bundle request with ``self.body`` and
    ``self.etag`` (304 when the client already holds that ETag)."""

    def __init__(self, body: object, etag: str) -> None:
        self.body, self.etag, self.requests = body, etag, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return httpx.Response(404)
        self.requests += 1
        if request.headers.get("If-None-Match") == self.etag:
            return httpx.Response(304, headers={"ETag": self.etag})
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return httpx.Response(
            200, content=content, headers={"ETag": self.etag, "Content-Type": "application/json"}
        )


@pytest.fixture
def good_bundle(released) -> tuple[dict, str]:
    releases = {r.prompt: r for r in served_releases(environment="staging")}
    return bundle_body("staging", releases), bundle_etag("staging", releases)


@pytest.fixture
def fake_client(good_bundle, tmp_path):
    body, etag = good_bundle
    registry = Registry(body, etag)
    http = httpx.Client(transport=httpx.MockTransport(registry))
    client = Client(
        "http://registry.test",
        api_key="pr_test",
        environment="staging",
        cache_dir=str(tmp_path / "cache"),
        refresh_interval=3600,
        stream=False,
        report=False,
        http=http,
    )
    yield client, registry
    client.close()
    http.close()


def hash_version_2(body: dict) -> dict:
    broken = copy.deepcopy(body)
    broken["hash_version"] = 2
    return broken


def experiment_over_100(body: dict) -> dict:
    broken = copy.deepcopy(body)
    broken["releases"][KEY]["state"]["experiment"] = {
        "name": "x",
        "salt": "s",
        "variants": [
            {"name": "a", "version": 2, "weight": 9000},
            {"name": "b", "version": 2, "weight": 9000},
        ],
    }
    return broken


def missing_version(body: dict) -> dict:
    broken = copy.deepcopy(body)
    broken["releases"][KEY]["versions"] = {}
    return broken


def other_environment(body: dict) -> dict:
    broken = copy.deepcopy(body)
    broken["environment"] = "production"
    return broken


@pytest.mark.parametrize(
    ("breaking", "why"),
    [
        (lambda body: b'{"environment": "staging", "releases": {', "not JSON"),
        (lambda body: b"[1, 2, 3]", "not a JSON object"),
        (hash_version_2, "hash version 2"),
        (experiment_over_100, "more than 10000"),
        (missing_version, "does not carry"),
        (other_environment, "for 'production'"),
    ],
    ids=["truncated", "a list", "hash-version-2", "weights", "missing-version", "environment"],
)
def test_a_bad_bundle_is_never_installed(fake_client, good_bundle, tmp_path, caplog, breaking, why):
    client, registry = fake_client
    good_etag = client.status.etag
    before = client.get(KEY, subject="user-1")

    registry.body, registry.etag = breaking(good_bundle[0]), '"broken"'
    with caplog.at_level(logging.ERROR, logger="promptregistry"):
        assert client.refresh() is False

    status = client.status
    assert (status.source, status.etag) == ("live", good_etag)
    assert status.stale is True
    assert why in status.last_error
    after = client.get(KEY, subject="user-1")
    assert (after.version, after.revision) == (before.version, before.revision)
    assert json.loads((tmp_path / "cache" / "staging.json").read_text())["etag"] == good_etag
    assert [r.levelname for r in caplog.records] == ["ERROR"]

    # Refused again and again: logged once per ETag, not on every poll.
    with caplog.at_level(logging.ERROR, logger="promptregistry"):
        client.refresh()
    assert len(caplog.records) == 1

    registry.body, registry.etag = good_bundle[0], '"good-again"'
    assert client.refresh() is True
    assert client.status.stale is False


def test_a_bad_bundle_at_start_leaves_the_last_known_good(fake_client, good_bundle, tmp_path):
    _, registry = fake_client
    registry.body, registry.etag = hash_version_2(good_bundle[0]), '"v2"'

    with (
        httpx.Client(transport=httpx.MockTransport(registry)) as http,
        Client(
            "http://registry.test",
            api_key="pr_test",
            environment="staging",
            cache_dir=str(tmp_path / "cache"),
            stream=False,
            report=False,
            http=http,
        ) as client,
    ):
        assert client.status.source == "last-known-good"
        assert "hash version 2" in client.status.last_error
        assert client.get(KEY, subject="user-1").version == 2


def test_a_last_known_good_of_another_hash_version_is_not_served(good_bundle, tmp_path):
    from promptregistry.store import BundleStore

    BundleStore(tmp_path, "staging").save(etag='"old"', bundle=hash_version_2(good_bundle[0]))

    unavailable = httpx.MockTransport(lambda request: httpx.Response(503))
    with (
        httpx.Client(transport=unavailable) as http,
        Client(
            "http://registry.test",
            api_key="pr_test",
            environment="staging",
            cache_dir=str(tmp_path),
            stream=False,
            report=False,
            http=http,
        ) as client,
    ):
        assert client.status.source == "none"
        assert client.status.last_error == "HTTP 503"
        with pytest.raises(RegistryUnavailable):
            client.get(KEY)


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fallback", "problem"),
    [
        (
            {KEY: {"sections": {"system": "x"}, "templates": {"en": {}}}},
            "either templates or sections",
        ),
        ({KEY: {}}, "either templates or sections"),
        ({KEY: {"sections": {"system": "x"}, "colour": "red"}}, "unknown fields: colour"),
        ({KEY: {"templates": {"fr": {"system": "x"}}}}, "no template in its default locale"),
        ({KEY: {"sections": {"system": "x"}, "version": 0}}, "version must be a whole number"),
        ({KEY: {"sections": {"shout": "x"}}}, "shout in 'en' is not a section"),
        ({KEY: "You are a support agent"}, "must be a dict"),
    ],
)
def test_fallback_prompts_are_checked_when_the_client_starts(closed_port, fallback, problem):
    with pytest.raises(ValueError, match=problem):
        Client(closed_port, api_key="k", environment="staging", fallback_prompts=fallback)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"environment": ""}, "Name the environment"),
        ({"refresh_interval": 0}, "must be above 0"),
        ({"timeout": -1}, "must be above 0"),
    ],
)
def test_bad_options_are_refused(closed_port, options, problem):
    with pytest.raises(ValueError, match=problem):
        Client(closed_port, **{"api_key": "k", "environment": "staging", **options})
