"""The shared traffic-split vectors: the server's implementation (and, with the SDK issue, the
SDK's) must reproduce every one of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from releases.bucketing import assign, bucket

VECTORS_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "contracts" / "bucketing-vectors.json"
)
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_the_vectors_are_the_contract_version_we_implement():
    assert VECTORS["contract"] == "traffic-split v1"


@pytest.mark.parametrize(
    "case", VECTORS["vectors"], ids=lambda c: f"{c['salt'][-12:]}:{c['subject'][:12]}"
)
def test_bucket_matches_the_vector(case):
    assert bucket(case["salt"], case["subject"]) == case["bucket"]


@pytest.mark.parametrize(
    "case", VECTORS["assignments"], ids=lambda c: f"{c['bucket']}:{c['splits']}"
)
def test_assign_matches_the_vector(case):
    splits = [(label, weight) for label, weight in case["splits"]]
    assert assign(splits, case["bucket"]) == case["label"]
