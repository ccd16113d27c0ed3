"""config.settings: one module driven by the environment, safe by default (STYLE R19).

Each case starts a fresh Python with its own environment, since settings are read once per process:
a process forked from one that has imported the heavy libraries and never the settings
(tests/fresh_python.py), as a new interpreter would be without that import cost.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.fresh_python import FreshPython

BASE_DIR = Path(__file__).resolve().parent.parent
PROJECT_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "DATABASE_REPLICA_URL",
    "REDIS_URL",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_PASSWORD",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_PRELOAD",
    "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER_NAME",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "DJANGO_SETTINGS_MODULE",
    "LOG_FORMAT",
    "LOG_LEVEL",
)
PRINT_SETTINGS = """
import json
from django.conf import settings
print(json.dumps({
    "debug": settings.DEBUG,
    "cache": settings.CACHES["default"]["BACKEND"],
    "cache_location": settings.CACHES["default"].get("LOCATION"),
    "eager": settings.CELERY_TASK_ALWAYS_EAGER,
    "broker": settings.CELERY_BROKER_URL,
    "database": settings.DATABASES["default"]["ENGINE"],
    "server_side_cursors_off": settings.DATABASES["default"].get("DISABLE_SERVER_SIDE_CURSORS"),
    "options": settings.DATABASES["default"].get("OPTIONS", {}),
    "allowed_hosts": settings.ALLOWED_HOSTS,
}))
"""


def clean_environment() -> dict[str, str]:
    """This process's environment without the project's variables, nor a developer's .env: each
    test states the whole environment it means."""
    clean = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    return clean | {"PROMPT_REGISTRY_ENV_FILE": os.devnull}


@functools.cache
def fresh_python() -> FreshPython:
    """This test process's parent of fresh Pythons (tests/test_sentinel.py runs cases too)."""
    python = FreshPython(clean_environment(), BASE_DIR)
    atexit.register(python.close)
    return python


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in a fresh process with the clean environment and ``env``."""
    environment = clean_environment() | {"PROMPT_REGISTRY_VAR_DIR": str(tmp_path / "var"), **env}
    return fresh_python().run(args, env=environment, cwd=BASE_DIR, timeout=120)


PROBE = """
import json, os, sys
from django.conf import settings
print(json.dumps({
    "pid": os.getpid(),
    "argv": sys.argv,
    "configured": settings.configured,
    "project_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("config", "api")),
    "first": os.environ.get("FIRST"),
    "second": os.environ.get("SECOND"),
}))
"""


def test_each_case_is_a_process_of_its_own_that_has_read_no_settings_and_only_its_environment(
    tmp_path,
):
    first = run(["-c", PROBE, "an-argument"], tmp_path, FIRST="1")
    second = run(["-c", PROBE], tmp_path, SECOND="2")
    crashed = run(["-c", "raise LookupError('no such thing')"], tmp_path)

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    first, second = json.loads(first.stdout), json.loads(second.stdout)
    assert first["pid"] != second["pid"]
    assert first["argv"] == ["-c", "an-argument"]
    for case in (first, second):
        assert case["configured"] is False
        assert case["project_modules"] == []
    assert (first["first"], first["second"]) == ("1", None)
    assert (second["first"], second["second"]) == (None, "2")  # nothing left by the first case
    assert crashed.returncode == 1
    assert crashed.stderr.startswith("Traceback (most recent call last):")
    assert "LookupError: no such thing" in crashed.stderr.splitlines()[-1]


def settings_with(tmp_path: Path, **env: str) -> dict[str, object]:
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    result = run(["-c", PRINT_SETTINGS], tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "registry.example.com",
    "SECURE_HSTS_PRELOAD": "true",
}


def test_production_settings_pass_the_deployment_checks(tmp_path):
    assert len(PRODUCTION["SECRET_KEY"]) >= 50

    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **PRODUCTION
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_hsts_preload_is_the_one_thing_a_deployment_must_opt_into(tmp_path):
    env = {k: v for k, v in PRODUCTION.items() if k != "SECURE_HSTS_PRELOAD"}

    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **env)

    assert result.returncode != 0
    assert "(security.W021)" in result.stderr
    assert "identified 1 issue" in result.stderr


def test_production_defaults_are_strict(tmp_path):
    values = settings_with(tmp_path, **PRODUCTION)

    assert values["debug"] is False
    assert values["allowed_hosts"] == ["registry.example.com"]


def test_without_a_secret_key_production_refuses_to_start(tmp_path):
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}

    result = run(["manage.py", "check"], tmp_path, **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY" in result.stderr


def test_debug_gets_a_development_key_and_local_hosts(tmp_path):
    values = settings_with(tmp_path, DEBUG="true")

    assert values["debug"] is True
    assert values["allowed_hosts"] == ["127.0.0.1", "localhost"]


@pytest.mark.parametrize("value", ["ture", "maybe", "2"])
def test_a_misspelled_boolean_refuses_to_start(tmp_path, value):
    result = run(["manage.py", "check"], tmp_path, **{**PRODUCTION, "DEBUG": value})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"DEBUG must be true or false, not '{value}'" in result.stderr


def test_a_bad_whole_number_refuses_to_start(tmp_path):
    result = run(
        ["manage.py", "check"], tmp_path, **{**PRODUCTION, "SECURE_HSTS_SECONDS": "a year"}
    )

    assert result.returncode != 0
    assert "SECURE_HSTS_SECONDS must be a whole number" in result.stderr


@pytest.mark.parametrize("value", ["lots", "nan", "0.5"])
def test_a_bad_number_refuses_to_start(tmp_path, value):
    result = run(["manage.py", "check"], tmp_path, **{**PRODUCTION, "SPEND_ANOMALY_FACTOR": value})

    assert result.returncode != 0
    assert "SPEND_ANOMALY_FACTOR must be a number" in result.stderr


def test_without_redis_the_cache_is_local_memory_and_tasks_run_eagerly(tmp_path):
    values = settings_with(tmp_path, **PRODUCTION)

    assert values["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert values["eager"] is True
    assert values["broker"] == "memory://"
    assert values["database"] == "django.db.backends.sqlite3"


def test_an_empty_database_url_is_the_embedded_default(tmp_path):
    values = settings_with(tmp_path, **PRODUCTION, DATABASE_URL="", REDIS_URL="")

    assert values["database"] == "django.db.backends.sqlite3"
    assert values["eager"] is True


def test_with_redis_the_cache_and_broker_use_it(tmp_path):
    url = "redis://127.0.0.1:6379/15"

    values = settings_with(tmp_path, **PRODUCTION, REDIS_URL=url)

    assert values["cache"] == "django_redis.cache.RedisCache"
    assert values["cache_location"] == url
    assert values["eager"] is False
    assert values["broker"] == url


def test_database_url_selects_postgresql(tmp_path):
    values = settings_with(
        tmp_path, **PRODUCTION, DATABASE_URL="postgres://user@db.example.com:5432/registry"
    )

    assert values["database"] == "django.db.backends.postgresql"


def test_behind_a_transaction_pooler_nothing_needs_a_session(tmp_path):
    url = "postgres://user@pgbouncer.example.com:6432/registry"
    pooled = settings_with(
        tmp_path, **PRODUCTION, DATABASE_URL=url, DATABASE_TRANSACTION_POOLER="true"
    )
    direct = settings_with(tmp_path, **PRODUCTION, DATABASE_URL=url)

    assert pooled["server_side_cursors_off"] is True
    assert pooled["options"]["prepare_threshold"] is None
    assert not direct["server_side_cursors_off"]
    assert "prepare_threshold" not in direct["options"]


LOG_A_LINE = """
import logging
import django
django.setup()
logging.getLogger("releases.cache").warning("Release changed: prompt=%s", "a")
"""


def test_plain_logs_by_default_json_lines_when_asked(tmp_path):
    plain = run(
        ["-c", LOG_A_LINE], tmp_path, **PRODUCTION, DJANGO_SETTINGS_MODULE="config.settings"
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.strip().endswith(" WARNING releases.cache Release changed: prompt=a")

    result = run(
        ["-c", LOG_A_LINE],
        tmp_path,
        **PRODUCTION,
        DJANGO_SETTINGS_MODULE="config.settings",
        LOG_FORMAT="json",
    )

    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING",
        "releases.cache",
        "Release changed: prompt=a",
    )


def test_a_misspelled_log_format_refuses_to_start(tmp_path):
    result = run(["manage.py", "check"], tmp_path, **{**PRODUCTION, "LOG_FORMAT": "jsno"})

    assert result.returncode != 0
    assert "LOG_FORMAT must be plain or json, not 'jsno'" in result.stderr


def test_a_heartbeat_that_is_stale_before_the_next_is_due_refuses_to_start(tmp_path):
    env = {**PRODUCTION, "WORKER_HEARTBEAT_SECONDS": "60", "WORKER_HEARTBEAT_STALE_SECONDS": "60"}

    result = run(["manage.py", "check"], tmp_path, **env)

    assert result.returncode != 0
    assert "WORKER_HEARTBEAT_STALE_SECONDS must be above WORKER_HEARTBEAT_SECONDS" in result.stderr


# --- metrics (docs/metrics.md) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        (
            {"METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,intranet"},
            "METRICS_ALLOWED_NETWORKS: 'intranet' is not a network",
        ),
        # Neither networks nor a token: /metrics would be open to anyone.
        ({"METRICS_ALLOWED_NETWORKS": ""}, "Set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS"),
        ({"WORKER_METRICS_PORT": "70000"}, "WORKER_METRICS_PORT must be a TCP port"),
    ],
)
def test_a_metrics_setting_that_cannot_be_meant_refuses_to_start(tmp_path, variables, says):
    result = run(["manage.py", "check"], tmp_path, **{**PRODUCTION, **variables})

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert says in result.stderr


def test_a_token_alone_may_open_metrics_to_every_address(tmp_path):
    result = run(
        ["manage.py", "check"],
        tmp_path,
        **{**PRODUCTION, "METRICS_ALLOWED_NETWORKS": "", "METRICS_TOKEN": "a-long-scrape-token"},
    )

    assert result.returncode == 0, result.stderr


# --- scaling out: a read replica, Redis Sentinel (docs/operations.md, decision 0040) -------------

PRINT_SCALING = """
import json
import django
django.setup()
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from api.replica import ReplicaReadsMiddleware
from config.routers import ReplicaRouter
from registry.models import Prompt
try:
    ReplicaReadsMiddleware(lambda request: None)
    middleware = True
except MiddlewareNotUsed:
    middleware = False
print(json.dumps({
    "databases": settings.DATABASES,
    "routes_reads": ReplicaRouter().db_for_read(Prompt),
    "middleware": middleware,
    "cache": settings.CACHES["default"],
    "broker": settings.CELERY_BROKER_URL,
    "transport": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
}))
"""


def scaling_settings(tmp_path: Path, **env: str) -> dict:
    result = run(["-c", PRINT_SCALING], tmp_path, DJANGO_SETTINGS_MODULE="config.settings", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


PRIMARY = "postgres://registry@db.example.com:5432/registry"
REPLICA = "postgres://registry@replica.example.com:5432/registry"


def test_without_a_replica_there_is_no_alias_and_routing_is_djangos(tmp_path):
    values = scaling_settings(tmp_path, **PRODUCTION, DATABASE_URL=PRIMARY)

    assert list(values["databases"]) == ["default"]
    assert values["routes_reads"] is None  # the router answers nothing: Django's own routing
    assert values["middleware"] is False  # not installed


def test_a_replica_gets_the_primarys_connection_policy_and_mirrors_it_in_tests(tmp_path):
    values = scaling_settings(
        tmp_path,
        **PRODUCTION,
        DATABASE_URL=PRIMARY,
        DATABASE_REPLICA_URL=REPLICA,
        DATABASE_TRANSACTION_POOLER="true",
        DATABASE_CONNECT_TIMEOUT="5",
    )

    default, replica = values["databases"]["default"], values["databases"]["replica"]
    assert replica["HOST"] == "replica.example.com"
    assert replica["TEST"]["MIRROR"] == "default"
    for database in (default, replica):
        assert database["OPTIONS"] == {
            "connect_timeout": 5,
            "prepare_threshold": None,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
        }
        assert database["DISABLE_SERVER_SIDE_CURSORS"] is True
        assert (database["CONN_MAX_AGE"], database["CONN_HEALTH_CHECKS"]) == (60, True)
    assert values["routes_reads"] == "default"  # outside a replica's context
    assert values["middleware"] is True


def test_keepalive_options_in_the_database_url_win_over_the_dead_peer_bound(tmp_path):
    values = scaling_settings(
        tmp_path,
        **PRODUCTION,
        DATABASE_URL=f"{PRIMARY}?keepalives_idle=60",
        DATABASE_DEAD_PEER_SECONDS="12",
    )

    options = values["databases"]["default"]["OPTIONS"]
    assert int(options["keepalives_idle"]) == 60
    assert (options["keepalives_interval"], options["tcp_user_timeout"]) == (2, 12_000)


@pytest.mark.parametrize(
    ("timeout", "interval", "mutex"), [(None, 10, 300), ("3", 1, 3), ("12", 4, 12)]
)
def test_a_dead_workers_job_is_swept_back_soon_after_its_visibility_timeout(
    tmp_path, timeout, interval, mutex
):
    """kombu's default sweeps for such jobs every 100 s, and skips a sweep that meets another's."""
    env = {"CELERY_VISIBILITY_TIMEOUT": timeout} if timeout else {}
    values = scaling_settings(tmp_path, **PRODUCTION, DATABASE_URL=PRIMARY, **env)

    transport = values["transport"]
    assert transport["visibility_timeout"] == int(timeout or 3600)
    assert (transport["unacked_restore_interval"], transport["unacked_restore_throttle"]) == (
        interval,
        1,
    )
    assert transport["unacked_mutex_expire"] == mutex


def test_a_replica_needs_postgresql_on_both_sides(tmp_path):
    result = run(["manage.py", "check"], tmp_path, **PRODUCTION, DATABASE_REPLICA_URL=REPLICA)

    assert result.returncode != 0
    assert "DATABASE_REPLICA_URL needs PostgreSQL" in result.stderr


def test_with_sentinels_the_cache_and_the_broker_ask_them(tmp_path):
    values = scaling_settings(
        tmp_path,
        **PRODUCTION,
        REDIS_URL="redis://:s%40cret@mymaster/2",
        REDIS_SENTINELS="10.0.0.1:26380, [fd00::1], sentinel-3",
        REDIS_SENTINEL_PASSWORD="its-own",
    )

    sentinels = [["10.0.0.1", 26380], ["fd00::1", 26379], ["sentinel-3", 26379]]
    timeouts = {"socket_timeout": 1, "socket_connect_timeout": 1, "password": "its-own"}
    assert values["cache"]["LOCATION"] == "redis://:s%40cret@mymaster/2"
    assert values["cache"]["OPTIONS"] == {
        "SOCKET_CONNECT_TIMEOUT": 1,
        "SOCKET_TIMEOUT": 1,
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": sentinels,
        "SENTINEL_KWARGS": timeouts,
    }
    assert values["broker"] == (
        "sentinel://:s%40cret@10.0.0.1:26380/2;"
        "sentinel://:s%40cret@[fd00::1]:26379/2;"
        "sentinel://:s%40cret@sentinel-3:26379/2"
    )
    assert values["transport"]["master_name"] == "mymaster"
    assert values["transport"]["sentinel_kwargs"] == timeouts
    assert values["transport"]["visibility_timeout"] == 3600


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        # The address of a plain Redis left in place: the master must be named, not addressed.
        ({"REDIS_URL": "redis://redis.internal:6379/0"}, "names the master"),
        ({"REDIS_URL": "rediss://mymaster/0"}, "TLS through sentinels is not supported"),
        ({"REDIS_URL": "redis://MyMaster/0"}, "in lower case"),
        ({"REDIS_URL": ""}, "names the master"),
        ({"REDIS_URL": "redis://mymaster/0", "REDIS_SENTINELS": "10.0.0.1:sentinel"}, "host:port"),
        ({"REDIS_URL": "redis://mymaster/0", "REDIS_SENTINELS": "10.0.0.1:26379/0"}, "host:port"),
    ],
)
def test_a_sentinel_setting_that_cannot_be_meant_refuses_to_start(tmp_path, variables, says):
    env = {**PRODUCTION, "REDIS_SENTINELS": "10.0.0.1:26379", **variables}

    result = run(["manage.py", "check"], tmp_path, **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert says in result.stderr


@pytest.mark.parametrize("prefix", ["api/openai", "admin", "Open AI", "/"])
def test_an_openai_prefix_over_the_services_own_paths_refuses_to_start(tmp_path, prefix):
    result = run(["manage.py", "check"], tmp_path, **PRODUCTION, OPENAI_COMPAT_PREFIX=prefix)

    assert result.returncode != 0
    assert "OPENAI_COMPAT_PREFIX must be a path" in result.stderr


def test_the_openai_endpoints_are_mounted_where_the_prefix_says(tmp_path):
    reverse = (
        "import django; django.setup(); from django.urls import reverse; "
        "print(reverse('openai-responses'))"
    )
    result = run(
        ["-c", reverse],
        tmp_path,
        **PRODUCTION,
        DJANGO_SETTINGS_MODULE="config.settings",
        OPENAI_COMPAT_PREFIX="/llm/v2/",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "/llm/v2/responses"
