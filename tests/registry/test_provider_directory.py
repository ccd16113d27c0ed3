"""A binding names a configured provider (decision 0008), on every authoring path.

``registry.providers`` asks a directory which providers are configured; ``runs`` registers its
``Provider`` names there. The suite's autouse ``_suite_providers`` adds ``local`` for everybody;
these tests put the real directory back alone (``real_directory``), so only rows count.

Configured here: ``local`` (enabled) and ``retired`` (disabled, still configured).
"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.apps import apps
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from django.urls import reverse

from registry.content import VersionContent, content_check, model_binding_providers_check
from registry.errors import ContentInvalid, Problem
from registry.models import Prompt, PromptVersion
from registry.providers import (
    configured_providers,
    provider_directory,
    provider_directory_register,
)
from registry.selectors import version_check, version_content
from registry.services import version_branch, version_commit, version_draft_update
from runs.models import Provider
from runs.selectors import provider_names
from runs.services import provider_save
from tests.api.helpers import assert_problem, errors_by_code, registry_state
from tests.factories import AUTHOR, PromptFactory, UserFactory, content_data, make_version

pytestmark = pytest.mark.django_db

CONFIGURED = "the configured providers are local, retired."
VERSIONS = "/api/v1/prompts/support.refund-reply/versions"


@pytest.fixture
def real_directory() -> Iterator[None]:
    """Only the ``Provider`` rows count, as in production (the suite's extra names are gone)."""
    before = provider_directory()
    provider_directory_register(provider_names)
    yield
    provider_directory_register(before)


@pytest.fixture
def no_directory() -> Iterator[None]:
    """The registry on its own: nobody said which providers exist."""
    before = provider_directory()
    provider_directory_register(None)
    yield
    provider_directory_register(before)


@pytest.fixture
def providers(real_directory) -> None:
    provider_save(name="local", base_url="http://127.0.0.1:8765/v1")
    provider_save(name="retired", base_url="http://127.0.0.1:8766/v1", enabled=False)


def model(provider: str = "local", *fallbacks: str) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": "echo-1",
        "fallbacks": [{"provider": name, "model": "echo-small"} for name in fallbacks],
    }


def content(provider: str = "local", *fallbacks: str) -> VersionContent:
    return VersionContent.from_dict(content_data(model=model(provider, *fallbacks)))


def refused(excinfo: pytest.ExceptionInfo[ContentInvalid]) -> list[Problem]:
    return [p for p in excinfo.value.problems if p.code == "unknown_provider"]


# --- the protocol ------------------------------------------------------------------------------


def test_without_a_directory_nothing_is_known_and_any_well_formed_name_passes(no_directory):
    assert configured_providers() is None
    assert content_check(content("anywhere", "elsewhere"), default_locale="en") == []


def test_the_registry_alone_commits_any_well_formed_name_but_not_a_malformed_one(
    no_directory, prompt
):
    version = make_version(prompt, model=model("anywhere", "elsewhere"))

    assert (version.status, version.provider) == ("committed", "anywhere")
    with pytest.raises(ContentInvalid) as excinfo:
        make_version(prompt, model=model("Not A Name"))
    assert [p.code for p in excinfo.value.problems] == ["invalid_provider"]


def test_a_registered_directory_answers_until_it_is_removed(no_directory):
    provider_directory_register(lambda: ["b", "a", "a"])
    assert configured_providers() == frozenset({"a", "b"})

    provider_directory_register(None)
    assert configured_providers() is None


def test_runs_registers_every_provider_name_disabled_ones_included(providers):
    provider_directory_register(None)

    apps.get_app_config("runs").ready()

    assert provider_directory() is provider_names
    assert configured_providers() == frozenset({"local", "retired"})


def test_the_check_names_each_unknown_provider_and_lists_the_configured_ones():
    binding = content("nowhere", "local", "Bad Name", "gone").model

    problems = model_binding_providers_check(binding, configured=frozenset({"retired", "local"}))

    assert [(p.code, p.pointer) for p in problems] == [
        ("unknown_provider", "/model/provider"),
        ("unknown_provider", "/model/fallbacks/2/provider"),  # "Bad Name" is invalid_provider's
    ]
    assert problems[0].detail == f"No provider named 'nowhere' is configured; {CONFIGURED}"
    assert "'gone'" in problems[1].detail


def test_with_no_provider_configured_the_check_says_how_to_add_one():
    [problem] = model_binding_providers_check(content().model, configured=frozenset())

    assert "nor any other yet" in problem.detail
    assert "manage.py provider add" in problem.detail


# --- the services ------------------------------------------------------------------------------


def test_a_draft_naming_an_unknown_provider_is_refused_and_nothing_is_written(providers, prompt):
    with pytest.raises(ContentInvalid) as excinfo:
        make_version(prompt, commit=False, model=model("nowhere"))

    [problem] = refused(excinfo)
    assert problem.pointer == "/model/provider"
    assert problem.detail.endswith(CONFIGURED)
    assert not PromptVersion.objects.exists()


def test_an_unknown_fallback_provider_is_refused_with_its_position(providers, prompt):
    with pytest.raises(ContentInvalid) as excinfo:
        make_version(prompt, model=model("local", "local", "nowhere"))

    assert [p.pointer for p in refused(excinfo)] == ["/model/fallbacks/1/provider"]
    assert not PromptVersion.objects.exists()


def test_saving_a_draft_with_an_unknown_provider_is_refused(providers, prompt):
    draft = make_version(prompt, commit=False)
    before = draft.content_hash

    with pytest.raises(ContentInvalid) as excinfo:
        version_draft_update(version=draft, actor=AUTHOR, content=content("nowhere"))

    assert [p.pointer for p in refused(excinfo)] == ["/model/provider"]
    draft.refresh_from_db()
    assert draft.content_hash == before


def test_a_provider_removed_while_the_draft_waits_stops_its_commit(providers, prompt):
    draft = make_version(prompt, commit=False, model=model("local", "retired"))
    Provider.objects.filter(name="retired").delete()

    with pytest.raises(ContentInvalid) as excinfo:
        version_commit(version=draft, actor=AUTHOR, message="Ship it.")

    assert [p.pointer for p in refused(excinfo)] == ["/model/fallbacks/0/provider"]
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_a_disabled_provider_is_still_configured(providers, prompt):
    version = make_version(prompt, model=model("retired", "retired"))

    assert (version.status, version.provider) == ("committed", "retired")


def test_a_provider_added_a_moment_ago_counts_at_once(providers, prompt):
    with pytest.raises(ContentInvalid):
        make_version(prompt, model=model("openai"))

    provider_save(name="openai", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY")

    assert make_version(prompt, model=model("openai")).provider == "openai"


def test_a_new_draft_copies_a_version_whose_provider_is_gone_but_cannot_commit_it(
    providers, prompt
):
    source = make_version(prompt, model=model("retired"))
    Provider.objects.filter(name="retired").delete()

    draft = version_branch(source=source, actor=AUTHOR)

    assert (draft.status, draft.provider, draft.content_hash) == (
        "draft",
        "retired",
        source.content_hash,
    )
    assert [p.pointer for p in version_check(draft) if p.code == "unknown_provider"] == [
        "/model/provider"
    ]
    with pytest.raises(ContentInvalid):
        version_commit(version=draft, actor=AUTHOR, message="Again.")


# --- the API -------------------------------------------------------------------------------------


def test_the_api_answers_a_problem_pointing_at_the_unknown_provider(
    providers, prompt, author_client
):
    before = registry_state()
    body = {"message": "Try a new model.", **content_data(model=model("nowhere", "local"))}

    response = author_client.post(VERSIONS, body, format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    [error] = errors_by_code(problem)["unknown_provider"]
    assert error["pointer"] == "/model/provider"
    assert error["detail"].endswith(CONFIGURED)
    assert registry_state() == before


def test_the_api_refuses_an_unknown_fallback_on_patch(providers, prompt, author_client):
    make_version(prompt, commit=False)
    body = {**content_data(model=model("local", "nowhere"))}

    response = author_client.patch(f"{VERSIONS}/1", body, format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    pointers = [e["pointer"] for e in errors_by_code(problem)["unknown_provider"]]
    assert pointers == ["/model/fallbacks/0/provider"]


def test_the_api_refuses_to_commit_a_draft_whose_provider_is_gone(providers, prompt, author_client):
    draft = make_version(prompt, commit=False, model=model("retired"))
    Provider.objects.filter(name="retired").delete()

    response = author_client.post(f"{VERSIONS}/1/commit", {"message": "Ship."}, format="json")

    problem = assert_problem(response, 400, "/problems/invalid-content")
    assert [e["pointer"] for e in errors_by_code(problem)["unknown_provider"]] == [
        "/model/provider"
    ]
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_the_api_accepts_a_disabled_provider(providers, prompt, author_client):
    body = {"message": "Archive model.", "commit": True, **content_data(model=model("retired"))}

    response = author_client.post(VERSIONS, body, format="json")

    assert response.status_code == 201, response.json()
    assert PromptVersion.objects.get().provider == "retired"


# --- the admin editor ----------------------------------------------------------------------------


@pytest.fixture
def alice(client: Client) -> Client:
    """A prompt author in the admin (as tests/registry/test_admin.py's ``author_client``)."""
    user = UserFactory(username="alice", is_staff=True)
    user.groups.add(Group.objects.get(name="Prompt authors"))
    client.force_login(user)
    return client


def editor_form(prompt: Prompt, **fields: str) -> dict[str, str]:
    data = {
        "prompt": str(prompt.pk),
        "message": "First draft.",
        "provider": "local",
        "model_name": "echo-1",
        "parameters": "{}",
        "response_schema": "",
        "fallbacks": "[]",
        "variables-TOTAL_FORMS": "1",
        "variables-INITIAL_FORMS": "0",
        "variables-MIN_NUM_FORMS": "0",
        "variables-MAX_NUM_FORMS": "1000",
        "variables-0-name": "customer_name",
        "variables-0-type": "string",
        "variables-0-required": "on",
        "templates-TOTAL_FORMS": "1",
        "templates-INITIAL_FORMS": "0",
        "templates-MIN_NUM_FORMS": "0",
        "templates-MAX_NUM_FORMS": "1000",
        "templates-0-locale": "en",
        "templates-0-instruction": "Greet {{ customer_name }}.",
    }
    return data | fields


def test_the_editor_puts_an_unknown_provider_on_its_field_and_saves_nothing(
    providers, prompt, alice
):
    add = reverse("admin:registry_promptversion_add")
    fallbacks = '[{"provider": "local", "model": "echo-small"}, {"provider": "gone", "model": "x"}]'

    response = alice.post(add, editor_form(prompt, provider="nowhere", fallbacks=fallbacks))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["provider"] == [f"No provider named 'nowhere' is configured; {CONFIGURED}"]
    assert errors["fallbacks"] == [
        f"Fallback 2: No provider named 'gone' is configured; {CONFIGURED}"
    ]
    assert not PromptVersion.objects.exists()


def test_the_editor_saves_a_draft_naming_a_disabled_provider(providers, prompt, alice):
    add = reverse("admin:registry_promptversion_add")

    response = alice.post(add, editor_form(prompt, provider="retired"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert PromptVersion.objects.get().provider == "retired"


# --- the YAML import -----------------------------------------------------------------------------


def write_prompt(directory: Path, key: str, provider: str) -> Path:
    path = directory / f"{key}.yaml"
    data = {"key": key, "message": "From git.", **content_data(model=model(provider))}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def import_prompts(directory: Path, *extra: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("prompts", "import", str(directory), *extra, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_dry_run_reports_an_unknown_provider_with_its_file_and_line(providers, tmp_path):
    path = write_prompt(tmp_path, "support.unknown", "nowhere")
    write_prompt(tmp_path, "support.fine", "local")
    err = StringIO()

    with pytest.raises(CommandError, match="1 file"):
        call_command("prompts", "import", str(tmp_path), "--dry-run", stdout=StringIO(), stderr=err)

    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "nowhere" in text)
    assert err.getvalue().splitlines() == [
        f"{path}:{line}: No provider named 'nowhere' is configured; {CONFIGURED} (/model/provider)"
    ]
    assert not Prompt.objects.exists()


def test_an_import_refuses_an_unknown_provider_and_writes_nothing(providers, tmp_path):
    write_prompt(tmp_path, "support.unknown", "nowhere")
    write_prompt(tmp_path, "support.fine", "retired")

    with pytest.raises(CommandError):
        import_prompts(tmp_path)

    assert not Prompt.objects.exists()


def test_an_unchanged_file_whose_provider_is_gone_is_not_refused(providers, tmp_path):
    make_version(PromptFactory(key="support.old"), model=model("retired"))
    call_command("prompts", "export", str(tmp_path), stdout=StringIO())
    Provider.objects.filter(name="retired").delete()
    write_prompt(tmp_path, "support.new", "local")

    out, err = import_prompts(tmp_path)

    assert "unchanged support.old (version 1)" in out
    assert "create support.new (version 1)" in out
    assert err == ""
    assert Prompt.objects.get(key="support.new").versions.get().status == "committed"


def test_a_changed_file_whose_provider_is_gone_is_refused(providers, tmp_path):
    make_version(PromptFactory(key="support.old"), model=model("retired"))
    call_command("prompts", "export", str(tmp_path), stdout=StringIO())
    Provider.objects.filter(name="retired").delete()
    path = tmp_path / "support.old.yaml"
    data = yaml.safe_load(path.read_text())
    data["templates"]["en"]["system"] = "Changed."
    path.write_text(yaml.safe_dump(data), encoding="utf-8")

    with pytest.raises(CommandError):
        import_prompts(tmp_path, "--dry-run")


# --- the demo ------------------------------------------------------------------------------------


def test_the_demo_adds_the_local_provider_its_prompts_name_when_missing(real_directory, tmp_path):
    out = StringIO()

    with override_settings(VAR_DIR=tmp_path):
        call_command("demo", stdout=out)

    assert Provider.objects.get(name="local").base_url == "http://127.0.0.1:8765/v1"
    assert "Provider local: added" in out.getvalue()
    versions = PromptVersion.objects.all()
    assert versions.exists()
    assert all(version_content(v).model.provider == "local" for v in versions)


def test_the_demo_keeps_a_local_provider_configured_elsewhere(real_directory, tmp_path):
    provider_save(name="local", base_url="http://127.0.0.1:9999/v1")
    out = StringIO()

    with override_settings(VAR_DIR=tmp_path):
        call_command("demo", stdout=out)

    assert Provider.objects.get(name="local").base_url == "http://127.0.0.1:9999/v1"
    assert "Provider local" not in out.getvalue()
    assert PromptVersion.objects.exists()
