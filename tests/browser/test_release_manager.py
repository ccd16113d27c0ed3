"""The release manager's journey, in a real browser, on the demo registry: a canary started on a
prompt no gate checks, the production canary ramped (its analysis ends, as the page says before
the click) and rolled back, a promotion refused by the golden gate turned into a passing gate run
from the confirmation page, and the promotion."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from config.celery import app as celery_app
from evaluations.models import EvalRun
from releases.models import Environment, Release

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def eager(monkeypatch) -> None:
    """Eval runs run in the server's thread as they are queued, as in ``make run``."""
    monkeypatch.setitem(celery_app.conf, "task_always_eager", True)


def release_of(key: str, environment: str = "production") -> Release:
    return Release.objects.select_related("canary_version", "stable_version").get(
        prompt__key=key, environment__name=environment
    )


def confirm(page, reason: str, submit: str) -> None:
    page.fill("#id_reason", reason)
    page.get_by_role("button", name=submit, exact=True).click()


def test_a_release_manager_canaries_ramps_rolls_back_and_promotes_past_a_gate(
    admin_page, demo, eager, visit
) -> None:
    page = admin_page
    # This journey applies changes directly; the demo's production requires review, whose
    # journey (propose, approve, apply) is tests/registry/test_demo.py's and
    # tests/releases/test_change_request_admin.py's.
    Environment.objects.filter(name="production").update(requires_review=False)

    # A canary of a prompt that no gate checks: the page says so before the click.
    marketing = release_of("marketing.product-description")
    visit(page, f"/admin/releases/release/{marketing.pk}/canary-start/?version=2&percent=5")
    expect(page.locator("#release-gates")).to_contain_text(
        "No promotion gates for production: nothing checks this version before release."
    )
    confirm(page, "Try the new description on 5 %.", "Start the canary")
    expect(page.locator("ul.messagelist")).to_contain_text("is now")
    assert release_of("marketing.product-description").canary_version.number == 2

    # The production canary of support.refund-reply (v3 at 10 %, under analysis), ramped by hand.
    refund = release_of("support.refund-reply")
    visit(page, f"/admin/releases/release/{refund.pk}/")
    page.locator("#content-main").get_by_role("button", name="25 %", exact=True).first.click()
    expect(page.locator("#release-notices")).to_contain_text(
        "Setting the canary to 25 % by hand ends the canary analysis"
    )
    confirm(page, "Ramp by hand.", "Set the percent")
    assert release_of("support.refund-reply").canary_weight == 2500

    # Rolled back: the canary is at 10 % again.
    page.locator("#content-main").get_by_role("button", name="Roll back", exact=True).first.click()
    page.get_by_role("button", name="Roll back", exact=True).click()
    expect(page.locator("ul.messagelist")).to_contain_text("is now")
    assert release_of("support.refund-reply").canary_weight == 1000

    # Promote: the golden gate has no gate run of version 3, and promoting is refused.
    page.locator("#content-main").get_by_role("button", name="Promote", exact=True).first.click()
    gates = page.locator("#release-gates")
    expect(gates).to_contain_text("No gate run yet")
    confirm(page, "v3 is ready.", "Promote")
    expect(page.locator(".release-errors")).to_contain_text(
        "The version may not be released here yet."
    )
    assert release_of("support.refund-reply").stable_version.number == 2

    # The refusal turned into a gate run, from the page; it comes back to it, passed.
    page.fill("#id_reason", "v3 passed its gate run.")
    gates.get_by_role("button", name="Run the gate evaluation").click()
    page.wait_for_url("**/canary-promote/**")
    expect(page.locator("ul.messagelist")).to_contain_text("finished")
    expect(page.locator("#release-gates")).to_contain_text("Passed:")
    expect(page.locator("#id_reason")).to_have_value("v3 passed its gate run.")
    run = EvalRun.objects.get(version__number=3, include_holdout=True)
    assert run.status == EvalRun.Status.FINISHED

    # And the promotion goes through.
    page.get_by_role("button", name="Promote", exact=True).click()
    expect(page.locator("ul.messagelist")).to_contain_text("is now")
    promoted = release_of("support.refund-reply")
    assert promoted.stable_version.number == 3
    assert promoted.canary_version is None
    assert not page.console_errors
