"""Reading an environment's bundle (promptregistry.core.bundle): a good body becomes immutable
values, anything malformed or computed with another hash version is refused whole with
BundleInvalid, and resolve answers from it. Pure: bodies are built here, no database (the
server's own bundles are checked in test_core_resolve_parity.py)."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from promptregistry.core import (
    Bundle,
    Reason,
    bucket,
    bundle_from_json,
    resolve,
    version_render,
)
from promptregistry.errors import BundleInvalid, LocaleInvalid, LocaleUnavailable, NotReleased

KEY = "support.refund-reply"
CANARY_SALT = "support.refund-reply/production/canary/3/aa"
EXPERIMENT_SALT = "support.refund-reply/production/experiment/tone/bb"
SHADOW_SALT = "support.refund-reply/production/shadow/3/cc"


def version(number: int, *locales: str) -> dict[str, Any]:
    return {
        "number": number,
        "content_hash": f"{number:064x}",
        "variables": [{"name": "customer_name", "type": "string", "required": True}],
        "model": {"provider": "local", "model": "echo-1", "parameters": {"temperature": 0.2}},
        "templates": {
            locale: {
                "system": f"v{number} {locale}",
                "context": "",
                "instruction": "Greet {{ customer_name }}.",
                "format": "",
            }
            for locale in locales or ("en",)
        },
    }


def body(**state: Any) -> dict[str, Any]:
    """The server's bundle body for production: ``support.refund-reply`` serving ``state``
    (stable v1 by default) with v1–v4 carried, v2 in English and French."""
    return {
        "environment": "production",
        "hash_version": 1,
        "releases": {
            KEY: {
                "prompt": KEY,
                "default_locale": "en",
                "revision": 7,
                "state": {
                    "schema_version": 1,
                    "stable": 1,
                    "canary": None,
                    "experiment": None,
                    "shadow": None,
                    **state,
                },
                "versions": {
                    "1": version(1),
                    "2": version(2, "en", "fr"),
                    "3": version(3),
                    "4": version(4),
                },
            }
        },
    }


def everything() -> dict[str, Any]:
    return body(
        canary={"version": 3, "weight": 2000, "salt": CANARY_SALT},
        experiment={
            "name": "tone",
            "salt": EXPERIMENT_SALT,
            "variants": [
                {"name": "warm", "version": 2, "weight": 3000},
                {"name": "brief", "version": 4, "weight": 2000},
            ],
        },
        shadow={"versions": [2, 4], "sample": 2500, "salt": SHADOW_SALT, "budget_per_hour": None},
    )


def test_a_good_body_becomes_a_bundle_with_its_etag():
    bundle = bundle_from_json(everything(), etag='"abc"')

    assert (bundle.environment, bundle.hash_version, bundle.etag) == ("production", 1, '"abc"')
    release = bundle.releases[KEY]
    assert (release.prompt, release.environment, release.revision) == (KEY, "production", 7)
    assert release.state.canary.weight == 2000
    assert [v.name for v in release.state.experiment.variants] == ["warm", "brief"]
    assert release.state.shadow.versions == (2, 4)
    assert sorted(release.versions) == [1, 2, 3, 4]
    assert release.versions[2].templates["fr"]["system"] == "v2 fr"
    assert release.versions[2].specs[0].name == "customer_name"


def test_a_bundle_cannot_be_changed_once_read():
    bundle = bundle_from_json(everything(), etag='"abc"')

    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.etag = '"other"'  # type: ignore[misc]
    with pytest.raises(TypeError):
        bundle.releases["other"] = bundle.releases[KEY]  # type: ignore[index]
    with pytest.raises(TypeError):
        bundle.releases[KEY].versions[2].templates["fr"]["system"] = "changed"  # type: ignore[index]


def test_unknown_keys_are_ignored_so_the_server_can_add_fields():
    data = everything()
    data["generated_at"] = "2026-01-01T00:00:00Z"
    data["releases"][KEY]["owner"] = "support"
    data["releases"][KEY]["versions"]["2"]["labels"] = ["new"]

    assert isinstance(bundle_from_json(data, etag=""), Bundle)


def test_an_empty_environment_is_a_bundle_without_releases():
    bundle = bundle_from_json(
        {"environment": "development", "hash_version": 1, "releases": {}}, etag=""
    )

    assert bundle.releases == {}


@pytest.mark.parametrize("hash_version", [2, 0, "1", 1.0, True, None])
def test_a_bundle_of_another_hash_version_is_refused(hash_version):
    data = everything()
    data["hash_version"] = hash_version

    with pytest.raises(BundleInvalid, match="hash version") as caught:
        bundle_from_json(data, etag="")

    assert "implements hash version 1" in caught.value.message


def test_a_bundle_without_a_hash_version_is_refused():
    data = everything()
    del data["hash_version"]

    with pytest.raises(BundleInvalid, match="hash version None"):
        bundle_from_json(data, etag="")


def _parent(data: dict[str, Any], path: str) -> tuple[Any, Any]:
    """The container holding ``path`` (slash-separated, list indexes as numbers) and its key."""
    *parents, last = path.split("/")
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target, int(last) if isinstance(target, list) else last


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        target, key = _parent(data, path)
        target[key] = value

    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        target, key = _parent(data, path)
        del target[key]

    return apply


R = f"releases/{KEY}"
MALFORMED = {
    "environment missing": (_delete("environment"), "/environment"),
    "environment empty": (_set("environment", ""), "/environment"),
    "releases a list": (_set("releases", []), "/releases"),
    "release a string": (_set(R, "v1"), f"/releases/{KEY}"),
    "prompt under another key": (_set(f"{R}/prompt", "other"), f"/releases/{KEY}/prompt"),
    "default locale invalid": (_set(f"{R}/default_locale", "en-"), "default_locale"),
    "revision a string": (_set(f"{R}/revision", "7"), "revision"),
    "revision a boolean": (_set(f"{R}/revision", True), "revision"),
    "revision negative": (_set(f"{R}/revision", -1), "revision"),
    "state missing": (_delete(f"{R}/state"), "state"),
    "unknown state schema": (_set(f"{R}/state/schema_version", 2), "schema_version"),
    "stable a string": (_set(f"{R}/state/stable", "1"), "state/stable"),
    "stable zero": (_set(f"{R}/state/stable", 0), "state/stable"),
    "canary weight over 100 %": (_set(f"{R}/state/canary/weight", 10_001), "canary/weight"),
    "canary weight negative": (_set(f"{R}/state/canary/weight", -1), "canary/weight"),
    "canary without salt": (_delete(f"{R}/state/canary/salt"), "canary/salt"),
    "canary a list": (_set(f"{R}/state/canary", [3, 2000]), "canary"),
    "experiment without variants": (_set(f"{R}/state/experiment/variants", []), "variants"),
    "variant weight a float": (
        _set(f"{R}/state/experiment/variants/0/weight", 30.0),
        "variants/0/weight",
    ),
    "variant without a name": (_delete(f"{R}/state/experiment/variants/1/name"), "1/name"),
    "variants over 100 %": (
        _set(f"{R}/state/experiment/variants/0/weight", 9000),
        "experiment/variants",
    ),
    "shadow versions a number": (_set(f"{R}/state/shadow/versions", 2), "shadow/versions"),
    "shadow sample missing": (_delete(f"{R}/state/shadow/sample"), "shadow/sample"),
    "versions a list": (_set(f"{R}/versions", []), f"{R}/versions"),
    "version under another number": (_set(f"{R}/versions/2/number", 5), "versions/2/number"),
    "a served version missing": (_delete(f"{R}/versions/3"), "does not carry"),
    "a shadow version missing": (_delete(f"{R}/versions/4"), "does not carry"),
    "variables an object": (_set(f"{R}/versions/1/variables", {}), "versions/1/variables"),
    "variable without a name": (
        _set(f"{R}/versions/1/variables", [{"type": "string"}]),
        "variables/0/name",
    ),
    "model missing": (_delete(f"{R}/versions/1/model"), "versions/1/model"),
    "templates empty": (_set(f"{R}/versions/1/templates", {}), "versions/1/templates"),
    "locale not a tag": (
        _set(f"{R}/versions/1/templates", {"en_": {"system": "x"}}),
        "templates/en_",
    ),
    "section not text": (_set(f"{R}/versions/2/templates/fr/system", 3), "templates/fr/system"),
    "unknown section": (
        _set(f"{R}/versions/2/templates/fr/instructions", "x"),
        "templates/fr/instructions",
    ),
    "snippets a list": (_set("snippets", []), "/snippets"),
    "snippet version under another number": (
        _set("snippets", {"brand.voice": {"2": {"number": 3, "templates": {"en": {}}}}}),
        "/snippets/brand.voice/2/number",
    ),
    "snippet without templates": (
        _set("snippets", {"brand.voice": {"2": {"number": 2}}}),
        "/snippets/brand.voice/2/templates",
    ),
}


@pytest.mark.parametrize(("change", "where"), MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_bundle_is_refused_and_names_where(change, where):
    data = everything()
    change(data)

    with pytest.raises(BundleInvalid) as caught:
        bundle_from_json(data, etag="")

    assert where in caught.value.message


@pytest.mark.parametrize("data", [None, [], "bundle", 1])
def test_a_body_that_is_not_an_object_is_refused(data):
    with pytest.raises(BundleInvalid, match="expected an object"):
        bundle_from_json(data, etag="")  # type: ignore[arg-type]


def test_reading_never_changes_the_body():
    data = everything()
    before = copy.deepcopy(data)

    bundle_from_json(data, etag="")

    assert data == before


# --- resolving ---------------------------------------------------------------------------------


def release_of(data: dict[str, Any]):
    return bundle_from_json(data, etag="").releases[KEY]


def test_a_plain_stable_release_draws_nothing():
    answer = resolve(release_of(body()), subject="user-1", locale=None)

    assert (answer.number, answer.variant, answer.reason) == (1, "stable", Reason.STABLE)
    assert (answer.bucket, answer.salt, answer.shadow) == (None, "", ())
    assert (answer.sticky, answer.subject, answer.revision) == (True, "user-1", 7)
    assert (answer.locale, answer.requested_locale) == ("en", "en")
    assert answer.version.templates[answer.locale]["system"] == "v1 en"


def test_the_canary_draws_first_then_the_experiment_then_stable():
    release = release_of(everything())
    seen: Counter[str] = Counter()

    for i in range(2000):
        subject = f"user-{i}"
        answer = resolve(release, subject=subject, locale=None)
        seen[answer.variant] += 1
        canary_bucket = bucket(CANARY_SALT, subject)
        if canary_bucket < 2000:
            assert (answer.number, answer.reason, answer.salt) == (3, "canary", CANARY_SALT)
            assert answer.bucket == canary_bucket
            continue
        experiment_bucket = bucket(EXPERIMENT_SALT, subject)
        assert (answer.bucket, answer.salt) == (experiment_bucket, EXPERIMENT_SALT)
        if experiment_bucket < 3000:
            assert (answer.number, answer.variant, answer.reason) == (2, "warm", "experiment")
        elif experiment_bucket < 5000:
            assert (answer.number, answer.variant) == (4, "brief")
        else:
            assert (answer.number, answer.variant, answer.reason) == (1, "stable", "stable")

    assert set(seen) == {"canary", "warm", "brief", "stable"}


def test_shadow_sampling_draws_with_its_own_salt_and_never_lists_the_version_served():
    release = release_of(everything())

    for i in range(500):
        subject = f"user-{i}"
        answer = resolve(release, subject=subject, locale=None)
        if bucket(SHADOW_SALT, subject) < 2500:
            assert answer.shadow == tuple(n for n in (2, 4) if n != answer.number)
        else:
            assert answer.shadow == ()


def test_without_a_subject_one_is_drawn_and_the_answer_is_not_sticky():
    release = release_of(everything())

    answers = [resolve(release, subject=None, locale=None) for _ in range(200)]
    empty = resolve(release, subject="", locale=None)

    assert all(not a.sticky and a.subject is None for a in [*answers, empty])
    assert len({a.bucket for a in answers}) > 1  # drawn afresh each time


@pytest.mark.parametrize(
    ("requested", "used", "normalized"),
    [(None, "en", "en"), ("fr", "fr", "fr"), ("fr_ca", "fr", "fr-CA"), ("de-AT", "en", "de-AT")],
)
def test_the_locale_falls_back_among_the_version_templates(requested, used, normalized):
    answer = resolve(release_of(body(stable=2)), subject="user-1", locale=requested)

    assert (answer.locale, answer.requested_locale) == (used, normalized)


def test_a_malformed_locale_is_refused():
    with pytest.raises(LocaleInvalid):
        resolve(release_of(body()), subject="user-1", locale="not a locale!")


def test_a_version_without_the_default_locale_cannot_be_served_in_it():
    data = body()
    data["releases"][KEY]["versions"]["1"]["templates"] = {"fr": {"system": "Bonjour"}}

    with pytest.raises(LocaleUnavailable, match="'de'"):
        resolve(release_of(data), subject="user-1", locale="de")


def test_a_release_with_nothing_stable_is_not_released():
    with pytest.raises(NotReleased, match=KEY):
        resolve(release_of(body(stable=None)), subject="user-1", locale=None)


def test_a_bundle_renders_includes_from_its_snippets_and_releases():
    data = body()
    data["releases"][KEY]["versions"]["1"]["templates"]["en"]["system"] = (
        "{{ snippet('brand.voice') }} {{ snippet('brand.voice', version=1) }}"
    )
    voice = version(2)
    voice["variables"] = []
    voice["templates"]["en"] = {"system": "Be brief."}
    data["releases"]["brand.voice"] = {
        "prompt": "brand.voice",
        "default_locale": "en",
        "revision": 3,
        "state": {"schema_version": 1, "stable": 2},
        "versions": {"2": voice},
    }
    data["snippets"] = {
        "brand.voice": {"1": {"number": 1, "templates": {"en": {"system": "Be warm."}}}}
    }
    bundle = bundle_from_json(data, etag="")
    resolution = resolve(bundle.releases[KEY], subject="s", locale="en")

    rendered = version_render(
        resolution.version,
        locale="en",
        variables={"customer_name": "Ada"},
        snippets=resolution.snippets,
    )

    assert rendered["system"] == "Be brief. Be warm."
