"""The SDK resolves locally exactly what the registry answers (issue 5, "the live cross-check").

10,000 subjects against staging with a canary, an experiment and a shadow running, in five
locales. The SDK's answers come from its bundle (fetched from the live server over HTTP); the
server's come from its own resolution over its release cache for all 10,000 (``releases.resolution``,
the code ``GET /resolve`` runs), and from ``GET /resolve`` over HTTP for a sample of 300, which
ties the in-process answers to what the endpoint really says. Every field that says what was
chosen and why is compared: version, variant, reason, locale, bucket, salt, shadows, revision.
"""

from __future__ import annotations

import random

import httpx
import pytest

from releases.cache import release_cache
from releases.resolution import resolve as server_resolve

# A live server needs a transactional test, whose flush SQLite refuses (release events are
# append-only, enforced by a trigger): these run on PostgreSQL only.
pytestmark = pytest.mark.postgres

KEY = "support.refund-reply"
SUBJECTS = 10_000
OVER_HTTP = 300
LOCALES = (None, "fr-CA", "en", "de-DE", "fr")


def sdk_answer(prompt) -> tuple:
    return (
        prompt.version,
        prompt.variant,
        str(prompt.reason),
        prompt.locale,
        prompt.requested_locale,
        prompt.bucket,
        prompt.salt,
        tuple(prompt.shadow),
        prompt.revision,
    )


def server_answer(resolution) -> tuple:
    assignment = resolution.assignment
    return (
        resolution.version.number,
        assignment.label,
        str(assignment.reason),
        resolution.locale,
        resolution.requested_locale,
        assignment.bucket,
        resolution.salt,
        tuple(resolution.shadow),
        resolution.release.revision,
    )


def http_answer(body: dict) -> tuple:
    return (
        body["version"],
        body["variant"],
        body["reason"],
        body["locale"],
        body["requested_locale"],
        body["trace"]["bucket"],
        body["trace"]["salt"],
        tuple(body["shadow"]),
        body["revision"],
    )


def test_the_sdk_and_the_server_pick_the_same_version_for_10000_subjects(
    split, make_sdk, live_server, sdk_key
):
    client = make_sdk(stream=False)
    assert client.status.source == "live"
    served = release_cache().lookup("staging", KEY).release
    assert served is not None
    cases = [(f"user-{i}", LOCALES[i % len(LOCALES)]) for i in range(SUBJECTS)]

    local = {case: sdk_answer(client.get(KEY, subject=case[0], locale=case[1])) for case in cases}
    server = {
        case: server_answer(server_resolve(served, subject=case[0], locale=case[1]))
        for case in cases
    }

    differ = [case for case in cases if local[case] != server[case]]
    assert differ == [], [(case, local[case], server[case]) for case in differ[:5]]
    # The comparison means something only if every kind of draw happened.
    assert {answer[1] for answer in local.values()} == {"stable", "canary", "warm", "brief"}
    assert {answer[3] for answer in local.values()} == {"en", "fr"}
    assert any(answer[7] for answer in local.values())  # some calls were sampled for the shadow

    sample = random.Random(5).sample(cases, OVER_HTTP)
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        for subject, locale in sample:
            query = {"environment": "staging", "subject": subject}
            if locale is not None:
                query["locale"] = locale
            response = http.get(
                f"/api/v1/prompts/{KEY}/resolve",
                params=query,
                headers={"Authorization": f"Bearer {sdk_key}"},
            )
            assert response.status_code == 200, response.text
            assert http_answer(response.json()) == local[(subject, locale)], (subject, locale)


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_a_call_without_a_subject_is_not_sticky_and_still_served(split, make_sdk, environment):
    client = make_sdk(environment=environment, stream=False)

    prompt = client.get(KEY)

    assert prompt.sticky is False
    assert prompt.version in {1, 2, 3}
    assert prompt.source == "live"
