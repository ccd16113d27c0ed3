"""The playground in a real browser (issue 15, item 5): opened from a version's page, a run whose
answer is seen arriving token by token, a missing value refused in place, two versions side by
side on the same inputs, and an answer saved as a case. The last screen (both columns, the case
saved) is kept by the ``admin_page`` fixture."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from evaluations.models import Case
from registry.models import PromptVersion
from runs.models import Call

pytestmark = pytest.mark.django_db(transaction=True)

# The local model server trickles this model's answer, a word every 5 ms: a stream to watch.
TRICKLING = "fault-trickle-5"
STREAMING = """() => {
  const output = document.querySelector('#pg-column-a .pg-output');
  return output.classList.contains('pg-streaming') && output.textContent.length > 0;
}"""


def test_an_author_runs_a_version_side_by_side_and_saves_the_answer_as_a_case(
    admin_page, visit, demo
):
    page = admin_page
    v3 = PromptVersion.objects.get(prompt__key="support.refund-reply", number=3)
    v2 = PromptVersion.objects.get(prompt__key="support.refund-reply", number=2)
    calls_before = Call.objects.count()

    # From the version's page to its playground.
    visit(page, f"/admin/registry/promptversion/{v3.pk}/change/")
    page.get_by_role("link", name="Playground").click()
    page.wait_for_url(f"**/admin/playground/{v3.pk}/")
    a, b = page.locator("#pg-column-a"), page.locator("#pg-column-b")

    # A required value left out: refused next to its input, nothing run.
    page.fill("#id_var_customer_name", "")
    page.fill("#id_var_order_id", "A-17")
    page.fill("#id_var_refund_amount", "12.5")
    page.click("#pg-run")
    expect(page.locator(".field-var_customer_name .errorlist")).to_contain_text("customer_name")
    assert Call.objects.count() == calls_before
    page.console_errors.clear()  # Chromium logs the refusal's 400; nothing else may be logged

    # The answer arrives as it is written, then its figures.
    page.fill("#id_var_customer_name", "Zoé")
    page.fill("#pg-a-model", TRICKLING)
    page.click("#pg-run")
    page.wait_for_function(STREAMING)
    expect(a.locator(".pg-figures")).to_be_visible()
    expect(a.locator(".pg-output")).to_contain_text("Zoé")
    expect(a.locator(".pg-figures")).to_contain_text("Tokens in / out")
    expect(page.locator(".field-var_customer_name .errorlist")).to_have_count(0)

    # Side by side: v2 on the binding's model, against v3 on another, on the same inputs.
    page.check("#pg-compare")
    page.select_option("#pg-b-version", str(v2.pk))
    page.fill("#pg-a-model", "echo-small")
    page.click("#pg-run")
    expect(a.locator(".pg-status")).to_contain_text("answered by local / echo-small")
    expect(b.locator(".pg-status")).to_contain_text("v2")
    expect(b.locator(".pg-status")).to_contain_text("answered by local / echo-1")
    expect(b.locator(".pg-output")).to_contain_text("Zoé")
    recorded = Call.objects.filter(source=Call.Source.PLAYGROUND)
    assert sorted(recorded.values_list("version__number", "model")) == [
        (2, "echo-1"),
        (3, "echo-small"),
        (3, TRICKLING),
    ]

    # Column B's answer, saved as a case of the prompt's golden set.
    b.locator(".pg-save-key").fill("zoe-playground")
    b.locator(".pg-save-button").click()
    expect(b.locator(".pg-save-done")).to_contain_text("Saved as case zoe-playground")
    case = Case.objects.get(key="zoe-playground")
    assert case.variables["customer_name"] == "Zoé"
    assert case.expectation["value"] == b.locator(".pg-output").inner_text()
    assert not page.console_errors, page.console_errors
