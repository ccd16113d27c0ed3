"""The issue's cross-check, in process: for 10,000 subjects, the SDK resolving over the server's
bundle picks what the server's ``releases.resolution.resolve`` picks (version, variant, reason,
locale, bucket, salt, shadow, revision), across a canary, an experiment and a shadow.

Releases are built through the services, as a release manager would. The bundle is taken two
ways: ``api.runtime.bundle_body`` over the release cache (through JSON, as on the wire), and the
real ``GET /api/v1/environments/{environment}/bundle`` answer. (The end-to-end version against a
live server belongs to tests/sdk/test_client*.py.)"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from promptregistry.core import Bundle, bundle_from_json
from promptregistry.core import resolve as sdk_resolve
from promptregistry.core.bundle import Resolution

from api.runtime import bundle_body, bundle_etag, resolution_answer
from registry.actors import Actor
from releases import services
from releases.cache import release_cache
from releases.resolution import resolve as server_resolve

pytestmark = pytest.mark.django_db

KEY = "support.refund-reply"
SUBJECTS = 10_000
# Requested locales, cycled over the subjects: none, a region of a translated language, the
# language itself, a region of the default, and a language no version has.
LOCALES = [None, "fr-CA", "fr", "en-GB", "pt_BR", "de"]
MANAGER = Actor(label="release-manager")


@pytest.fixture
def split(released):
    """Staging serves v2 stable, a 20 % canary of v3, an experiment sending 30 % to v1 ("warm")
    and 25 % to v2 ("brief"), and shadows v1 and v3 on 40 % of calls. Production serves v1 with
    a 35 % canary of v2 (stable in staging before)."""

    def change(service, environment: str, **kwargs: Any) -> None:
        service(
            prompt=released.prompt,
            environment=released.environments[environment],
            actor=MANAGER,
            **kwargs,
        )

    change(services.release_canary_start, "staging", version=3, percent=Decimal(20))
    change(
        services.release_experiment_start,
        "staging",
        name="tone",
        variants=[("warm", 1, Decimal(30)), ("brief", 2, Decimal(25))],
    )
    change(services.release_shadow_start, "staging", versions=[1, 3], sample_percent=Decimal(40))
    change(services.release_canary_start, "production", version=2, percent=Decimal(35))
    return released


def comparable_server(answer: dict[str, Any]) -> dict[str, Any]:
    """The server's resolve answer, as the fields the SDK's resolution carries."""
    return {
        "prompt": answer["prompt"],
        "environment": answer["environment"],
        "version": answer["version"],
        "variant": answer["variant"],
        "reason": answer["reason"],
        "sticky": answer["sticky"],
        "locale": answer["locale"],
        "requested_locale": answer["requested_locale"],
        "bucket": answer["trace"]["bucket"],
        "salt": answer["trace"]["salt"],
        "shadow": answer["shadow"],
        "revision": answer["revision"],
        "sections": dict(answer["sections"]),
        "variables": list(answer["variables"]),
        "model": answer["model"],
        "content_hash": answer["content_hash"],
    }


def comparable_sdk(resolution: Resolution) -> dict[str, Any]:
    version = resolution.version
    return {
        "prompt": resolution.prompt,
        "environment": resolution.environment,
        "version": resolution.number,
        "variant": resolution.variant,
        "reason": str(resolution.reason),
        "sticky": resolution.sticky,
        "locale": resolution.locale,
        "requested_locale": resolution.requested_locale,
        "bucket": resolution.bucket,
        "salt": resolution.salt,
        "shadow": list(resolution.shadow),
        "revision": resolution.revision,
        "sections": dict(version.templates[resolution.locale]),
        "variables": list(version.variables),
        "model": version.model,
        "content_hash": version.content_hash,
    }


def cross_check(environment: str, bundle: Bundle) -> Counter[tuple[str, bool]]:
    """Resolve every subject on both sides; every answer must match. Returns what was served
    (variant, shadowed) and how often, to show the check covered every path."""
    served = release_cache().lookup(environment, KEY).release
    assert served is not None
    release = bundle.releases[KEY]
    seen: Counter[tuple[str, bool]] = Counter()
    for i in range(SUBJECTS):
        subject, locale = f"user-{i}", LOCALES[i % len(LOCALES)]
        expected = comparable_server(
            json.loads(
                json.dumps(
                    resolution_answer(server_resolve(served, subject=subject, locale=locale))
                )
            )
        )
        answer = comparable_sdk(sdk_resolve(release, subject=subject, locale=locale))
        assert answer == expected, f"{subject} ({locale}) differs"
        seen[(answer["variant"], bool(answer["shadow"]))] += 1
    return seen


def bundle_through_json(environment: str) -> Bundle:
    releases, degraded = release_cache().environment(environment)
    assert releases is not None
    assert degraded == ""
    wire = json.loads(json.dumps(bundle_body(environment, releases)))
    return bundle_from_json(wire, etag=bundle_etag(environment, releases))


def test_the_sdk_resolves_every_subject_as_the_server_over_the_bundle_body(split):
    seen = cross_check("staging", bundle_through_json("staging"))

    variants = {variant for variant, _ in seen}
    assert variants == {"canary", "warm", "brief", "stable"}
    assert any(shadowed for _, shadowed in seen)
    assert any(not shadowed for _, shadowed in seen)
    # The split is roughly what the release manager asked for (10,000 draws: ±2 points).
    assert 1800 < sum(n for (v, _), n in seen.items() if v == "canary") < 2200


def test_the_sdk_resolves_every_subject_as_the_server_over_the_bundle_endpoint(split, make_client):
    service = make_client("prompts:read", name="checkout-service")
    response = service.get("/api/v1/environments/production/bundle")
    assert response.status_code == 200

    bundle = bundle_from_json(response.json(), etag=response["ETag"])

    assert bundle.etag == response["ETag"]
    seen = cross_check("production", bundle)
    assert {variant for variant, _ in seen} == {"canary", "stable"}


def test_every_locale_lands_where_the_server_puts_it(split):
    bundle = bundle_through_json("staging")
    served = release_cache().lookup("staging", KEY).release
    # v2 (stable, and the "brief" variant) has French; v1 and v3 have English only.
    for subject in ("user-1", "user-2", "user-3", "user-4", "user-5"):
        for locale in ("fr-CA", "FR", "zh-Hant-TW", "en_US"):
            server_answer = server_resolve(served, subject=subject, locale=locale)
            sdk_answer = sdk_resolve(bundle.releases[KEY], subject=subject, locale=locale)
            assert (sdk_answer.locale, sdk_answer.requested_locale) == (
                server_answer.locale,
                server_answer.requested_locale,
            )


def test_without_a_subject_both_sides_answer_not_sticky(split):
    bundle = bundle_through_json("staging")
    served = release_cache().lookup("staging", KEY).release

    server_answer = server_resolve(served, subject=None, locale=None)
    sdk_answer = sdk_resolve(bundle.releases[KEY], subject=None, locale=None)

    assert server_answer.assignment.sticky is sdk_answer.sticky is False
    assert sdk_answer.bucket is not None  # the canary drew, for a subject made up for this call


def test_a_rolled_back_release_is_resolved_from_the_new_bundle(split, make_client):
    service = make_client("prompts:read", name="checkout-service")
    services.release_canary_abort(
        prompt=split.prompt, environment=split.environments["production"], actor=MANAGER
    )
    release_cache().clear()

    response = service.get("/api/v1/environments/production/bundle")
    bundle = bundle_from_json(response.json(), etag=response["ETag"])

    answers = {
        sdk_resolve(bundle.releases[KEY], subject=f"user-{i}", locale=None).number
        for i in range(200)
    }
    assert answers == {1}
