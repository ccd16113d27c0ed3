"""The last-known-good file (promptregistry.store): written whole or not at all, read back only
when it is a file this SDK wrote, never a reason for the caller to fail. No database, no server."""

from __future__ import annotations

import json
import os
import stat

import pytest
from promptregistry.store import FORMAT, BundleStore

BUNDLE = {"environment": "staging", "hash_version": 1, "releases": {}}


def test_a_saved_bundle_reads_back_with_its_etag(tmp_path):
    store = BundleStore(tmp_path / "cache", "staging")

    assert store.save(etag='"abc"', bundle=BUNDLE) is True

    saved = store.load()
    assert (saved.etag, saved.bundle) == ('"abc"', BUNDLE)
    assert saved.saved_at > 0
    assert store.path == tmp_path / "cache" / "staging.json"


def test_the_file_is_private_and_no_temporary_file_is_left(tmp_path):
    store = BundleStore(tmp_path, "staging")
    store.save(etag='"1"', bundle=BUNDLE)
    store.save(etag='"2"', bundle=BUNDLE)

    assert [p.name for p in tmp_path.iterdir()] == ["staging.json"]
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.load().etag == '"2"'


def test_a_failed_write_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    store = BundleStore(tmp_path, "staging")
    store.save(etag='"good"', bundle=BUNDLE)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    assert store.save(etag='"new"', bundle={**BUNDLE, "releases": {"x": {}}}) is False
    monkeypatch.undo()

    assert store.load().etag == '"good"'
    assert [p.name for p in tmp_path.iterdir()] == ["staging.json"]


def test_an_unwritable_directory_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    assert BundleStore(blocker, "staging").save(etag='"1"', bundle=BUNDLE) is False
    assert "Could not save the last-known-good bundle" in caplog.text


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"format": 1, "etag": "x", "bund',
        b"\xff\xfe not utf-8",
        json.dumps({"format": FORMAT + 1, "etag": "x", "saved_at": 1, "bundle": {}}).encode(),
        json.dumps({"format": FORMAT, "etag": 7, "saved_at": 1, "bundle": {}}).encode(),
        json.dumps({"format": FORMAT, "etag": "x", "saved_at": 1, "bundle": []}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
    ],
    ids=["empty", "truncated", "not-utf8", "other-format", "etag-type", "bundle-type", "a-list"],
)
def test_a_file_that_is_not_a_saved_bundle_reads_as_none(tmp_path, content, caplog):
    store = BundleStore(tmp_path, "staging")
    store.path.write_bytes(content)

    assert store.load() is None
    assert str(store.path) in caplog.text


def test_no_file_reads_as_none_quietly(tmp_path, caplog):
    assert BundleStore(tmp_path, "staging").load() is None
    assert caplog.text == ""


@pytest.mark.parametrize("environment", ["../etc/passwd", "a/b", ".hidden"])
def test_an_environment_name_never_leaves_the_directory(tmp_path, environment):
    store = BundleStore(tmp_path / "cache", environment)

    store.save(etag='"1"', bundle=BUNDLE)

    assert store.path.parent == tmp_path / "cache"
    assert store.load().etag == '"1"'
