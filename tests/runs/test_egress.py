"""Providers cannot be turned against the server (issue 12, finding 3): runs.egress refuses a
provider's URL or key variable when it is saved (the command, the admin, the service) and again
when it is called (a row written around the rules), and the client follows no redirect.

Only loopback is contacted: the refused hosts are never connected to (the policy refuses before
any request), and name resolution is faked where a test needs a name to resolve."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from registry.content import ModelBinding
from runs import egress
from runs.fake_provider import FakeProvider
from runs.models import Provider
from runs.providers import Outcome, ProviderUnavailable, complete
from runs.services import ProviderInvalid, provider_save

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def production(settings) -> None:
    """The production defaults: no loopback, no allowed hosts."""
    settings.PROVIDER_ALLOW_LOOPBACK = False
    settings.PROVIDER_ALLOWED_HOSTS = []


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider(hang_seconds=5) as server:
        yield server


# --- the policy ---------------------------------------------------------------------------------

PUBLIC = "https://93.184.215.14/v1"  # a literal public address: nothing to resolve


@pytest.mark.parametrize(
    ("url", "refused_because"),
    [
        (PUBLIC, None),
        ("http://93.184.215.14/v1", "Plain http"),
        ("https://127.0.0.1:8765/v1", "loopback"),
        ("http://127.0.0.1:8765/v1", "Plain http"),
        ("https://localhost/v1", "loopback"),
        ("https://[::1]/v1", "loopback"),
        ("https://[::ffff:127.0.0.1]/v1", "loopback"),
        ("https://0.0.0.0/v1", "loopback"),
        ("https://2130706433/v1", "loopback"),  # 127.0.0.1 as one number
        ("https://0x7f.1/v1", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "link-local"),  # through NAT64
        ("https://[::a9fe:a9fe]/v1", "link-local"),  # IPv4-compatible
        ("https://[::ffff:0:a9fe:a9fe]/v1", "link-local"),  # IPv4-translated
        ("https://[2002:a00:5::1]/v1", "private"),  # 6to4 of 10.0.0.5
        ("https://10.0.0.5/v1", "private"),
        ("https://192.168.1.10/v1", "private"),
        ("https://100.64.0.1/v1", "private"),
        ("https://[fd00::1]/v1", "private"),
        ("https://user:pw@93.184.215.14/v1", "credentials"),
        ("ftp://93.184.215.14/v1", "http(s) URL"),
        ("file:///etc/passwd", "http(s) URL"),
        ("not a url", "http(s) URL"),
    ],
)
def test_the_policy_refuses_what_the_server_must_not_reach(production, url, refused_because):
    why = egress.url_refusal(url, resolve=False)
    assert (why is None) == (refused_because is None), why
    assert refused_because is None or refused_because in why


def test_allowed_hosts_may_use_http_and_private_addresses(settings, production):
    settings.PROVIDER_ALLOWED_HOSTS = ["10.0.0.5", ".models.internal"]
    assert egress.url_refusal("http://10.0.0.5:8000/v1", resolve=False) is None
    assert egress.url_refusal("http://vllm.models.internal/v1", resolve=False) is None
    assert egress.url_refusal("http://models.internal.evil.example/v1", resolve=False)
    assert egress.url_refusal("http://10.0.0.6/v1", resolve=False)


def test_loopback_is_allowed_by_its_setting_over_http(settings, production):
    settings.PROVIDER_ALLOW_LOOPBACK = True
    assert egress.url_refusal("http://127.0.0.1:8765/v1", resolve=False) is None
    assert egress.url_refusal("http://localhost:8765/v1", resolve=False) is None
    assert egress.url_refusal("http://10.0.0.5/v1", resolve=False)  # still not private ranges


def test_at_call_time_a_name_is_checked_by_what_it_resolves_to(production, monkeypatch):
    def resolver(host, port, *args, **kwargs):
        address = {"metadata.evil.example": "169.254.169.254", "api.good.example": "93.184.215.14"}
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address[host], port))]

    monkeypatch.setattr(egress.socket, "getaddrinfo", resolver)
    url = "https://metadata.evil.example/v1"
    assert egress.url_refusal(url, resolve=False) is None  # a name alone says nothing
    assert "link-local" in egress.url_refusal(url, resolve=True)
    with pytest.raises(egress.EgressRefused, match="link-local"):
        egress.check_url(url)
    egress.check_url("https://api.good.example/v1")


def test_at_call_time_a_name_that_does_not_resolve_is_refused(production, monkeypatch):
    """Unchecked, it could resolve to anything when the client looks it up again."""

    def resolver(host, port, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(egress.socket, "getaddrinfo", resolver)
    why = egress.url_refusal("https://api.flaky.example/v1", resolve=True)
    assert why is not None
    assert "could not be resolved" in why


@pytest.mark.parametrize(
    ("name", "refused_because"),
    [
        ("OPENAI_API_KEY", None),
        ("", None),  # no key sent at all
        ("SECRET_KEY", "own settings"),
        ("DATABASE_URL", "own settings"),
        ("REDIS_URL", "own settings"),
        ("PROVIDER_ALLOWED_HOSTS", "own settings"),
        ("AWS_SECRET_ACCESS_KEY", "PROVIDER_API_KEY_ENV_PATTERN"),
        ("HOME", "PROVIDER_API_KEY_ENV_PATTERN"),
    ],
)
def test_a_key_variable_must_match_the_pattern_and_not_be_the_service_s_own(name, refused_because):
    why = egress.api_key_env_refusal(name)
    assert (why is None) == (refused_because is None), why
    assert refused_because is None or refused_because in why


def test_a_wider_pattern_still_never_allows_the_service_s_own_names(settings):
    settings.PROVIDER_API_KEY_ENV_PATTERN = r".*"
    assert egress.api_key_env_refusal("ANY_VARIABLE") is None
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_QUEUE", "DEBUG"):
        assert "own settings" in egress.api_key_env_refusal(name)


# --- when a provider is saved: the service, the command, the admin ------------------------------


@pytest.mark.django_db
def test_the_service_refuses_with_a_pointer_per_field(production):
    with pytest.raises(ProviderInvalid) as raised:
        provider_save(
            name="evil", base_url="http://169.254.169.254/latest/", api_key_env="SECRET_KEY"
        )
    found = {p.pointer: p for p in raised.value.problems}
    assert set(found) == {"/base_url", "/api_key_env"}
    assert found["/base_url"].code == "invalid_base_url"
    assert "own settings" in found["/api_key_env"].detail
    assert not Provider.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--base-url", "https://169.254.169.254/latest/"], "link-local"),
        (["--base-url", "http://93.184.215.14/v1"], "Plain http"),
        (["--base-url", "http://127.0.0.1:8765/v1"], "Plain http"),
        (["--base-url", PUBLIC, "--api-key-env", "DATABASE_URL"], "own settings"),
        (["--base-url", PUBLIC, "--api-key-env", "GITHUB_TOKEN"], "PROVIDER_API_KEY_ENV_PATTERN"),
    ],
)
def test_the_command_refuses_and_saves_nothing(production, args, complaint):
    with pytest.raises(CommandError, match=complaint):
        call_command("provider", "add", "evil", *args, stdout=StringIO())
    assert not Provider.objects.exists()


@pytest.mark.django_db
def test_the_command_keeps_make_run_working_where_loopback_is_allowed(settings):
    # make run: DEBUG=true turns PROVIDER_ALLOW_LOOPBACK on by default.
    settings.PROVIDER_ALLOW_LOOPBACK = True
    call_command(
        "provider", "add", "local", "--base-url", "http://127.0.0.1:8765/v1", stdout=StringIO()
    )
    assert Provider.objects.get().base_url == "http://127.0.0.1:8765/v1"


@pytest.mark.django_db
def test_the_admin_form_puts_each_refusal_on_its_field(production, client: Client):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    data = {
        "name": "evil",
        "base_url": "http://10.0.0.5/v1",
        "enabled": "on",
        "api_key_env": "SECRET_KEY",
        "timeout_seconds": "30",
        "max_retries": "2",
        "prices-TOTAL_FORMS": "0",
        "prices-INITIAL_FORMS": "0",
        "prices-MIN_NUM_FORMS": "0",
        "prices-MAX_NUM_FORMS": "1000",
    }

    response = client.post("/admin/runs/provider/add/", data)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Plain http" in errors["base_url"][0]
    assert "own settings" in errors["api_key_env"][0]
    assert not Provider.objects.exists()


# --- when a provider is called ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_row_written_around_the_rules_is_refused_at_call_time(fake, monkeypatch):
    # Written straight to the database: no full_clean, so no save-time check.
    monkeypatch.setenv("SECRET_KEY", "the-service-secret")
    Provider.objects.create(name="stale", base_url=fake.base_url, api_key_env="SECRET_KEY")

    with pytest.raises(ProviderUnavailable) as raised:
        complete(binding=ModelBinding(provider="stale", model="echo-1"), messages=MESSAGES)

    (attempt,) = raised.value.attempts
    assert attempt.outcome is Outcome.REFUSED
    assert "api_key_env" in attempt.detail
    assert list(fake.requests) == []  # the secret never left the process


@pytest.mark.django_db
def test_loopback_is_refused_at_call_time_once_its_setting_is_off(fake, production):
    Provider.objects.create(name="local", base_url=fake.base_url, timeout_seconds=5)
    Provider.objects.create(name="backup", base_url=fake.base_url, timeout_seconds=5)
    binding = ModelBinding(provider="local", model="echo-1")

    with pytest.raises(ProviderUnavailable) as raised:
        complete(binding=binding, messages=MESSAGES)

    assert [a.outcome for a in raised.value.attempts] == [Outcome.REFUSED]
    assert "127.0.0.1" not in str(raised.value)  # the caller sees the field, the log the address
    assert list(fake.requests) == []


@pytest.mark.django_db
def test_a_run_through_the_api_answers_502_with_the_refusal(
    released, model_server, make_client, settings
):
    settings.PROVIDER_ALLOW_LOOPBACK = False
    runner = make_client("runs:execute", name="runner")

    response = runner.post(
        "/api/v1/prompts/support.refund-reply/run",
        data=json.dumps({"environment": "staging", "variables": {"customer_name": "Ada"}}),
        content_type="application/json",
    )

    assert response.status_code == 502, response.content
    assert "refused" in [a["outcome"] for a in response.json()["attempts"]]
    assert list(model_server.requests) == []


class Redirecting:
    """A loopback server answering every request with a 307 to ``target``."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(307)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Redirecting:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.mark.django_db
def test_a_redirect_is_not_followed(fake, monkeypatch):
    # The redirect points at a working model server: following it would succeed. It must fail.
    monkeypatch.setenv("ELSEWHERE_API_KEY", "sk-not-for-the-other-host")
    with Redirecting(fake.url) as redirecting:
        port = redirecting.server.server_address[1]
        Provider.objects.create(
            name="moved",
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key_env="ELSEWHERE_API_KEY",
            timeout_seconds=5,
            max_retries=0,
        )
        with pytest.raises(ProviderUnavailable) as raised:
            complete(binding=ModelBinding(provider="moved", model="echo-1"), messages=MESSAGES)

    (attempt,) = raised.value.attempts
    assert attempt.outcome is Outcome.BAD_REQUEST
    assert "HTTP 307" in attempt.detail
    assert list(fake.requests) == []
