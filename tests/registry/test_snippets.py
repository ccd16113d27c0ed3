"""Snippets on the registry's side: the commit's refusals (each a clear problem, nothing saved),
the ``SnippetUse`` rows a snippet's page lists, marking and unmarking, and the authoring render
of includes (following: the latest committed version; pinned: that version)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from registry.content import VersionContent
from registry.errors import ContentInvalid, PromptInvalid, RenderFailed
from registry.models import Prompt, PromptVersion, SnippetUse
from registry.promptfiles import prompts_export
from registry.selectors import version_render
from registry.services import (
    prompt_create,
    prompt_update,
    version_commit,
    version_create,
    version_draft_update,
)
from registry.snippets import snippet_users
from registry.sync import SyncInvalid, prompts_import_apply, prompts_import_plan
from tests.factories import AUTHOR, content_data, make_version

pytestmark = pytest.mark.django_db


def snippet(key: str, *texts: dict[str, dict[str, str]], locale: str = "en") -> Prompt:
    """A snippet prompt with one committed version per ``texts`` (locale -> sections)."""
    prompt = prompt_create(key=key, actor=AUTHOR, is_snippet=True, default_locale=locale)
    for templates in texts:
        make_version(prompt, variables=[], templates=templates)
    return prompt


def includer(key: str = "support.reply", **templates: dict[str, str]) -> tuple[Prompt, Any]:
    prompt = prompt_create(key=key, actor=AUTHOR)
    content = VersionContent.from_dict(content_data(templates=templates))
    return prompt, content


def codes(exc: pytest.ExceptionInfo) -> list[str]:
    return [p.code for p in exc.value.problems]


def test_an_include_that_follows_renders_the_latest_committed_version_outside_environments():
    snippet("brand.voice", {"en": {"system": "Be warm."}}, {"en": {"system": "Be warm and brief."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "Hi {{ customer_name }}."}
    )
    version = version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    result = version_render(version=version, locale="en", variables={"customer_name": "Ana"})
    assert result.rendered.system == "Be warm and brief."


def test_a_pinned_include_renders_that_version():
    snippet("brand.voice", {"en": {"system": "Be warm."}}, {"en": {"system": "Be brief."}})
    prompt, content = includer(
        en={
            "system": "{{ snippet('brand.voice', version=1) }}",
            "instruction": "{{ customer_name }}",
        }
    )
    version = version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    result = version_render(version=version, locale="en", variables={"customer_name": "Ana"})
    assert result.rendered.system == "Be warm."
    assert [(u.snippet.key, u.pinned) for u in SnippetUse.objects.filter(version=version)] == [
        ("brand.voice", 1)
    ]


@pytest.mark.parametrize(
    ("include", "code"),
    [
        ("{{ snippet('no.such') }}", "unknown_snippet"),
        ("{{ snippet('plain.prompt') }}", "not_a_snippet"),
        ("{{ snippet('brand.voice', version=9) }}", "unknown_snippet_version"),
        ("{{ snippet('support.reply') }}", "snippet_cycle"),
        ("{{ snippet(customer_name) }}", "template_forbidden"),
    ],
)
def test_the_commit_refuses_a_bad_include_and_saves_nothing(include, code):
    snippet("brand.voice", {"en": {"system": "Be warm."}})
    make_version(prompt_create(key="plain.prompt", actor=AUTHOR))
    prompt, content = includer(en={"system": include, "instruction": "{{ customer_name }}"})
    with pytest.raises(ContentInvalid) as refused:
        version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    assert code in codes(refused)
    problem = next(p for p in refused.value.problems if p.code == code)
    assert problem.pointer == "/templates/en/system"
    assert not PromptVersion.objects.filter(prompt=prompt).exists()


def test_a_snippet_missing_a_locale_of_the_including_version_is_refused():
    snippet("brand.voice", {"en": {"system": "Be warm."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"},
        fr={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"},
    )
    with pytest.raises(ContentInvalid) as refused:
        version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    [problem] = refused.value.problems
    assert (problem.code, problem.pointer) == ("snippet_locale_missing", "/templates/fr/system")
    assert "no fr template" in problem.detail


def test_a_less_specific_locale_of_the_snippet_serves_a_regional_one():
    snippet("brand.voice", {"en": {"system": "Be warm."}, "fr": {"system": "Soyez chaleureux."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"},
        **{
            "fr-CA": {
                "system": "{{ snippet('brand.voice') }}",
                "instruction": "{{ customer_name }}",
            }
        },
    )
    version = version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    result = version_render(version=version, locale="fr-CA", variables={"customer_name": "Zoé"})
    assert result.rendered.system == "Soyez chaleureux."


def test_a_snippet_including_itself_through_another_is_refused():
    first = snippet("rules.a", {"en": {"system": "A."}})
    snippet("rules.b", {"en": {"system": "B {{ snippet('rules.a') }}"}})
    with pytest.raises(ContentInvalid) as refused:
        make_version(first, variables=[], templates={"en": {"system": "{{ snippet('rules.b') }}"}})
    [problem] = refused.value.problems
    assert problem.code == "snippet_cycle"
    assert "rules.a → rules.b → rules.a" in problem.detail
    assert PromptVersion.objects.filter(prompt=first).count() == 1


def test_a_snippet_declares_no_variables():
    prompt = prompt_create(key="brand.voice", actor=AUTHOR, is_snippet=True)
    with pytest.raises(ContentInvalid) as refused:
        make_version(prompt)
    assert codes(refused) == ["snippet_variables"]


def test_a_prompt_with_variables_cannot_become_a_snippet_nor_a_used_snippet_stop_being_one():
    plain = prompt_create(key="plain.prompt", actor=AUTHOR)
    make_version(plain)
    with pytest.raises(PromptInvalid) as refused:
        prompt_update(prompt=plain, actor=AUTHOR, is_snippet=True)
    assert codes(refused) == ["snippet_variables"]
    voice = snippet("brand.voice", {"en": {"system": "Be warm."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"}
    )
    version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    with pytest.raises(PromptInvalid) as refused:
        prompt_update(prompt=voice, actor=AUTHOR, is_snippet=False)
    assert codes(refused) == ["snippet_in_use"]
    voice.refresh_from_db()
    assert voice.is_snippet


def test_a_snippets_users_are_every_version_that_includes_it():
    voice = snippet("brand.voice", {"en": {"system": "Be warm."}})
    versions = []
    for key in ("support.reply", "sales.recap"):
        prompt, content = includer(
            key, en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"}
        )
        versions.append(
            version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
        )
    assert {u.version for u in snippet_users(snippet=voice)} == set(versions)


def test_a_draft_keeps_its_uses_current():
    snippet("brand.voice", {"en": {"system": "Be warm."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"}
    )
    draft = version_create(prompt=prompt, actor=AUTHOR, content=content, message="m")
    assert SnippetUse.objects.filter(version=draft).count() == 1
    version_draft_update(
        version=draft,
        actor=AUTHOR,
        content=VersionContent.from_dict(content_data()),
    )
    assert not SnippetUse.objects.filter(version=draft).exists()
    version_commit(version=draft, actor=AUTHOR)


def test_an_include_without_a_snippet_in_the_render_is_refused_in_place():
    snippet("brand.voice", {"en": {"system": "Be warm."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"}
    )
    version = version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    with pytest.raises(RenderFailed) as refused:
        version_render(
            version=version, locale="en", variables={"customer_name": "A"}, following=lambda k: {}
        )
    assert codes(refused) == ["snippet_unavailable"]


# --- YAML files ---------------------------------------------------------------------------------


def _file(directory, key: str, **fields: Any) -> None:
    data = {
        "key": key,
        "model": {"provider": "local", "model": "echo-1"},
        "message": "Imported.",
        **fields,
    }
    (directory / f"{key}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_an_export_keeps_includes_and_the_snippet_flag_and_imports_back(tmp_path):
    snippet("brand.voice", {"en": {"system": "Be warm."}})
    prompt, content = includer(
        "a.reply",
        en={
            "system": "{{ snippet('brand.voice', version=1) }}",
            "instruction": "{{ customer_name }}",
        },
    )
    version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    prompts_export(directory=tmp_path)
    voice = yaml.safe_load((tmp_path / "brand.voice.yaml").read_text())
    reply = yaml.safe_load((tmp_path / "a.reply.yaml").read_text())
    assert voice["snippet"] is True
    assert "snippet" not in reply
    assert reply["templates"]["en"]["system"] == "{{ snippet('brand.voice', version=1) }}"
    # Nothing changed: the import plans nothing.
    assert {item.action for item in prompts_import_plan(directory=tmp_path)} == {"unchanged"}


def test_an_import_lands_snippets_before_the_files_that_include_them(tmp_path):
    # "a.reply" sorts before "brand.voice": the apply reorders them.
    _file(
        tmp_path,
        "a.reply",
        templates={"en": {"system": "{{ snippet('brand.voice') }}", "instruction": "Hi."}},
    )
    _file(tmp_path, "brand.voice", snippet=True, templates={"en": {"system": "Be warm."}})
    prompts_import_apply(plan=prompts_import_plan(directory=tmp_path), actor=AUTHOR)
    assert Prompt.objects.get(key="brand.voice").is_snippet
    version = PromptVersion.objects.get(prompt__key="a.reply")
    assert version_render(version=version, locale="en", variables={}).rendered.system == (
        "Be warm."
    )


def test_an_import_with_an_unknown_snippet_names_the_file_and_changes_nothing(tmp_path):
    _file(tmp_path, "brand.voice", snippet=True, templates={"en": {"system": "Be warm."}})
    _file(
        tmp_path,
        "a.reply",
        templates={"en": {"system": "{{ snippet('brand.tone') }}", "instruction": "Hi."}},
    )
    with pytest.raises(SyncInvalid) as refused:
        prompts_import_apply(plan=prompts_import_plan(directory=tmp_path), actor=AUTHOR)
    [failure] = refused.value.failures
    assert failure.path.name == "a.reply.yaml"
    assert [p.code for p in failure.problems] == ["unknown_snippet"]
    assert not Prompt.objects.exists()


def test_the_database_refuses_to_change_a_committed_versions_includes():
    from django.db import IntegrityError, transaction

    voice = snippet("brand.voice", {"en": {"system": "Be warm."}})
    prompt, content = includer(
        en={"system": "{{ snippet('brand.voice') }}", "instruction": "{{ customer_name }}"}
    )
    version = version_create(prompt=prompt, actor=AUTHOR, content=content, message="m", commit=True)
    for action in (
        lambda: SnippetUse.objects.filter(version=version).update(pinned=1),
        lambda: SnippetUse.objects.create(version=version, snippet=voice, pinned=1),
    ):
        with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
            action()
    assert list(SnippetUse.objects.filter(version=version).values_list("pinned", flat=True)) == [
        None
    ]
