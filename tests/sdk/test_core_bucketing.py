"""The SDK's traffic split (promptregistry.core.bucketing): the shared vectors, and the server's
own functions on generated salts, subjects and splits. Pure: no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from promptregistry.core import bucketing as sdk

from releases import bucketing as server

VECTORS_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "contracts" / "bucketing-vectors.json"
)
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_the_vectors_are_the_contract_version_the_sdk_implements():
    assert VECTORS["contract"] == "traffic-split v1"
    assert sdk.HASH_VERSION == server.HASH_VERSION == 1
    assert sdk.BUCKETS == server.BUCKETS


@pytest.mark.parametrize(
    "case", VECTORS["vectors"], ids=lambda c: f"{c['salt'][-12:]}:{c['subject'][:12]}"
)
def test_the_sdk_bucket_matches_the_vector(case):
    assert sdk.bucket(case["salt"], case["subject"]) == case["bucket"]


@pytest.mark.parametrize(
    "case", VECTORS["assignments"], ids=lambda c: f"{c['bucket']}:{c['splits']}"
)
def test_the_sdk_assign_matches_the_vector(case):
    splits = [(label, weight) for label, weight in case["splits"]]
    assert sdk.assign(splits, case["bucket"]) == case["label"]


@given(salt=st.text(max_size=80), subject=st.text(max_size=80))
def test_the_sdk_bucket_is_the_server_bucket(salt, subject):
    assert sdk.bucket(salt, subject) == server.bucket(salt, subject)


@given(
    splits=st.lists(
        st.tuples(st.text(min_size=1, max_size=8), st.integers(min_value=0, max_value=10_000)),
        max_size=6,
    ),
    drawn=st.integers(min_value=0, max_value=9_999),
)
def test_the_sdk_assign_is_the_server_assign(splits, drawn):
    assert sdk.assign(splits, drawn) == server.assign(splits, drawn)


def test_a_lone_surrogate_fails_the_same_way_on_both_sides():
    # Neither side can encode it; a subject must be text that UTF-8 can carry.
    for implementation in (sdk, server):
        with pytest.raises(UnicodeEncodeError):
            implementation.bucket("salt", "\ud800")


def test_reasons_are_the_server_reasons():
    # A pinned version is named by the caller of the OpenAI-compatible endpoints (decision 0042),
    # never drawn from a bundle: the SDK draws the others, as the server does.
    drawn = [str(r) for r in server.Reason if r is not server.Reason.PINNED]
    assert [str(r) for r in sdk.Reason] == drawn
