"""``manage.py provider add/list``: providers configured from the command line, credentials by
environment variable name only."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from runs.models import ModelPrice, Provider

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("provider", *args, stdout=out)
    return out.getvalue()


def test_add_creates_a_provider():
    output = run(
        "add",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
        "--api-key-env",
        "OPENAI_API_KEY",
        "--timeout",
        "20",
        "--max-retries",
        "3",
    )

    assert "Added provider openai" in output
    provider = Provider.objects.get(name="openai")
    assert (provider.base_url, provider.api_key_env) == (
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
    )
    assert (provider.timeout_seconds, provider.max_retries) == (20.0, 3)


def test_adding_again_updates_instead_of_failing():
    run("add", "local", "--base-url", "http://127.0.0.1:8765/v1")
    output = run("add", "local", "--base-url", "http://127.0.0.1:9999/v1", "--timeout", "5")

    assert "Updated provider local" in output
    assert Provider.objects.count() == 1
    assert Provider.objects.get().base_url == "http://127.0.0.1:9999/v1"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["Bad Name", "--base-url", "http://x.example/v1"], "name"),
        (["ok", "--base-url", "not a url"], "base_url"),
        (
            ["ok", "--base-url", "http://x.example/v1", "--api-key-env", "sk-live-123"],
            "api_key_env",
        ),
        (["ok", "--base-url", "http://x.example/v1", "--timeout", "0"], "timeout_seconds"),
        (["ok", "--base-url", "http://x.example/v1", "--max-retries", "50"], "max_retries"),
    ],
)
def test_it_refuses_bad_settings_and_saves_nothing(args, complaint):
    with pytest.raises(CommandError, match=complaint):
        run("add", *args)
    assert not Provider.objects.exists()


def test_list_names_the_key_variable_never_a_key():
    run(
        "add",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
        "--api-key-env",
        "OPENAI_API_KEY",
    )
    output = run("list")
    assert "openai  https://api.openai.com/v1  key from $OPENAI_API_KEY" in output


def test_price_sets_and_updates_a_models_price_and_list_shows_it():
    run("add", "local", "--base-url", "http://127.0.0.1:8765/v1")
    assert "set" in run("price", "local", "echo-1", "--input", "0.5", "--output", "1.5")
    run("price", "local", "echo-1", "--input", "0.25", "--output", "1")
    price = ModelPrice.objects.get(provider__name="local", model="echo-1")
    assert (price.input_per_million, price.output_per_million) == (Decimal("0.25"), Decimal(1))
    assert "echo-1  0.250000 in / 1.000000 out per million tokens" in run("list")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody", "m", "--input", "1", "--output", "1"), "No provider named 'nobody'"),
        (("local", "m", "--input", "-1", "--output", "1"), "input_per_million"),
        (("local", "m", "--input", "1", "--output", "NaN"), "output_per_million"),
        (("local", "m", "--input", "lots", "--output", "1"), "not an amount"),
    ],
)
def test_price_refuses_bad_input_and_changes_nothing(args, message):
    run("add", "local", "--base-url", "http://127.0.0.1:8765/v1")
    with pytest.raises(CommandError, match=message):
        run("price", *args)
    assert not ModelPrice.objects.exists()


def test_strict_output_is_on_by_default_set_by_a_flag_and_kept_when_left_out():
    base = ["add", "vllm", "--base-url", "https://vllm.example.com/v1"]

    run(*base)
    assert Provider.objects.get(name="vllm").strict_output is True
    run(*base, "--no-strict-output")
    assert Provider.objects.get(name="vllm").strict_output is False
    run(*base, "--timeout", "10")  # an update without the flag keeps the setting
    assert Provider.objects.get(name="vllm").strict_output is False
    assert "non-strict output" in run("list")
    run(*base, "--strict-output")
    assert Provider.objects.get(name="vllm").strict_output is True
