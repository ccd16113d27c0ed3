"""The author's journey through the workbench, in a real browser: a new prompt, its first version
in two locales, an error shown in place, fixed, previewed and committed, by keyboard."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from registry.models import Prompt, PromptVersion
from registry.selectors import version_content, version_translation_status

pytestmark = pytest.mark.django_db(transaction=True)


def type_into(page, panel, section: str, text: str) -> None:
    """Types into a section's code editor as a person would (click, then keys)."""
    panel.locator(f".wb-section[data-section={section}] .CodeMirror").click()
    page.keyboard.press("Control+a")
    page.keyboard.type(text)


def test_an_author_writes_previews_and_commits_a_first_version(admin_page, visit) -> None:
    page = admin_page
    # A new prompt, from the admin's own form.
    visit(page, "/admin/registry/prompt/add/")
    page.fill("#id_key", "support.welcome")
    page.fill("#id_description", "Welcomes a new customer.")
    page.click("input[name=_save]")
    prompt = Prompt.objects.get(key="support.welcome")

    # Its first version: the default locale's tab is open, with code editors.
    visit(page, f"/admin/registry/promptversion/add/?prompt={prompt.pk}")
    english = page.locator("fieldset.wb-locale.wb-active")
    expect(english.locator(".CodeMirror")).to_have_count(4)
    type_into(page, english, "system", "You are a friendly support agent.")
    type_into(page, english, "instruction", "Welcome {{ customer_name }} to {{ product }}.")

    # The variables the text uses are offered for declaration, one click for both.
    suggestions = page.locator("#wb-suggestions")
    expect(suggestions).to_contain_text("customer_name")
    suggestions.get_by_role("button", name="Declare all 2").click()
    expect(page.locator("#wb-suggestions")).to_be_empty()

    # The model: a configured provider is picked already; the model name is the author's.
    expect(page.locator("#id_provider")).to_have_value("local")
    page.fill("#id_model_name", "echo-1")

    # A second locale, with a mistake in it: shown in place, with its line, as it is typed.
    page.get_by_role("button", name="+ Add a locale").click()
    french = page.locator("fieldset.wb-locale.wb-active")
    french.locator("input[name$='-locale']").fill("fr")
    type_into(page, french, "system", "Tu es un agent de support aimable.")
    type_into(page, french, "instruction", "Bienvenue {{ customer_name }}\n{% if %} !")
    in_place = french.locator(".wb-section[data-section=instruction] .wb-problems")
    expect(in_place).to_contain_text("line 2")
    expect(page.locator(".wb-tabs")).to_contain_text("1 problem")

    # Saving anyway (Ctrl+S) is refused: the error is at the top, linked to its field and line.
    page.fill("#id_message", "First version: a welcome in English and French.")
    page.keyboard.press("Control+s")
    errors = page.locator("#wb-errors")
    expect(errors).to_contain_text("fr · instruction, line 2")
    assert not PromptVersion.objects.filter(prompt=prompt).exists()
    errors.get_by_role("link", name="fr · instruction, line 2").click()
    french = page.locator("fieldset.wb-locale.wb-active")
    expect(french.locator("input[name$='-locale']")).to_have_value("fr")

    # Fixed and saved: the workbench stays open on the saved draft.
    page.keyboard.press("Control+a")
    page.keyboard.type("Bienvenue {{ customer_name }} chez {{ product }} !")
    page.keyboard.press("Control+s")
    expect(page.locator("ul.messagelist")).to_contain_text("Saved support.welcome v1.")
    draft = PromptVersion.objects.get(prompt=prompt)
    assert sorted(version_content(draft).templates) == ["en", "fr"]
    assert [v.name for v in version_content(draft).variables] == ["customer_name", "product"]

    # The preview (Ctrl+Enter) renders the saved text with sample values.
    page.fill("#wb-sample-customer_name", "Ada")
    page.fill("#wb-sample-product", "Prompt Registry")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#wb-messages")).to_contain_text("Welcome Ada to Prompt Registry.")
    page.get_by_role("tab", name="fr").click()
    expect(page.locator("#wb-messages")).to_contain_text("Bienvenue Ada chez Prompt Registry !")

    # Ctrl+Shift+Enter saves and opens the commit confirmation; committing freezes it.
    page.keyboard.press("Control+Shift+Enter")
    page.wait_for_url(f"**/promptversion/{draft.pk}/commit/")
    page.locator("#content-main input[type=submit]").click()
    expect(page.locator("ul.messagelist")).to_contain_text("Committed support.welcome v1.")
    draft.refresh_from_db()
    assert draft.status == PromptVersion.Status.COMMITTED
    assert [s.state for s in version_translation_status(draft)] == ["source", "current"]
    assert not page.console_errors


def test_the_preview_s_problem_list_says_what_refuses_a_save_and_says_each_place_once(
    admin_page, visit
) -> None:
    page = admin_page
    prompt = Prompt.objects.create(key="support.hello", default_locale="en")
    visit(page, f"/admin/registry/promptversion/add/?prompt={prompt.pk}")
    english = page.locator("fieldset.wb-locale.wb-active")
    page.fill("#id_model_name", "echo-1")
    type_into(page, english, "instruction", "Hello {{ customer_name }}.")
    page.locator("#wb-suggestions").get_by_role("button", name="Declare as string").click()

    # Only the sample value is missing: that stops the preview, not a save, and the list says so.
    problems = page.locator("#wb-preview-problems")
    expect(problems).to_contain_text("1 sample value to fill in for the preview")
    expect(problems).not_to_contain_text("saving would be refused")

    # A template error does refuse a save; its link names the place, the message does not repeat it.
    type_into(page, english, "format", "Short.\n{{ ''.__class__ }}")
    # (A template that does not compile blocks the render, so its samples are not checked.)
    expect(problems).to_contain_text("1 problem (saving would be refused)")
    item = problems.locator("li", has_text="en · format, line 2")
    expect(item).to_have_text(
        "en · format, line 2: Templates cannot reach the attribute '__class__'."
    )

    # Saved with the sample still empty: the draft is saved, and nothing says it would be refused.
    type_into(page, english, "format", "Short.")
    page.keyboard.press("Control+s")
    expect(page.locator("ul.messagelist")).to_contain_text("Saved support.hello v1.")
    expect(page.locator("#wb-preview-problems")).to_contain_text("sample value")
    expect(page.locator("#wb-preview-problems")).not_to_contain_text("saving would be refused")
    assert not page.console_errors
