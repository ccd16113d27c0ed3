"""The only settings module (STYLE R19).

Everything comes from the environment. With no ``DATABASE_URL`` and no ``REDIS_URL`` the service runs
on its embedded default: a SQLite file under ``var/``, the local-memory cache and eager Celery tasks.
Production settings are the same module with production values in the environment; there is no
``settings_prod.py``. Every project setting is declared here with its default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

# A development checkout keeps its local settings in .env (`make install` writes DEBUG=true there,
# so manage.py works in a checkout); variables set in the real environment always win, and a
# deployment sets those and has no .env.
ENV_FILE = Path(os.environ.get("PROMPT_REGISTRY_ENV_FILE", BASE_DIR / ".env"))
if ENV_FILE.is_file():
    environ.Env.read_env(ENV_FILE)
VAR_DIR = Path(environ.Env().str("PROMPT_REGISTRY_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()


def env_bool(name: str, *, default: bool) -> bool:
    """A strict boolean: a typo such as ``DEBUG=ture`` stops the process instead of meaning False."""
    raw = env.str(name, default=None)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, *, default: int, minimum: int = 0) -> int:
    raw = env.str(name, default=None)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from exc
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def env_float(name: str, *, default: float, minimum: float = 0.0) -> float:
    """A finite number at least ``minimum``: a typo stops the process, as ``env_int`` does."""
    raw = env.str(name, default=None)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from exc
    if not math.isfinite(value) or value < minimum:
        raise ImproperlyConfigured(f"{name} must be a number of at least {minimum}, not {raw!r}")
    return value


DEBUG = env_bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (DEBUG=true allows a development key)."
        )
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"
# Earlier secrets, still accepted while what they signed or sealed lives on (sessions, queued shadow
# jobs): rotate by moving the old SECRET_KEY here and dropping it later.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "registry",
    "releases",
    "runs",
    "evaluations",
    "webhooks",
    "api",
]

MIDDLEWARE = [
    # Before everything: times and counts every request by route, the probes' and the runtime
    # path's included, and answers /metrics to the scrapes METRICS_* allow (api/metrics.py).
    "api.metrics.MetricsMiddleware",
    # Then /healthz and /readyz, whatever the Host and the scheme (decision 0037).
    "config.middleware.ProbeMiddleware",
    # The log context of every request, the runtime path's included (config.logs).
    "config.middleware.RequestContextMiddleware",
    # Then: answers the runtime path (resolve, render, run, bundle, stream) itself, skipping the
    # rest (api/middleware.py).
    "api.middleware.RuntimeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files straight from the web process (the admin's CSS and scripts, the API docs),
    # compressed and cached, with no separate file server to run.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # With DATABASE_REPLICA_URL, the read-only API's GETs read from the replica (decision 0040);
    # without, it is not installed.
    "api.replica.ReplicaReadsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL (PostgreSQL through psycopg 3), or the embedded SQLite file.
# Set but empty counts as unset, as for REDIS_URL (an env file's "DATABASE_URL=" line).
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", default=60)
# Seconds to wait for PostgreSQL to accept a connection. Without it a host gone from the network
# (a failover, a partition) holds every request that needs the database for ever; with it they
# answer a 503 problem and the release cache serves what it holds (libpq's minimum is 2).
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", default=3, minimum=2)
# Seconds of silence from PostgreSQL's host, on an open connection, after which the connection is
# given up (an error: a 503 problem, or the release cache's copy) instead of waited on: libpq's
# TCP keepalives probe a connection waiting for an answer, and tcp_user_timeout bounds data the
# host never acknowledges. Without them a host gone from the network mid-query (a failover, a
# partition) holds the request's thread for the kernel's defaults, two hours and more. A live
# host's kernel answers the probes, so a slow query is never cut; a server process wedged on a
# live host is not bounded by this.
DATABASE_DEAD_PEER_SECONDS = env_int("DATABASE_DEAD_PEER_SECONDS", default=30, minimum=6)
# Behind a pooler in transaction mode (PgBouncer's pool_mode=transaction), consecutive
# transactions of one connection may reach different server sessions: no server-side cursors
# (they live in a session) and no prepared statements (psycopg prepares a query it sees often,
# in the session it ran on). For the replica too. docs/operations.md, "Scaling out".
DATABASE_TRANSACTION_POOLER = env_bool("DATABASE_TRANSACTION_POOLER", default=False)
POSTGRESQL = "django.db.backends.postgresql"


def dead_peer_options(seconds: int) -> dict[str, int]:
    """libpq's options that give up a connection whose host has been silent for about
    ``seconds``: keepalive probes from a third of it, every sixth; data, probes included,
    unacknowledged for all of it (on Linux ``tcp_user_timeout`` ends it, before the count)."""
    return {
        "keepalives": 1,
        "keepalives_idle": seconds // 3,
        "keepalives_interval": seconds // 6,
        "keepalives_count": 3,
        "tcp_user_timeout": seconds * 1000,
    }


def database_config(url: str) -> dict:
    """One database's settings from its URL, with the service's connection policy."""
    config = env.db_url_config(url)
    config["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
    config["CONN_HEALTH_CHECKS"] = True
    if config["ENGINE"] == POSTGRESQL:
        options = config.setdefault("OPTIONS", {})
        options["connect_timeout"] = DATABASE_CONNECT_TIMEOUT
        for name, value in dead_peer_options(DATABASE_DEAD_PEER_SECONDS).items():
            options.setdefault(name, value)  # the URL's own (?keepalives_idle=...) win
        if DATABASE_TRANSACTION_POOLER:
            config["DISABLE_SERVER_SIDE_CURSORS"] = True
            options["prepare_threshold"] = None
    return config


DATABASES = {
    "default": database_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
    ),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
# A read replica of DATABASE_URL (PostgreSQL streaming replication, a managed read replica): the
# release cache's loads and the read-only API's GETs read from it, everything else from the
# primary (config/routers.py, decision 0040). Unset: no alias, every query on the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = database_config(DATABASE_REPLICA_URL)
    if {DATABASES["default"]["ENGINE"], DATABASES["replica"]["ENGINE"]} != {POSTGRESQL}:
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL needs PostgreSQL for both it and DATABASE_URL (postgres://...)"
        )
    # A test run has no replication: the replica's alias reads the primary's test database.
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["config.routers.ReplicaRouter"]  # a no-op without the replica
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: cache and Celery broker. Unset: local-memory cache and tasks run eagerly in-process.
REDIS_URL = env.str("REDIS_URL", default="")
# Redis Sentinel: the sentinels' addresses (host:port, comma-separated; the port defaults to
# 26379). With them, REDIS_URL names the master as the sentinels know it, not an address:
# redis://[:password@]mymaster/0 (django-redis's convention), and every client (the cache, the
# release messages, the broker, the rate limiter, /readyz) asks the sentinels where it is now
# (config/redisclients.py, decision 0040). REDIS_SENTINEL_PASSWORD: the sentinels' own, when
# they require one (their requirepass), not the master's.
REDIS_SENTINEL_PASSWORD = env.str("REDIS_SENTINEL_PASSWORD", default="")


def sentinel_address(entry: str) -> tuple[str, int]:
    """``host:port``, ``host`` or ``[::1]:26379`` as (host, port)."""
    try:
        parts = urlsplit(f"//{entry}")
        host, port = parts.hostname, parts.port or 26379
    except ValueError as exc:
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {entry!r} is not host:port") from exc
    if not host or parts.path or parts.query or parts.username is not None:
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {entry!r} is not host:port")
    return host, port


REDIS_SENTINELS = [
    sentinel_address(entry.strip())
    for entry in env.list("REDIS_SENTINELS", default=[])
    if entry.strip()
]
if REDIS_SENTINELS:
    _master = urlsplit(REDIS_URL)
    try:
        _master_port = _master.port
    except ValueError:
        _master_port = -1
    # A URL's host is case-insensitive, and redis-py and django-redis read it lower-cased.
    if (
        _master.scheme != "redis"
        or not _master.hostname
        or _master_port is not None
        or _master.netloc.rpartition("@")[2] != _master.hostname
    ):
        raise ImproperlyConfigured(
            "With REDIS_SENTINELS, REDIS_URL names the master as the sentinels know it, in lower "
            "case and with no port: redis://[:password@]mymaster/0 (TLS through sentinels is "
            f"not supported), not {REDIS_URL!r}"
        )
# The sentinels' connections: the cache's timeouts, and their password.
REDIS_SENTINEL_KWARGS = {"socket_timeout": 1, "socket_connect_timeout": 1} | (
    {"password": REDIS_SENTINEL_PASSWORD} if REDIS_SENTINEL_PASSWORD else {}
)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "promptregistry",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
    if REDIS_SENTINELS:
        # The master only: django-redis's SentinelClient would also read from the replicas,
        # which lag behind it.
        CACHES["default"]["OPTIONS"] |= {
            "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
            "SENTINELS": REDIS_SENTINELS,
            "SENTINEL_KWARGS": REDIS_SENTINEL_KWARGS,
        }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
# Late-acknowledged jobs (shadow runs) stay in Redis until a worker finishes them; one taken by a
# worker that died comes back after this many seconds. Longer than any job may run.
_visibility_timeout = env_int("CELERY_VISIBILITY_TIMEOUT", default=3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
    "visibility_timeout": _visibility_timeout,
    # kombu gives such a job back only when a worker sweeps for it: when it starts, then every
    # interval x throttle seconds (100 s by default), and a sweep that finds another worker's
    # sweep under way (a mutex shared by every queue on the database) is skipped, not retried.
    # Sweep every 10 s (sooner for a short timeout) and let a mutex left by a worker killed
    # mid-sweep lapse within the timeout, not 5 minutes.
    "unacked_restore_interval": max(1, min(10, _visibility_timeout // 3)),
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": min(300, _visibility_timeout),
}
if REDIS_SENTINELS:
    # kombu's form: one sentinel:// URL per sentinel, each with the master's password and
    # database; the master's name goes in the transport options.
    _userinfo = _master.netloc.rpartition("@")[0]
    CELERY_BROKER_URL = ";".join(
        f"sentinel://{_userinfo + '@' if _userinfo else ''}"
        f"{f'[{host}]' if ':' in host else host}:{port}{_master.path}"
        for host, port in REDIS_SENTINELS
    )
    CELERY_BROKER_TRANSPORT_OPTIONS |= {
        "master_name": _master.hostname,
        "sentinel_kwargs": REDIS_SENTINEL_KWARGS,
    }
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
# Where beat keeps when each periodic task last ran: under VAR_DIR, which a container mounts or
# gives its user (the code's folder is read-only there).
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # with late acks, a worker holds no more than it runs
# Every task's time limits (seconds). At the soft limit the task is interrupted
# (SoftTimeLimitExceeded) and marks its row failed (`time_limit`); at the hard limit the worker
# kills the pool process and marks the same row failed itself (runs.tasks, evaluations.tasks), so
# no shadow run or eval run is left pending or running for ever. Keep the hard limit below the
# visibility timeout, or a job still running is delivered to a second worker as well.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", default=300, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", default=360, minimum=2)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_TIME_LIMIT must be above CELERY_TASK_SOFT_TIME_LIMIT")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Dates read 2026-12-07 14:05 in the admin (config/formats/en/formats.py): half the width of
# Django's "Dec. 7, 2026, 2:05 p.m.", so date columns stay on one line.
FORMAT_MODULE_PATH = ["config.formats"]

STATIC_URL = "static/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))
# WhiteNoise serves STATIC_ROOT (``collectstatic``, which also writes gzip and Brotli copies).
# Without hashed names a file may change under its name between releases, so browsers keep
# them for an hour at most, not forever; with DEBUG (make run) it reads the apps' folders.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_MAX_AGE = env_int("WHITENOISE_MAX_AGE", default=3600, minimum=0)
WHITENOISE_USE_FINDERS = DEBUG
# WhiteNoise warns at every start when the folder is missing (nothing collected yet: make run, the
# tests); an empty one says the same without the noise. Where it cannot be made, collectstatic
# will say why.
with contextlib.suppress(OSError):
    Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)

# Security. The production defaults are strict; a deployment behind a TLS proxy sets
# SECURE_PROXY_SSL_HEADER_NAME (for example HTTP_X_FORWARDED_PROTO).
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", default=31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    # Off unless asked for: once browsers ship the domain in their preload list, taking it back
    # takes months, so the deployment opts in (check --deploy warns, W021, until it does).
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
_proxy_header = env.str("SECURE_PROXY_SSL_HEADER_NAME", default="")
SECURE_PROXY_SSL_HEADER = (_proxy_header, "https") if _proxy_header else None

# Request bodies: anything larger is refused with a 413 problem document before it is parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int(
    "DATA_UPLOAD_MAX_MEMORY_SIZE", default=1_048_576, minimum=1024
)
# Files people hand the registry, read up to this size before anything parses them: a prompt file
# of `manage.py prompts import` (registry.yamlfiles) and a dataset's case file (admin upload,
# `manage.py dataset import`; evaluations.datasets.casefiles).
PROMPT_FILE_MAX_BYTES = env_int("PROMPT_FILE_MAX_BYTES", default=2_097_152, minimum=1024)
DATASET_FILE_MAX_BYTES = env_int("DATASET_FILE_MAX_BYTES", default=5_242_880, minimum=1024)
DATA_UPLOAD_MAX_NUMBER_FILES = 1  # the only upload, a case import, is one file
FILE_UPLOAD_HANDLERS = [
    "config.uploads.TruncatingUploadHandler",  # stores no file past DATASET_FILE_MAX_BYTES + 1
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

# JSON a caller sends (registry.strictjson): arrays and objects nested deeper than this are refused
# with a 400, before anything walks them.
JSON_MAX_DEPTH = env_int("JSON_MAX_DEPTH", default=64, minimum=2)

# Rate limits per API key and scope (api.ratelimit): "N/s", "N/min", "N/hour" or "N/day" is a bucket
# of N requests refilled at N per period (a burst of N, then N per period), shared by every web
# node through Redis; "off" lifts a scope's limit. "default" covers views that need no scope.
# Override some in the environment: API_RATE_LIMITS="runs:execute=5/s,prompts:read=off".
API_RATE_LIMITS_ENABLED = env_bool("API_RATE_LIMITS_ENABLED", default=True)
API_RATE_LIMITS = {
    # resolve, render, bundle, stream: cheap, and one service key may serve thousands of users a
    # second through resolve; the limit is there to stop a runaway, not to shape normal traffic
    "prompts:read": "10000/s",
    "prompts:write": "20/s",
    "releases:write": "10/s",
    "runs:execute": "100/s",  # each one calls a model
    "events:write": "100/s",  # each request is a batch of up to 1,000 events
    "default": "100/s",
} | env.dict("API_RATE_LIMITS", default={})

# The MCP server (POST /mcp, api/mcpserver, docs/mcp.md): how long one request may wait for its
# answer. The tools' work is bounded by the services' own budgets; this bounds any other wait.
MCP_REQUEST_TIMEOUT_SECONDS = env_int("MCP_REQUEST_TIMEOUT_SECONDS", default=30, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.LimitedJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["api.ratelimit.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "api.problems.problem_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Prompt Registry API",
    "DESCRIPTION": "Versioned, localized prompts, their releases and what they cost in production.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two fields called status, two enums: each gets its own name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "VersionStatusEnum": "registry.models.PromptVersion.Status",
        "CallStatusEnum": "runs.models.Call.Status",
        "EvalRunStatusEnum": "evaluations.models.EvalRun.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.documented_problems",  # every refusal, as a problem document
        "api.schema.path_parameters",  # {key} and {environment}: the names' rules
        "api.schema.required_bodies",  # a body of one of several shapes is still required
        "api.runtime_schema.runtime_paths",  # the runtime path's plain Django views
        "api.openai_compat.schema.openai_paths",  # the OpenAI-compatible endpoints
        "api.mcpserver.schema.mcp_path",  # POST /mcp, the MCP server's JSON-RPC
    ],
}

# Prompt rendering (registry.rendering): caps that keep one template from eating a worker.
PROMPT_SECTION_MAX_CHARS = env_int("PROMPT_SECTION_MAX_CHARS", default=50_000, minimum=1)
PROMPT_RENDER_MAX_CHARS = env_int("PROMPT_RENDER_MAX_CHARS", default=200_000, minimum=1)
# Steps one render may take: a loop iteration is one, a call 5, an operation over a list one per
# item it touches (registry.sandbox). A million is about a second of CPU at worst.
PROMPT_RENDER_MAX_STEPS = env_int("PROMPT_RENDER_MAX_STEPS", default=1_000_000, minimum=1)
# Wall-clock milliseconds one render may take (all four sections) before it is refused with a
# 400 render_too_slow; checked inside the sandbox as it runs. The SDK's Client has the same
# default (render_deadline_ms).
PROMPT_RENDER_DEADLINE_MS = env_int("PROMPT_RENDER_DEADLINE_MS", default=250, minimum=1)
PROMPT_TEMPLATE_CACHE_SIZE = env_int("PROMPT_TEMPLATE_CACHE_SIZE", default=4096, minimum=1)
# A conversation history (a ``messages`` variable, promptregistry.core.history): at most this
# many messages and this many characters of content, else 400 invalid-variables naming the
# variable. The SDK checks a local render with the same defaults.
PROMPT_HISTORY_MAX_MESSAGES = env_int("PROMPT_HISTORY_MAX_MESSAGES", default=500, minimum=1)
PROMPT_HISTORY_MAX_CHARS = env_int("PROMPT_HISTORY_MAX_CHARS", default=200_000, minimum=1)
# Version diffs (registry.linediff): past this many differing lines on either side of a section
# (after the lines both share at the start and end), the section is not compared line by line
# (quadratic) but shown as one replaced block, flagged ``coarse``.
VERSION_DIFF_MAX_LINES = env_int("VERSION_DIFF_MAX_LINES", default=1000, minimum=1)

# The release cache (releases.cache): how often each web process compares its revisions with the
# database, in case a change message was lost.
RELEASE_CACHE_CHECK_SECONDS = env_int("RELEASE_CACHE_CHECK_SECONDS", default=30, minimum=1)
# The release stream (GET /api/v1/environments/{environment}/stream): each one ends after this
# many seconds, so the client reconnects (through any load balancer) and a sync worker is freed.
RELEASE_STREAM_MAX_SECONDS = env_int("RELEASE_STREAM_MAX_SECONDS", default=300, minimum=1)
# How many release streams one process holds at most, in all (beyond: 503 streams-full) and per
# API key (beyond: 429 too-many-streams), both with a Retry-After spread over
# RELEASE_STREAM_RETRY_SECONDS so refused clients do not come back together (api.streamlimits).
# The ASGI process holds 10,000 in about 0.36 GB (docs/releases.md); each needs a file descriptor.
RELEASE_STREAM_MAX_PER_PROCESS = env_int(
    "RELEASE_STREAM_MAX_PER_PROCESS", default=10_000, minimum=1
)
RELEASE_STREAM_MAX_PER_KEY = env_int("RELEASE_STREAM_MAX_PER_KEY", default=2_000, minimum=1)
# A stream that ends (its maximum life, a refusal) tells its client to wait a random time up to
# this before reconnecting (the ``retry:`` field, Retry-After): no thundering herd.
RELEASE_STREAM_RETRY_SECONDS = env_int("RELEASE_STREAM_RETRY_SECONDS", default=10, minimum=1)
# A streamed run (POST /api/v1/prompts/{key}/run with "stream": true) is cancelled after this many
# seconds, retries and fallbacks included, and answered as an error event with the call recorded:
# a model that trickles tokens for ever must not hold a worker for ever.
RUN_STREAM_MAX_SECONDS = env_int("RUN_STREAM_MAX_SECONDS", default=300, minimum=1)
# The OpenAI-compatible endpoints (api/openai_compat, docs/openai-compatible.md): where they are
# mounted (an openai client's base_url is the server's address plus this path), and the
# environment a request that names none is run in (empty: every request must name one).
OPENAI_COMPAT_PREFIX = (env.str("OPENAI_COMPAT_PREFIX", default="") or "openai/v1").strip("/")
if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*", OPENAI_COMPAT_PREFIX) or (
    OPENAI_COMPAT_PREFIX.split("/")[0] in {"api", "admin", "static", "metrics", "healthz", "readyz"}
):
    raise ImproperlyConfigured(
        f"OPENAI_COMPAT_PREFIX must be a path of lowercase segments outside the service's own "
        f"(api/, admin/, static/...), such as openai/v1, not {OPENAI_COMPAT_PREFIX!r}"
    )
OPENAI_COMPAT_ENVIRONMENT = env.str("OPENAI_COMPAT_ENVIRONMENT", default="production")

# Runs (runs/): what a call record keeps, for how long, and how much shadowing a release may do.
# Redaction rules applied to every stored input and output: any of secret (values of password: …,
# secret=… pairs and of keys named like secrets), api_key (tokens shaped like secret keys), email,
# ip (IPv4 and IPv6 addresses), iban (mod-97 checked), card (Luhn-checked numbers), phone; an empty
# list stores inputs and outputs as they are.
RUNS_REDACTION_RULES = env.list(
    "RUNS_REDACTION_RULES",
    default=["secret", "api_key", "email", "ip", "iban", "card", "phone"],
)
# The operator's own redaction rules, a JSON object of name -> regex (a match becomes [name]), run
# before the built-in ones, always. Checked at start-up (runs.E003): a new lowercase name, a regex
# that compiles, with no backtracking unbounded quantifier (write \d++ or {1,40}), that matches
# no empty text and no placeholder.
RUNS_REDACTION_CUSTOM_RULES = env.json("RUNS_REDACTION_CUSTOM_RULES", default={})
# Calls (and their shadow runs) older than this are deleted by the beat task runs.delete_old_calls.
CALL_RETENTION_DAYS = env_int("CALL_RETENTION_DAYS", default=30, minimum=1)
# Shadow runs per hour per release, when the release's shadow does not set its own budget.
SHADOW_BUDGET_PER_HOUR = env_int("SHADOW_BUDGET_PER_HOUR", default=600, minimum=0)
# Of the live calls sampled for a shadow, the percentage that also reruns the live version on the
# same inputs: the noise floor a candidate's disagreement is judged against.
SHADOW_NOISE_FLOOR_PERCENT = env_int("SHADOW_NOISE_FLOOR_PERCENT", default=20, minimum=0)

# Model providers (runs.egress, docs/providers.md): where the server may send a model call, and
# which environment variable a provider may name as its key (sent as a bearer token to its URL).
# A key variable's name must match this pattern (whole name), and is never one of the service's
# own settings or variables (SECRET_KEY, DATABASE_URL, REDIS_URL...), whatever the pattern says.
PROVIDER_API_KEY_ENV_PATTERN = env.str(
    "PROVIDER_API_KEY_ENV_PATTERN", default=r"[A-Z][A-Z0-9_]*_API_KEY"
)
try:
    re.compile(PROVIDER_API_KEY_ENV_PATTERN)
except re.error as exc:
    raise ImproperlyConfigured(f"PROVIDER_API_KEY_ENV_PATTERN is not a regex: {exc}") from exc
# Hosts a provider may reach over plain http or on a private or link-local address (an in-house
# vLLM, say): exact names or IP addresses, or ".example.internal" for every name under it. Any
# other host needs https and a public address.
PROVIDER_ALLOWED_HOSTS = env.list("PROVIDER_ALLOWED_HOSTS", default=[])
# Loopback (127.0.0.0/8, ::1, localhost): make run's local model server, the suite's fake one.
# Never in production: a provider on loopback reaches whatever listens on the server itself.
PROVIDER_ALLOW_LOOPBACK = env_bool("PROVIDER_ALLOW_LOOPBACK", default=DEBUG)
# Shadow jobs (runs.payloads, decision 0016) carry the caller's unredacted variables through the
# broker, so they are encrypted and expire. SHADOW_PAYLOAD_KEYS: secrets of at least 32 characters,
# newest first (the first seals, every one opens: rotate by putting a new one first and dropping the
# old one once SHADOW_JOB_TTL_SECONDS have passed); empty: derived from SECRET_KEY and
# SECRET_KEY_FALLBACKS. A job older than SHADOW_JOB_TTL_SECONDS is dropped (its shadow run recorded
# as payload_expired, no model called); keep it above CELERY_VISIBILITY_TIMEOUT so a job a dead
# worker held still runs once.
SHADOW_PAYLOAD_KEYS = env.list("SHADOW_PAYLOAD_KEYS", default=[])
SHADOW_JOB_TTL_SECONDS = env_int("SHADOW_JOB_TTL_SECONDS", default=7200, minimum=1)
# Canary analysis (evaluations.canary.services): beat looks at every running analysis this often,
# and a look reads at most this many latencies and costs per arm (the newest) for its rank tests and
# p95.
CANARY_ANALYSIS_INTERVAL_SECONDS = env_int(
    "CANARY_ANALYSIS_INTERVAL_SECONDS", default=60, minimum=1
)
# Scheduled release changes (releases.services.schedule): how often beat applies the due steps. A
# step is applied within this many seconds of its time.
RELEASE_SCHEDULE_TICK_SECONDS = env_int("RELEASE_SCHEDULE_TICK_SECONDS", default=60, minimum=1)
CANARY_ANALYSIS_SAMPLE_CAP = env_int("CANARY_ANALYSIS_SAMPLE_CAP", default=5000, minimum=100)
# Spend anomalies (runs.anomalies): how often beat compares each prompt's and each model's spend
# today with the median of the same hours over the SPEND_BASELINE_DAYS days before, and raises an
# anomaly when it is at least SPEND_ANOMALY_MIN_COST and more than SPEND_ANOMALY_FACTOR times that.
SPEND_CHECK_INTERVAL_SECONDS = env_int("SPEND_CHECK_INTERVAL_SECONDS", default=900, minimum=1)
SPEND_BASELINE_DAYS = env_int("SPEND_BASELINE_DAYS", default=14, minimum=1)
SPEND_ANOMALY_FACTOR = env_float("SPEND_ANOMALY_FACTOR", default=3.0, minimum=1.0)
SPEND_ANOMALY_MIN_COST = env_float("SPEND_ANOMALY_MIN_COST", default=1.0)

# Eval runs (evaluations/evalruns/services.py): cases per Celery task (a worker restart redoes at
# most the case in hand, the batch's scored cases are skipped), and the environment whose stable
# version a run is compared with when none is named (absent there: the highest environment that has
# one).
EVAL_BATCH_SIZE = env_int("EVAL_BATCH_SIZE", default=10, minimum=1)
# An eval batch makes up to EVAL_BATCH_SIZE model calls, each with its retries and fallbacks: it
# gets its own limits (sent with each batch), longer than a shadow run's.
EVAL_BATCH_SOFT_TIME_LIMIT = env_int("EVAL_BATCH_SOFT_TIME_LIMIT", default=1800, minimum=1)
EVAL_BATCH_TIME_LIMIT = env_int("EVAL_BATCH_TIME_LIMIT", default=1920, minimum=2)
if EVAL_BATCH_TIME_LIMIT <= EVAL_BATCH_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("EVAL_BATCH_TIME_LIMIT must be above EVAL_BATCH_SOFT_TIME_LIMIT")
EVAL_BASELINE_ENVIRONMENT = env.str("EVAL_BASELINE_ENVIRONMENT", default="production")

# Webhooks (webhooks/, docs/webhooks.md). Where a subscription's URL may point: the outbound policy
# of providers (runs.egress) under its own settings: https to a public address, unless the host is
# listed (plain http, private addresses) or it is loopback and loopback is allowed (never in
# production: a webhook on loopback reaches whatever listens on the server itself).
WEBHOOK_ALLOWED_HOSTS = env.list("WEBHOOK_ALLOWED_HOSTS", default=[])
WEBHOOK_ALLOW_LOOPBACK = env_bool("WEBHOOK_ALLOW_LOOPBACK", default=DEBUG)
# Each attempt: seconds to connect, seconds for each read of the answer (its headers included), and
# the bytes of the answer kept for the delivery log (no more is read).
WEBHOOK_CONNECT_TIMEOUT_SECONDS = env_int("WEBHOOK_CONNECT_TIMEOUT_SECONDS", default=5, minimum=1)
WEBHOOK_READ_TIMEOUT_SECONDS = env_int("WEBHOOK_READ_TIMEOUT_SECONDS", default=15, minimum=1)
WEBHOOK_RESPONSE_EXCERPT_BYTES = env_int("WEBHOOK_RESPONSE_EXCERPT_BYTES", default=1024, minimum=0)
# Retries: a delivery is tried at most WEBHOOK_MAX_ATTEMPTS times. After a failed attempt the
# subscription waits WEBHOOK_RETRY_BASE_SECONDS, doubled at each failure in a row, at most
# WEBHOOK_RETRY_MAX_SECONDS (with +-20 % jitter; a Retry-After within that is honoured), and sends
# nothing newer meanwhile (deliveries leave in order). WEBHOOK_DISABLE_AFTER_FAILURES failed
# attempts in a row (any delivery's) disable the subscription, with a notice in the admin.
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", default=10, minimum=1)
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", default=30, minimum=1)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", default=6 * 3600, minimum=1)
WEBHOOK_DISABLE_AFTER_FAILURES = env_int("WEBHOOK_DISABLE_AFTER_FAILURES", default=15, minimum=1)
# The delivery log: the most recent finished deliveries kept per subscription (with their attempts).
WEBHOOK_DELIVERIES_KEPT = env_int("WEBHOOK_DELIVERIES_KEPT", default=500, minimum=1)
# After a rotation the previous secret signs too (two signatures) for this many hours.
WEBHOOK_SECRET_ROTATION_HOURS = env_int("WEBHOOK_SECRET_ROTATION_HOURS", default=24, minimum=0)
# Beat sends what is due and was not sent (a queue that was down, a worker that died) this often.
WEBHOOK_SWEEP_SECONDS = env_int("WEBHOOK_SWEEP_SECONDS", default=60, minimum=1)

# Health (config.health, docs/operations.md): how long /readyz waits for the database before it
# answers "failing" (keep a probe's own timeout above it); how often beat queues the worker
# heartbeat, and past how many seconds without one /readyz calls the worker degraded.
READYZ_TIMEOUT_SECONDS = env_int("READYZ_TIMEOUT_SECONDS", default=2, minimum=1)
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", default=30, minimum=1)
WORKER_HEARTBEAT_STALE_SECONDS = env_int("WORKER_HEARTBEAT_STALE_SECONDS", default=120, minimum=1)
if WORKER_HEARTBEAT_STALE_SECONDS <= WORKER_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "WORKER_HEARTBEAT_STALE_SECONDS must be above WORKER_HEARTBEAT_SECONDS"
    )

# Logs (config.logs): "plain" lines as ever, or "json", one object per line for a log pipeline,
# with the request id, the API key's id, the prompt and the environment (web and workers alike).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")

# Metrics (GET /metrics, docs/metrics.md): who may scrape them. METRICS_ALLOWED_NETWORKS: the
# addresses a scrape may come from (CIDRs, or single addresses; the connection's own address, never
# a forwarded header), empty for any; METRICS_TOKEN: when set, a scrape must also send it as
# `Authorization: Bearer <token>`. One of the two must be set: opening /metrics to any address
# with no token takes saying so (METRICS_ALLOWED_NETWORKS=0.0.0.0/0,::/0).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = [
    network.strip()
    for network in env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
    if network.strip()
]
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a network (10.0.0.0/8, ::1/128)"
        ) from exc
if not METRICS_TOKEN and not METRICS_ALLOWED_NETWORKS:
    raise ImproperlyConfigured(
        "Set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS: /metrics would be open to anyone. "
        "To allow every address, name them: METRICS_ALLOWED_NETWORKS=0.0.0.0/0,::/0"
    )
# The Celery worker serves its metrics on this port and address (config/worker_metrics.py; port 0:
# not at all). Its tasks run in child processes, which share their figures through
# PROMETHEUS_MULTIPROC_DIR. The port has none of /metrics's checks: loopback unless told otherwise.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", default=0)
if WORKER_METRICS_PORT > 65535:
    raise ImproperlyConfigured(f"WORKER_METRICS_PORT must be a TCP port, not {WORKER_METRICS_PORT}")
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", default="127.0.0.1")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "config.logs.RequestContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_context"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # The MCP server starts a stateless transport per request (api/mcpserver/view.py), and the
        # mcp package says so at INFO each time: lines per request with nothing to act on.
        "mcp": {"level": "WARNING"},
    },
}
