"""A service keeps serving prompts when the registry does not answer (issue 5, items 4 and 8).

The registry is the live server behind a gate (tests/sdk/conftest.py): taking the gate down is the
registry going away for the client, with both sides running their real code.

- down at start, with a last-known-good file: served from it, and said so (status and a warning);
- down at start without one: ``RegistryUnavailable``, or the caller's fallback prompts;
- down mid-run: the bundle in memory goes on serving, the status says it is stale, and the client
  recovers by itself when the registry is back.
"""

from __future__ import annotations

import logging

import pytest
from promptregistry import PromptNotFound, RegistryUnavailable

# A live server needs a transactional test, whose flush SQLite refuses (release events are
# append-only, enforced by a trigger): these run on PostgreSQL only.
pytestmark = pytest.mark.postgres

KEY = "support.refund-reply"

FALLBACK = {
    KEY: {
        "version": 2,
        "templates": {
            "en": {
                "system": "You are a support agent (fallback)",
                "instruction": "Greet {{ name }}.",
            },
            "fr": {"system": "Vous êtes un agent (secours)", "instruction": "Saluez {{ name }}."},
        },
        "variables": [{"name": "name", "type": "string", "required": True}],
        "model": {"provider": "local", "model": "echo-1", "parameters": {"temperature": 0}},
    }
}


def answers(client, subjects=("user-1", "user-2", "user-3")) -> list[tuple[int, str, str]]:
    return [
        (p.version, p.variant, p.locale)
        for p in (client.get(KEY, subject=s, locale="fr-CA") for s in subjects)
    ]


# --- down at start -------------------------------------------------------------------------------


def test_down_at_start_serves_the_last_known_good_and_says_so(
    released, make_sdk, gate, wait_until, caplog
):
    live = make_sdk(stream=False)
    expected = answers(live)
    live.close()
    gate.down()

    with caplog.at_level(logging.WARNING, logger="promptregistry"):
        client = make_sdk(stream=False, refresh_interval=0.1)

    status = client.status
    assert status.source == "last-known-good"
    assert status.stale is True
    # Refused, or accepted by the closing proxy and reset: either way the registry is not there.
    assert status.last_error.split(":")[0] in {"ConnectError", "ReadError", "RemoteProtocolError"}
    assert status.etag == live.status.etag
    assert answers(client) == expected
    assert client.get(KEY, subject="user-1").source == "last-known-good"
    assert any("last-known-good" in r.getMessage() for r in caplog.records)

    gate.up()
    wait_until(lambda: client.status.source == "live", what="the client to go live again")
    assert client.status.stale is False
    assert client.status.last_error is None
    assert client.get(KEY, subject="user-1").source == "live"


def test_down_at_start_without_a_last_known_good_raises_registry_unavailable(
    released, make_sdk, gate, wait_until
):
    gate.down()

    client = make_sdk(stream=False, refresh_interval=0.1)

    assert client.status.source == "none"
    with pytest.raises(RegistryUnavailable, match="no last-known-good"):
        client.get(KEY, subject="user-1")

    gate.up()
    wait_until(lambda: client.status.source == "live", what="the first bundle")
    assert client.get(KEY, subject="user-1").version == 2


def test_down_at_start_serves_the_fallback_prompts(released, make_sdk, gate, wait_until):
    gate.down()

    client = make_sdk(stream=False, refresh_interval=0.1, fallback_prompts=FALLBACK)

    assert client.status.source == "fallback"
    assert client.status.etag is None
    prompt = client.get(KEY, subject="user-1", locale="fr-CA")
    assert (prompt.source, prompt.version, prompt.variant, prompt.locale) == (
        "fallback",
        2,
        "stable",
        "fr",
    )
    assert prompt.model["model"] == "echo-1"
    assert prompt.render(name="Zoé") == [
        {"role": "system", "content": "Vous êtes un agent (secours)"},
        {"role": "user", "content": "Saluez Zoé."},
    ]
    with pytest.raises(RegistryUnavailable, match=r"no fallback prompt 'other\.prompt'"):
        client.get("other.prompt")

    gate.up()
    wait_until(lambda: client.status.source == "live", what="the registry's bundle")
    prompt = client.get(KEY, subject="user-1", locale="fr-CA")
    assert (prompt.source, prompt.version) == ("live", 2)
    assert prompt.render(customer_name="Zoé")[0]["content"] == "Vous êtes un agent (v2)"


def test_the_last_known_good_wins_over_the_fallback_prompts(released, make_sdk, gate):
    make_sdk(stream=False).close()  # leaves the last-known-good file
    gate.down()

    client = make_sdk(stream=False, fallback_prompts=FALLBACK)

    assert client.status.source == "last-known-good"
    assert client.get(KEY, subject="user-1").render(customer_name="Ana")[0]["content"] == (
        "You are a support agent (v2)"
    )


def test_a_corrupt_last_known_good_is_ignored(released, make_sdk, gate, tmp_path, caplog):
    make_sdk(stream=False).close()
    saved = tmp_path / "cache" / "staging.json"
    saved.write_text('{"format": 1, "etag": "x", "bund')
    gate.down()

    with caplog.at_level(logging.WARNING, logger="promptregistry"):
        client = make_sdk(stream=False, fallback_prompts=FALLBACK)

    assert client.status.source == "fallback"
    assert any("corrupt" in r.getMessage() for r in caplog.records)


def test_a_wrong_key_at_start_is_said_in_the_error(released, make_sdk):
    client = make_sdk(api_key="pr_not-a-real-key", stream=False)

    assert client.status.last_error == "HTTP 401: The API key is unknown or revoked."
    with pytest.raises(RegistryUnavailable, match="HTTP 401"):
        client.get(KEY)


def test_without_a_cache_dir_nothing_is_saved_or_read(released, make_sdk, gate, tmp_path):
    make_sdk(stream=False, cache_dir=None).close()
    gate.down()

    client = make_sdk(stream=False, cache_dir=None)

    assert client.status.source == "none"
    assert not (tmp_path / "cache").exists()


# --- down mid-run --------------------------------------------------------------------------------


def test_down_mid_run_keeps_serving_says_stale_and_recovers(released, make_sdk, gate, wait_until):
    client = make_sdk(refresh_interval=0.1)
    wait_until(lambda: client.status.stream_connected, what="the stream")
    expected = answers(client)
    assert client.status.stale is False

    gate.down()
    wait_until(lambda: client.status.stale, what="a failed refresh")
    wait_until(lambda: not client.status.stream_connected, what="the stream to break")

    status = client.status
    assert status.source == "live"  # what it serves came from the registry, and is not confirmed
    assert status.last_error
    assert status.stream_connected is False
    assert answers(client) == expected

    gate.up()
    wait_until(lambda: not client.status.stale, what="a refresh to succeed again")
    wait_until(lambda: client.status.stream_connected, what="the stream to reconnect")
    assert answers(client) == expected


def test_an_unreleased_prompt_is_not_found(released, make_sdk):
    client = make_sdk(stream=False)

    with pytest.raises(PromptNotFound, match=r"'nothing\.here' has no release in staging"):
        client.get("nothing.here")
