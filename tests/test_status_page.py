"""The admin's status page (issue 16, item 7): every web process's release cache, the worker
heartbeat, the queues, the shadow outbox, recent task failures and each provider's health, for
superusers, on real PostgreSQL and Redis.

Other processes are simulated by their status records in Redis, written as a process writes them
(``releases.nodes.node_record_write``) or, for the stale and the malformed ones, by hand in the
documented format. The queues are real lists in Redis, the failures and calls real rows.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from kombu.transport.redis import Channel

from config.health import HEARTBEAT_KEY, heartbeat_record, probe_client
from evaluations.models import Dataset, EvalResult, EvalRun
from releases.cache import release_cache
from releases.models import Release
from releases.nodes import (
    NODE_INDEX,
    NODE_PREFIX,
    HeldEnvironment,
    NodeRecord,
    node_id,
    node_record_parse,
    node_record_write,
    node_records,
)
from releases.services import release_deploy
from runs.models import Call, Provider, ShadowRun
from runs.status import provider_health, shadow_run_failures
from tests.celery_worker import wait_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

STATUS = "/admin/status/"
_request_ids = itertools.count(1)


# --- personas ---------------------------------------------------------------------------------


@pytest.fixture
def root(client: Client) -> Client:
    """A superuser: the one persona the page is for (decision 0039)."""
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def redis(needs_redis, settings):
    return probe_client()


@pytest.fixture
def records(redis) -> Iterator[list[str]]:
    """The ids of simulated processes' records the test writes, removed after it."""
    written: list[str] = []
    yield written
    for member in written:
        redis.delete(NODE_PREFIX + member)
        redis.zrem(NODE_INDEX, member)


def page(client: Client) -> str:
    response = client.get(STATUS)
    assert response.status_code == 200, response.content[:500]
    assert "no-store" in response["Cache-Control"]  # a picture of now, never kept
    body = response.content.decode()
    return body[body.index('id="content-main"') :]


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def section(body: str, anchor: str) -> str:
    """The HTML from ``<h2 id=anchor>`` to the next ``<h2``."""
    start = body.index(f'<h2 id="{anchor}"')
    end = body.find("<h2", start + 1)
    return body[start : end if end != -1 else len(body)]


def rows(body: str, kind: str) -> list[str]:
    """The rows of one kind (``status-process``, ``status-provider``...), as HTML."""
    chunks = re.split(rf'<tr class="{kind}\b', body)[1:]
    return [f'<tr class="{kind}' + chunk.split("</tr>")[0] for chunk in chunks]


def row_of(body: str, kind: str, needle: str) -> str:
    found = [r for r in rows(body, kind) if needle in r]
    assert len(found) == 1, (needle, [text(r) for r in rows(body, kind)])
    return found[0]


def redis_now(redis) -> float:
    seconds, micros = redis.time()
    return seconds + micros / 1_000_000


def write_by_hand(redis, records: list[str], *, host: str, pid: Any, **fields: str) -> None:
    """A record in the documented format (releases/nodes.py), indexed as written now."""
    member = f"{host}:{pid}"
    redis.hset(NODE_PREFIX + member, mapping={"host": host, "pid": pid, **fields})
    redis.expire(NODE_PREFIX + member, 60)
    redis.zadd(NODE_INDEX, {member: redis_now(redis)})
    records.append(member)


def production_total() -> int:
    return sum(
        Release.objects.filter(environment__name="production").values_list("revision", flat=True)
    )


def warm(released) -> None:
    """This process's release listener subscribed and production loaded whole, as a resolve
    leaves them."""
    cache = release_cache()
    wait_for(lambda: cache.trusted, "the release listener to subscribe")
    cache.lookup("production", released.prompt.key)
    assert "production" in cache.held_environments()


# --- the web processes ----------------------------------------------------------------------------


def test_this_process_and_the_others_records_with_their_revisions_the_stale_one_marked(
    root: Client, released, redis, records
) -> None:
    warm(released)
    total = production_total()
    now = time.time()
    # A process that wrote just now, current.
    node_record_write(
        redis,
        NodeRecord(
            host="web-2",
            pid=101,
            program="gunicorn",
            serving="memory",
            started_at=now - 3600,
            confirmed_at=now - 2,
            written_at=now,
            environments={"production": HeldEnvironment(1, total)},
            figures={"shadow_outbox_waiting": 4, "shadow_outbox_dropped": 2},
        ),
    )
    records.append(node_id("web-2", 101))
    # One silent for 40 s, whose copy missed the last change.
    clock = redis_now(redis)
    write_by_hand(
        redis,
        records,
        host="web-3",
        pid=202,
        program="gunicorn",
        serving="memory",
        started="",
        confirmed=f"{clock - 200:.3f}",
        written=f"{clock - 40:.3f}",
        environments=f'{{"production": [1, {total - 1}]}}',
        figures='{"shadow_outbox_waiting": 7, "shadow_outbox_dropped": 0}',
    )
    # One that started a moment ago and has not had a check yet: not stale for that.
    write_by_hand(
        redis,
        records,
        host="web-5",
        pid=505,
        serving="memory",
        started=f"{clock - 1:.3f}",
        confirmed="",
        written=f"{clock:.3f}",
    )
    # And something that is not a record at all.
    write_by_hand(redis, records, host="web-4", pid="not-a-pid")

    body = section(page(root), "processes")

    here = row_of(body, "status-process", this_process())
    assert "this process" in here
    assert "stale" not in text(here)
    assert "memory" in text(here)
    assert f"production: {total} 1 release · current" in text(here)

    fresh = row_of(body, "status-process", "web-2:101")
    assert "stale" not in text(fresh)
    assert "production: " + str(total) in text(fresh)
    assert "current" in text(fresh)
    assert "4 waiting 2 dropped" in text(fresh)

    silent = row_of(body, "status-process", "web-3:202")
    assert "status-stale" in silent.split(">")[0]
    assert "stale" in text(silent)
    assert "behind by 1 change" in text(silent)
    assert "silent: ended, stuck, or cut off from Redis" in text(silent)
    assert "its copy may be behind" in text(silent)

    starting = row_of(body, "status-process", "web-5:505")
    assert "stale" not in text(starting)
    assert "never" in text(starting)
    assert "none held whole" in text(starting)

    assert "web-4" not in body
    assert "1 record in Redis did not read as a process's status" in text(body)
    # This process is listed once, from its memory, whatever record its listener wrote.
    assert len([r for r in rows(body, "status-process") if this_process() in r]) == 1
    # The stale process's outbox is not added to the totals.
    queues = text(section(page(root), "queues"))
    assert "Shadow outbox, in the processes' memory before the broker: 4 waiting, 2 dropped" in (
        queues
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"host": "web-9"},  # no pid
        {"host": "web-9", "pid": "12", "written": "nan"},
        {"host": "web-9", "pid": "12", "environments": '{"production": [1, "2"]}'},
        {"host": "web-9", "pid": "12", "environments": '["production"]'},
        {"host": "web-9", "pid": "12", "figures": '{"n": ' + "1" * 9_000 + "}"},  # too long
    ],
)
def test_a_record_that_is_not_what_a_process_writes_is_refused(fields) -> None:
    assert node_record_parse(fields) is None


def this_process() -> str:
    """How the page names the process answering it (host:pid), as the row's first text."""
    return f">{node_id(socket.gethostname(), os.getpid())}"


def test_the_listener_writes_this_process_record_and_again_soon_after_a_change(
    released, redis, manager, django_capture_on_commit_callbacks
) -> None:
    warm(released)
    me = node_id(socket.gethostname(), os.getpid())

    def production_held() -> HeldEnvironment | None:
        for record in node_records(redis).records:
            if record.id == me:
                return record.environments.get("production")
        return None

    before = production_total()
    wait_for(lambda: production_held() == HeldEnvironment(1, before), "this process's record")

    with django_capture_on_commit_callbacks(execute=True):
        release_deploy(
            prompt=released.prompt,
            environment=released.environments["production"],
            version=2,
            actor=manager,
            reason="status page test",
        )

    assert production_total() == before + 1
    wait_for(
        lambda: production_held() == HeldEnvironment(1, before + 1),
        "the record to say what the cache holds after the change",
    )


# --- workers and queues ---------------------------------------------------------------------------


def test_the_worker_heartbeat_missing_then_fresh(root: Client, redis) -> None:
    redis.delete(HEARTBEAT_KEY)
    try:
        assert "missing no worker has run the heartbeat task" in text(
            section(page(root), "workers")
        )

        heartbeat_record()  # as the worker's heartbeat task does

        assert "fresh a worker ran it 0 s ago" in text(section(page(root), "workers"))
    finally:
        redis.delete(HEARTBEAT_KEY)


def test_queue_depths_are_the_lengths_of_the_queues_lists(root: Client, redis, settings) -> None:
    queue = f"status-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    high = f"{queue}{Channel.sep}9"  # kombu's list for priority 9 of that queue
    try:
        redis.lpush(queue, *[f"message {i}" for i in range(3)])
        redis.lpush(high, "urgent", "urgent too")

        body = section(page(root), "queues")

        assert text(row_of(body, "status-queue", queue)) == f"{queue} 5"
        unacknowledged = redis.hlen(Channel.unacked_key)
        assert f"reserved by a worker {unacknowledged}" in text(body)
    finally:
        redis.delete(queue, high)


def test_call_records_kept_for_the_database_are_counted(root: Client, spool, released) -> None:
    from runs.spool import spool_keep
    from tests.runs.test_call_insert import call

    for request_id in ("kept-1", "kept-2"):
        spool_keep(call(released, request_id=request_id))

    body = section(page(root), "queues")

    assert text(row_of(body, "status-kept-calls", "call records kept")).endswith(" 2")


# --- failures -------------------------------------------------------------------------------------


def make_call(released, *, ago: timedelta = timedelta(minutes=5), **fields: Any) -> Call:
    values: dict[str, Any] = {
        "request_id": f"status-{next(_request_ids)}",
        "source": Call.Source.RUN,
        "created_at": timezone.now() - ago,
        "prompt": released.prompt,
        "version": released.versions[1],
        "environment": released.environments["production"],
        "status": Call.Status.OK,
        "provider": "local",
        "model": "echo-1",
    }
    return Call.objects.create(**{**values, **fields})


def make_shadow_failure(
    released, *, error_class: str, ago: timedelta = timedelta(minutes=5)
) -> ShadowRun:
    call = make_call(released, ago=ago)
    return ShadowRun.objects.create(
        call=call,
        release=released.release("production"),
        version=released.versions[2],
        kind=ShadowRun.Kind.CANDIDATE,
        status=ShadowRun.Status.ERROR,
        created_at=call.created_at,
        error_class=error_class,
    )


def test_failed_and_expired_shadow_runs_and_failed_or_timed_out_eval_runs(
    root: Client, released
) -> None:
    for error_class in ("time_limit", "time_limit", "payload_expired", "server_error"):
        make_shadow_failure(released, error_class=error_class)
    make_shadow_failure(released, error_class="time_limit", ago=timedelta(hours=30))  # too old
    dataset = Dataset.objects.create(prompt=released.prompt, name="golden")
    failed = EvalRun.objects.create(
        prompt=released.prompt,
        version=released.versions[2],
        dataset=dataset,
        status=EvalRun.Status.FAILED,
        error="The provider refused every case.",
    )
    timed_out = EvalRun.objects.create(
        prompt=released.prompt,
        version=released.versions[3],
        dataset=dataset,
        status=EvalRun.Status.FINISHED,
        finished_at=timezone.now(),
    )
    for key in ("a", "b"):
        EvalResult.objects.create(
            run=timed_out, case_key=key, passed=False, error_class="time_limit"
        )
    fine = EvalRun.objects.create(
        prompt=released.prompt,
        version=released.versions[1],
        dataset=dataset,
        status=EvalRun.Status.FINISHED,
    )

    failures = shadow_run_failures(since=timezone.now() - timedelta(hours=24))
    assert [(c, n) for c, _, n in failures.by_error] == [
        ("time_limit", 2),
        ("payload_expired", 1),
        ("server_error", 1),
    ]
    assert len(failures.latest) == 4
    assert not failures.sampled
    assert shadow_run_failures(since=timezone.now() - timedelta(hours=24), sample=2).sampled

    body = section(page(root), "failures")

    assert "time_limit stopped at its Celery time limit 2" in text(body)
    assert "payload_expired expired before a worker took it 1" in text(body)
    assert "server_error 1" in text(body)
    failed_row = row_of(body, "status-eval-failure", f"/evaluations/evalrun/{failed.pk}/")
    assert "Failed" in text(failed_row)
    assert "refused every case" in text(failed_row)
    timed_row = row_of(body, "status-eval-failure", f"/evaluations/evalrun/{timed_out.pk}/")
    assert "Finished 2" in text(timed_row)
    assert f"/evaluations/evalrun/{fine.pk}/" not in body


# --- providers ------------------------------------------------------------------------------------


def attempt(provider: str, outcome: str, latency_ms: float, detail: str = "") -> dict[str, Any]:
    return {
        "provider": provider,
        "model": "echo-1",
        "outcome": outcome,
        "detail": detail,
        "latency_ms": latency_ms,
        "input_tokens": 0,
        "output_tokens": 0,
    }


def test_provider_health_from_the_calls_attempts(root: Client, released) -> None:
    local = Provider.objects.create(name="local", base_url="http://127.0.0.1:9/v1")
    Provider.objects.create(name="quiet", base_url="http://127.0.0.1:9/v1", enabled=False)
    make_call(
        released,
        ago=timedelta(minutes=20),
        attempts=[
            attempt("local", "timeout", 1000.0, "no answer in 1 s"),
            attempt("local", "ok", 200.0),
        ],
    )
    newest_failure = make_call(
        released,
        ago=timedelta(minutes=10),
        status=Call.Status.OK,
        provider="backup",
        attempts=[
            attempt("local", "server_error", 50.0, "HTTP 500: upstream fell over"),
            attempt("backup", "ok", 300.0),
        ],
    )
    make_call(released, ago=timedelta(minutes=2), attempts=[attempt("local", "ok", 100.0)])
    make_call(  # before the hour: not counted
        released, ago=timedelta(hours=2), attempts=[attempt("local", "rate_limited", 5.0)]
    )
    make_call(released, attempts="not a list")  # what a record should never hold: skipped

    report = provider_health(since=timezone.now() - timedelta(hours=1))
    by_name = {p.name: p for p in report.providers}
    assert list(by_name) == ["local", "quiet", "backup"]  # configured first, then named only
    health = by_name["local"]
    assert (health.attempts, health.failed) == (4, 2)
    assert health.outcomes == [("server_error", 1), ("timeout", 1)]
    assert (health.p50_ms, health.p95_ms) == (100.0, 1000.0)
    assert health.last_error is not None
    assert (health.last_error.call_id, health.last_error.outcome) == (
        newest_failure.pk,
        "server_error",
    )
    assert by_name["quiet"].attempts == 0
    assert not by_name["quiet"].enabled
    assert by_name["backup"].provider_id is None
    assert by_name["backup"].attempts == 1
    assert (report.calls_read, report.sampled) == (4, False)
    assert provider_health(since=timezone.now() - timedelta(hours=1), sample=2).sampled

    body = section(page(root), "providers")

    row = row_of(body, "status-provider", f"/runs/provider/{local.pk}/")
    assert "4 2 (50 %)" in text(row)
    assert "timeout: 1" in text(row)
    assert "server_error: 1" in text(row)
    assert "100 ms / 1,000 ms" in text(row)
    assert f"/admin/runs/call/{newest_failure.pk}/change/" in row
    assert "server_error (echo-1) HTTP 500: upstream fell over" in text(row)
    assert "provider=local" in row
    assert "disabled" in text(row_of(body, "status-provider", ">quiet<"))
    assert "not configured" in text(row_of(body, "status-provider", "backup"))


# --- links, permissions, budgets ------------------------------------------------------------------


def test_every_link_on_the_page_leads_to_a_list_or_record_that_answers(
    root: Client, released
) -> None:
    make_shadow_failure(released, error_class="time_limit")
    Provider.objects.create(name="local", base_url="http://127.0.0.1:9/v1")
    make_call(released, attempts=[attempt("local", "timeout", 1000.0)])

    body = page(root)
    links = sorted(set(re.findall(r'href="(/admin/[^"]*)"', body)))

    for wanted in (
        "/admin/releases/release/",
        "/admin/runs/shadowrun/?status__exact=error&within=24h",
        "/admin/runs/shadowrun/?status__exact=error&within=24h&error_class=time_limit",
        "/admin/runs/shadowrun/?status__exact=pending",
        "/admin/evaluations/evalrun/?status__exact=failed",
        "/admin/evaluations/evalresult/?error_class=time_limit",
        "/admin/runs/call/?source=all&within=1h&provider=local",
    ):
        assert wanted.replace("&", "&amp;") in body, wanted
    for link in links:
        response = root.get(link.replace("&amp;", "&"))
        # A lookup a changelist refuses redirects to ?e=1: each must be a list it understands.
        assert response.status_code == 200, (link, response.status_code)


def test_the_page_is_for_superusers_and_linked_from_their_user_tools(client: Client) -> None:
    assert client.get(STATUS).status_code == 302  # anonymous: to the login page
    assert client.get(STATUS)["Location"].startswith("/admin/login/")

    client.force_login(UserFactory(username="someone", is_staff=False))
    assert client.get(STATUS)["Location"].startswith("/admin/login/")

    client.force_login(UserFactory(username="author", is_staff=True))
    assert client.get(STATUS).status_code == 403
    assert f'href="{STATUS}"' not in client.get("/admin/").content.decode()

    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    assert re.search(rf'<a href="{STATUS}">Status</a>', client.get("/admin/").content.decode())


def test_the_page_reads_a_bounded_number_of_queries_whatever_the_rows(
    root: Client, released, django_assert_max_num_queries
) -> None:
    Provider.objects.create(name="local", base_url="http://127.0.0.1:9/v1")
    for _ in range(30):
        make_call(released, attempts=[attempt("local", "ok", 10.0)])
        make_shadow_failure(released, error_class="time_limit")

    with django_assert_max_num_queries(12):
        page(root)


# --- without Redis, and with Redis down -----------------------------------------------------------


def test_without_redis_the_page_shows_this_process_and_says_why(root: Client, settings) -> None:
    settings.REDIS_URL = ""

    body = page(root)

    assert "not configured" in text(body)
    assert "processes share nothing" in text(section(body, "processes"))
    assert len(rows(section(body, "processes"), "status-process")) == 1
    assert "this process" in text(section(body, "processes"))
    assert "embedded no broker" in text(section(body, "workers"))
    assert "No broker" in text(section(body, "queues"))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_unreachable(body: str) -> None:
    assert "Redis: reachable" not in text(body)
    assert "unreachable" in text(body.split('<h2 id="processes"')[0])
    assert "Redis is unreachable: the other processes' records cannot be read" in text(body)
    assert len(rows(section(body, "processes"), "status-process")) == 1
    assert "unknown Redis is unreachable" in text(section(body, "workers"))
    assert "the queues cannot be read" in text(section(body, "queues"))


def test_redis_refusing_connections_is_shown_unreachable(root: Client, settings) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/0"

    assert_unreachable(page(root))


class SilentServer:
    """Accepts connections and never answers: a Redis that hangs. Counts the connections."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()


def test_a_redis_that_hangs_is_asked_once_and_shown_unreachable(root: Client, settings) -> None:
    server = SilentServer()
    settings.REDIS_URL = f"redis://127.0.0.1:{server.port}/0"
    try:
        body = page(root)
    finally:
        server.close()

    assert_unreachable(body)
    # One connection, one timeout: after the first read fails, nothing more is asked of Redis.
    assert len(server.accepted) == 1
