"""Prometheus metrics (issue 16, item 3): who may read ``/metrics``, and what a request, a resolve,
a run, the release cache, the shadow outbox and a Celery task count there, with bounded labels.

Values are read from this process's registry as the difference a test's own actions make
(tests/metrics.py). The multiprocess mode, gunicorn and the worker's port are in
tests/test_metrics_processes.py; shadow runs' model calls in tests/runs/test_shadows.py, eval runs
in tests/evaluations/test_eval_runs.py, canary verdicts in test_canary_analysis.py beside it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import get_resolver, resolve
from prometheus_client import Metric
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as api_metrics
from api.middleware import fast_routes
from config import metrics
from releases.cache import ReleaseCache
from runs.models import ModelPrice, Provider
from runs.outbox import Outbox
from runs.tasks import delete_expired_calls_task
from tests.api.helpers import sse_events
from tests.metrics import counting, value

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "metrics.md"
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
KEY = "support.refund-reply"
RESOLVE_ROUTE = "/api/v1/prompts/<key:key>/resolve"
RUN_ROUTE = "/api/v1/prompts/<key:key>/run"


def scrape(client: Client, **extra: Any) -> str:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    return response.content.decode()


@pytest.fixture
def runner(make_client):
    """A service that runs prompts through the registry (runs:execute only)."""
    return make_client("runs:execute", name="runner")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(client, body: dict[str, Any], key: str = KEY, **headers: str):
    return client.post(
        f"/api/v1/prompts/{key}/run",
        data=json.dumps(body),
        content_type="application/json",
        **headers,
    )


# --- who may read /metrics -----------------------------------------------------------------------


def test_a_scrape_from_loopback_gets_every_metric_in_the_prometheus_format(client: Client) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert response["Cache-Control"] == "no-store"
    # Its length said (not sent chunked), as the stack's answers say theirs.
    assert response["Content-Length"] == str(len(response.content))
    assert response["X-Content-Type-Options"] == "nosniff"
    families = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {
        "promptregistry_release_cache_hits",
        "promptregistry_shadow_outbox_depth",
        "promptregistry_release_cache_confirmed_timestamp_seconds",
    } <= families


def test_a_scrape_from_outside_the_allowed_networks_is_a_403_problem(client: Client) -> None:
    response = client.get("/metrics", REMOTE_ADDR="10.0.0.7")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/metrics-forbidden"
    assert problem["instance"] == "/metrics"
    assert "promptregistry_" not in response.content.decode()


def test_the_allowed_networks_admit_their_addresses_mapped_ones_included(
    client: Client, settings
) -> None:
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "2001:db8::/32"]

    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    # A server listening on IPv6 sees an IPv4 peer as a mapped address.
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
    # Loopback is no longer among them, and an address that does not parse is in none.
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="").status_code == 403


def test_a_forwarded_address_never_opens_the_door(client: Client) -> None:
    response = client.get("/metrics", REMOTE_ADDR="10.0.0.7", HTTP_X_FORWARDED_FOR="127.0.0.1")

    assert response.status_code == 403


def test_with_a_token_a_scrape_must_send_it_compared_in_constant_time(
    client: Client, settings, monkeypatch
) -> None:
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    compared: list[tuple[bytes, bytes]] = []
    real = api_metrics.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_metrics.hmac, "compare_digest", spy)

    missing = client.get("/metrics")
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456788")
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789")

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.json()["type"] == "/problems/metrics-unauthenticated"
        assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert "scrape-token" not in refused.content.decode()
    assert right.status_code == 200
    assert compared[-1] == (b"scrape-token-0123456789", b"scrape-token-0123456789")
    assert len(compared) == 3


def test_the_address_is_checked_before_the_token(client: Client, settings) -> None:
    """A caller outside the networks learns nothing about the token, right or wrong."""
    settings.METRICS_TOKEN = "scrape-token-0123456789"

    response = client.get(
        "/metrics", REMOTE_ADDR="10.0.0.7", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789"
    )

    assert response.status_code == 403


def test_a_token_alone_admits_any_address_that_sends_it(client: Client, settings) -> None:
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    settings.METRICS_ALLOWED_NETWORKS = []

    sent = client.get(
        "/metrics", REMOTE_ADDR="203.0.113.9", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789"
    )
    unsent = client.get("/metrics", REMOTE_ADDR="203.0.113.9")

    assert (sent.status_code, unsent.status_code) == (200, 401)


def test_metrics_take_get_and_head_only(client: Client) -> None:
    head = client.head("/metrics")
    assert head.status_code == 200
    assert int(head["Content-Length"]) > 0  # the GET's length
    assert head.content == b""
    response = client.post("/metrics")

    assert response.status_code == 405
    assert response.json()["type"] == "/problems/method-not-allowed"
    assert response["Allow"] == "GET, HEAD"


def test_a_scrape_over_plain_http_by_ip_address_is_served_under_production_settings(
    settings,
) -> None:
    """Prometheus scrapes a discovered target by address over plain http: neither the https
    redirect nor ALLOWED_HOSTS (which names the service's public name) turns it away. A name that
    ALLOWED_HOSTS does not allow still is (a DNS rebinding page could send one)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["registry.example.com"]
    client = Client()  # built after the settings change: the middleware reads them at load

    by_address = client.get("/metrics", HTTP_HOST="10.1.2.3:8000")
    by_ipv6 = client.get("/metrics", HTTP_HOST="[fd00::7]:8000")
    by_allowed_name = client.get("/metrics", HTTP_HOST="registry.example.com")
    by_other_name = client.get("/metrics", HTTP_HOST="attacker.example")
    # Not /healthz: the probes answer over plain http too (decision 0037).
    admin = client.get("/admin/login/", HTTP_HOST="registry.example.com")

    assert (by_address.status_code, by_ipv6.status_code, by_allowed_name.status_code) == (
        200,
        200,
        200,
    )
    assert by_other_name.status_code == 400
    assert by_other_name.json()["type"] == "/problems/bad-host"
    assert admin.status_code == 301  # the rest of the site still goes to https


def test_metrics_are_no_api_operation(db) -> None:
    from tests.api.openapi import served_openapi

    assert not [p for p in served_openapi()["paths"] if "metrics" in p]


# --- requests, by route --------------------------------------------------------------------------


def test_a_resolve_is_counted_under_its_route_and_status(released, reader_client) -> None:
    ok = counting(
        "promptregistry_http_requests_total", route=RESOLVE_ROUTE, method="GET", status="200"
    )
    not_released = counting(
        "promptregistry_http_requests_total", route=RESOLVE_ROUTE, method="GET", status="404"
    )
    timed = counting(
        "promptregistry_http_request_duration_seconds_count", route=RESOLVE_ROUTE, method="GET"
    )

    url = f"/api/v1/prompts/{KEY}/resolve"
    for _ in range(3):
        assert reader_client.get(url, {"environment": "staging"}).status_code == 200
    assert reader_client.get(url, {"environment": "development"}).status_code == 404

    assert (ok(), not_released(), timed()) == (3, 1, 4)


def test_the_api_and_the_site_are_counted_under_their_patterns(reader_client, client) -> None:
    prompts = counting(
        "promptregistry_http_requests_total", route="/api/v1/prompts", method="GET", status="200"
    )
    detail = counting(
        "promptregistry_http_requests_total",
        route="/api/v1/prompts/<key:key>",
        method="GET",
        status="404",
    )
    health = counting(
        "promptregistry_http_requests_total", route="/healthz", method="GET", status="200"
    )
    unmatched = counting(
        "promptregistry_http_requests_total", route="unmatched", method="GET", status="404"
    )

    reader_client.get("/api/v1/prompts")
    reader_client.get("/api/v1/prompts/no.such-prompt")
    reader_client.get("/api/v1/prompts/another.missing-one")
    client.get("/healthz")
    client.get("/nothing/here/at/all")
    client.get("/nor/here")

    assert (prompts(), detail(), health(), unmatched()) == (1, 2, 1, 2)


def test_a_method_a_client_invents_is_counted_as_other(client) -> None:
    other = counting(
        "promptregistry_http_requests_total", route="/healthz", method="other", status="405"
    )

    assert client.generic("BREW", "/healthz").status_code == 405

    assert other() == 1


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/prompts/{KEY}/resolve",
        f"/api/v1/prompts/{KEY}/render",
        f"/api/v1/prompts/{KEY}/run",
        "/api/v1/environments/staging/bundle",
        "/api/v1/environments/staging/stream",
    ],
)
def test_the_runtime_path_names_its_routes_as_django_does(path) -> None:
    """RuntimeMiddleware answers these before Django resolves them; their routes must read the
    same as any other URL's, or one dashboard would need two spellings."""
    matched = [r for r in fast_routes(get_resolver()) if r.regex.fullmatch(path)]

    assert [r.route for r in matched] == [resolve(path).route]


# --- model calls ---------------------------------------------------------------------------------


def test_a_run_is_counted_by_prompt_version_variant_provider_model_and_outcome(
    released, model_server, runner, client
) -> None:
    ModelPrice.objects.create(
        provider=Provider.objects.get(name="local"),
        model="echo-1",
        input_per_million=Decimal(2),
        output_per_million=Decimal(8),
    )
    labels = {
        "source": "run",
        "prompt": KEY,
        "version": "2",
        "variant": "stable",
        "provider": "local",
        "model": "echo-1",
    }
    timed = {k: v for k, v in labels.items() if k != "variant"}
    calls = counting("promptregistry_model_calls_total", **labels, outcome="ok")
    given = counting("promptregistry_model_tokens_total", **labels, direction="input")
    taken = counting("promptregistry_model_tokens_total", **labels, direction="output")
    cost = counting("promptregistry_model_cost_total", **labels)
    latency = counting("promptregistry_model_call_duration_seconds_count", **timed)
    first_token = counting("promptregistry_model_time_to_first_token_seconds_count", **timed)
    requests = counting(
        "promptregistry_http_requests_total", route=RUN_ROUTE, method="POST", status="200"
    )

    response = run(
        runner,
        {
            "environment": "staging",
            "subject": "subject-ann-4711",
            "variables": {"customer_name": "A"},
        },
        HTTP_X_REQUEST_ID="request-id-4711",
    )

    assert response.status_code == 200, response.content
    answer = response.json()
    assert (calls(), latency(), requests()) == (1, 1, 1)
    assert (given(), taken()) == (answer["usage"]["input_tokens"], answer["usage"]["output_tokens"])
    assert cost() == pytest.approx(answer["cost"])
    assert first_token() == 0  # not streamed: no first token to time
    # No label holds the subject, the request id or the key, whatever the series.
    text = scrape(client)
    raw_key = runner._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    for private in ("subject-ann-4711", "request-id-4711", raw_key, runner.key.lookup_id):
        assert private not in text


def test_a_streamed_run_times_its_first_token(released, model_server, runner) -> None:
    first_token = counting(
        "promptregistry_model_time_to_first_token_seconds_count",
        source="run",
        prompt=KEY,
        version="2",
        provider="local",
        model="echo-1",
    )

    response = run(
        runner, {"environment": "staging", "variables": {"customer_name": "Eve"}, "stream": True}
    )

    assert sse_events(response)[-1][0] == "done"
    assert first_token() == 1


def test_a_failed_run_is_counted_under_its_binding_and_its_last_outcome(
    environments, manager, model_server, runner
) -> None:
    from tests.api.test_run import released_prompt

    released_prompt(
        environments,
        manager,
        "support.down",
        model={
            "provider": "local",
            "model": "fault-429",
            "fallbacks": [{"provider": "local", "model": "fault-malformed"}],
        },
    )
    failed = counting(
        "promptregistry_model_calls_total",
        source="run",
        prompt="support.down",
        version="1",
        variant="stable",
        provider="local",
        model="fault-429",
        outcome="malformed",
    )
    answered_502 = counting(
        "promptregistry_http_requests_total", route=RUN_ROUTE, method="POST", status="502"
    )

    response = run(
        runner, {"environment": "staging", "variables": {"customer_name": "C"}}, key="support.down"
    )

    assert response.status_code == 502
    assert (failed(), answered_502()) == (1, 1)


# --- the release cache ---------------------------------------------------------------------------


def test_an_untrusted_cache_counts_each_read_of_the_database_as_a_load(released) -> None:
    node = ReleaseCache(listen=False)  # no listener: every lookup reads the database
    loads = counting("promptregistry_release_cache_loads_total", scope="release")
    hits = counting("promptregistry_release_cache_hits_total")
    before = time.time()

    node.lookup("staging", KEY)
    node.lookup("staging", KEY)

    assert (loads(), hits()) == (2, 0)
    # When this process last read its revisions: at one of the two loads, just now.
    confirmed = value("promptregistry_release_cache_confirmed_timestamp_seconds")
    assert before <= confirmed <= time.time()


@pytest.mark.postgres
def test_a_trusted_cache_loads_an_environment_once_then_answers_from_memory(
    released, needs_redis
) -> None:
    node = ReleaseCache()
    try:
        deadline = time.monotonic() + 5
        while not node.trusted:
            assert time.monotonic() < deadline, "the listener never subscribed"
            time.sleep(0.02)
        loads = counting("promptregistry_release_cache_loads_total", scope="environment")
        hits = counting("promptregistry_release_cache_hits_total")

        for _ in range(3):
            node.lookup("staging", KEY)
        node.environment("staging")

        assert (loads(), hits()) == (1, 3)
    finally:
        node.stop()


def test_an_answer_from_the_copy_while_the_database_is_down_is_counted_as_degraded(
    released, database_down
) -> None:
    node = ReleaseCache(listen=False)
    node.lookup("staging", KEY)
    node.environment("staging")
    degraded = counting("promptregistry_release_cache_degraded_total")
    loads = counting("promptregistry_release_cache_loads_total", scope="release")

    database_down()
    node.lookup("staging", KEY)  # the copy, said to be stale
    node.environment("staging")  # the bundle held, likewise
    node.lookup("development", KEY)  # nothing held: a 503, no answer from a copy

    assert (degraded(), loads()) == (2, 0)


# --- the shadow outbox ---------------------------------------------------------------------------


def test_the_outbox_shows_its_depth_and_counts_what_it_drops(monkeypatch) -> None:
    box = Outbox(capacity=2)
    release = threading.Event()
    monkeypatch.setattr(box, "_publish", lambda job: release.wait(5))  # a broker that hangs
    depth = counting("promptregistry_shadow_outbox_depth")
    full = counting("promptregistry_shadow_outbox_dropped_total", reason="full")

    accepted = sum(box.put({"n": n}) for n in range(6))

    # The thread holds one job and two wait: three are in the outbox, the rest were dropped.
    assert (depth(), full()) == (accepted, 6 - accepted)
    release.set()
    assert box.flush(5)
    assert depth() == 0


def test_a_job_the_broker_refuses_is_counted_as_dropped_by_the_broker(monkeypatch) -> None:
    class Refusing:
        @staticmethod
        def apply_async(**kwargs: Any) -> None:
            raise ConnectionRefusedError("broker down")

    monkeypatch.setattr("runs.tasks.shadow_run_task", Refusing)
    box = Outbox(capacity=10)
    broker = counting("promptregistry_shadow_outbox_dropped_total", reason="broker")

    box.put({"call_id": 1})
    assert box.flush(5)

    assert broker() == 1


# --- Celery tasks --------------------------------------------------------------------------------


def test_a_task_s_duration_is_observed_and_its_failure_counted(db, monkeypatch) -> None:
    task = "runs.delete_expired_calls"
    durations = counting("promptregistry_task_duration_seconds_count", task=task)
    failures = counting("promptregistry_task_failures_total", task=task)

    delete_expired_calls_task.apply()
    assert (durations(), failures()) == (1, 0)

    def broken() -> int:
        raise RuntimeError("the database refused the delete")

    monkeypatch.setattr("runs.tasks.calls_delete_expired", broken)
    # As a worker runs it: the exception ends the task, it does not reach the caller.
    assert delete_expired_calls_task.apply(throw=False).failed()

    assert (durations(), failures()) == (2, 1)


def test_the_worker_serves_its_metrics_on_its_port_and_only_when_asked(
    db, settings, monkeypatch
) -> None:
    from config import worker_metrics

    servers: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        servers.append(start_http_server(*args, **kwargs))
        return servers[-1]

    start_http_server = worker_metrics.start_http_server
    monkeypatch.setattr(worker_metrics, "start_http_server", start)
    settings.WORKER_METRICS_PORT = 0
    worker_metrics.serve_worker_metrics()
    assert servers == []

    settings.WORKER_METRICS_PORT = free_port()
    delete_expired_calls_task.apply()
    worker_metrics.serve_worker_metrics()
    try:
        url = f"http://127.0.0.1:{settings.WORKER_METRICS_PORT}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        for server, _thread in servers:
            server.shutdown()
            server.server_close()

    assert 'promptregistry_task_duration_seconds_count{task="runs.delete_expired_calls"}' in text


# --- the catalogue, its documentation and the dashboard ------------------------------------------


def catalogue() -> list[Any]:
    return [m for m in vars(metrics).values() if hasattr(m, "_labelnames") and hasattr(m, "_name")]


def test_every_metric_is_named_for_the_registry_and_documented_with_its_labels() -> None:
    doc = DOC.read_text()
    found = catalogue()

    assert len(found) >= 17
    for metric in found:
        assert metric._name.startswith("promptregistry_"), metric._name
        shown = metric._name + ("_total" if metric._type == "counter" else "")
        rows = [line for line in doc.splitlines() if line.startswith(f"| `{shown}`")]
        assert rows, f"docs/metrics.md lists no {shown}"
        for label in metric._labelnames:
            assert f"`{label}`" in rows[0], f"{shown}: label {label} undocumented"


def test_no_metric_takes_a_label_a_caller_chooses_freely() -> None:
    for metric in catalogue():
        assert not {"subject", "request_id", "key", "api_key", "user"} & set(metric._labelnames)


def series_names() -> set[str]:
    names = set()
    for metric in catalogue():
        for family in metric.describe():
            assert isinstance(family, Metric)
            base = family.name
            if family.type == "counter":
                names.add(base + "_total")
            elif family.type == "histogram":
                names |= {base + "_bucket", base + "_count", base + "_sum"}
            else:
                names.add(base)
    return names


def test_the_dashboard_queries_only_series_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]

    assert len(expressions) >= 8
    used = {name for expr in expressions for name in re.findall(r"promptregistry_\w+", expr)}
    assert used <= series_names(), used - series_names()
