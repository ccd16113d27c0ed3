"""Datasets and compare, in a real browser (issue 13, items 7 and 8): a call's page → "Add to a
dataset" → the case edited on its page → two versions compared split, then unified. The last
screen (the unified comparison) is kept by the ``admin_page`` fixture."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from evaluations.models import Case, Dataset
from registry.models import PromptVersion
from releases.models import Environment
from runs.models import Call

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def refund_call(demo) -> Call:
    """A call of the demo's support.refund-reply (the demo's own calls are another prompt's)."""
    version = PromptVersion.objects.get(prompt__key="support.refund-reply", number=3)
    return Call.objects.create(
        request_id="req-browser-refund",
        source=Call.Source.RUN,
        created_at=timezone.now(),
        prompt=version.prompt,
        version=version,
        environment=Environment.objects.get(name="production"),
        variant="stable",
        locale="en",
        status=Call.Status.OK,
        inputs={"customer_name": "Flo", "order_id": "A-2002", "refund_amount": 18.5},
        output="Hello Flo, order A-2002 was refunded: 18.50 EUR. <b>Thanks</b>",
    )


def test_a_call_becomes_a_case_is_edited_and_two_versions_are_compared(
    admin_page, visit, refund_call
):
    page = admin_page
    golden = Dataset.objects.get(prompt__key="support.refund-reply", name="golden")

    # The call's page → "Add to a dataset": the case starts from the call's inputs and output.
    visit(page, f"/admin/runs/call/{refund_call.pk}/change/")
    page.get_by_role("link", name="Add to a dataset").click()
    page.wait_for_url(f"**/admin/evaluations/case/from-call/{refund_call.pk}/")
    assert "<b>Thanks</b>" in page.locator(".from-call-output").inner_text()  # text, escaped
    assert json.loads(page.locator("#id_variables").input_value())["customer_name"] == "Flo"
    page.fill("#id_key", "flo-refund")
    page.fill("#id_expectation", '{"scorer": "contains", "value": "refund"}')
    page.get_by_role("button", name="Add to the dataset").click()
    page.wait_for_url(f"**/admin/evaluations/dataset/{golden.pk}/change/")
    assert "as case 'flo-refund'" in page.locator(".messagelist").inner_text()

    # The case's page: an unknown variable is refused in place, then the fix is saved.
    case = Case.objects.get(dataset=golden, key="flo-refund")
    visit(page, f"/admin/evaluations/case/{case.pk}/change/")
    page.fill("#id_variables", '{"customer_nam": "Flo"}')
    page.get_by_role("button", name="Save", exact=True).click()
    assert "customer_nam" in page.locator(".field-variables .errorlist").inner_text()
    fixed = {"customer_name": "Flo", "order_id": "A-2002", "refund_amount": 18.5}
    page.fill("#id_variables", json.dumps(fixed))
    page.check("#id_must_pass")
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_url(f"**/admin/evaluations/dataset/{golden.pk}/change/")
    case.refresh_from_db()
    assert case.must_pass
    assert case.variables == fixed

    # Compare v1 with v3: split first, the changed words marked; then unified, by its link.
    v3 = PromptVersion.objects.get(prompt__key="support.refund-reply", number=3)
    visit(page, f"/admin/registry/promptversion/{v3.pk}/diff/?before=1&after=3&layout=split")
    assert page.locator("table.diff-table.split ins").count() > 0
    page.get_by_role("link", name="Unified").click()
    page.wait_for_url("**layout=unified")
    assert page.locator("table.diff-table.unified tr.sign-added").count() > 0
    assert page.locator("table.diff-table.unified ins").first.is_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400
