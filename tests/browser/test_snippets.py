"""A snippet used by two prompts, in a real browser: its page lists both versions that include it,
and a third prompt's workbench shows an unknown snippet in place, then previews the include."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from registry.services import prompt_create
from tests.browser.test_workbench import type_into
from tests.factories import AUTHOR, make_version

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_snippet_used_by_two_prompts_and_included_from_the_workbench(admin_page, visit) -> None:
    page = admin_page
    voice = prompt_create(key="brand.voice", actor=AUTHOR, is_snippet=True)
    make_version(voice, variables=[], templates={"en": {"system": "Be warm and brief."}})
    for key in ("support.reply", "sales.recap"):
        make_version(
            prompt_create(key=key, actor=AUTHOR),
            templates={
                "en": {
                    "system": "{{ snippet('brand.voice') }}",
                    "instruction": "{{ customer_name }}",
                }
            },
        )

    # The snippet's page: both prompts that include it, with their version and how.
    visit(page, f"/admin/registry/prompt/{voice.pk}/change/")
    expect(page.locator("body")).to_contain_text("Included by")
    for key in ("support.reply", "sales.recap"):
        expect(page.get_by_role("link", name=key)).to_be_visible()
    expect(page.locator("body")).to_contain_text("follows the stable release")

    # A third prompt's first version: a mistyped key is shown in place as it is typed...
    prompt = prompt_create(key="support.welcome", actor=AUTHOR)
    visit(page, f"/admin/registry/promptversion/add/?prompt={prompt.pk}")
    english = page.locator("fieldset.wb-locale.wb-active")
    page.fill("#id_model_name", "echo-1")
    type_into(page, english, "system", "{{ snippet('brand.tone') }}")
    type_into(page, english, "instruction", "Welcome.")
    problems = page.locator("#wb-preview-problems")
    expect(problems).to_contain_text("there is no snippet 'brand.tone'")

    # ... and once fixed, the preview renders the snippet's text.
    type_into(page, english, "system", "{{ snippet('brand.voice') }}")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#wb-messages")).to_contain_text("Be warm and brief.")
    assert not page.console_errors
