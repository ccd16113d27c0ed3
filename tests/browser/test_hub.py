"""The prompt hub and the first visit's small things, in a real browser on the demo data: the
prompt list's environment columns lead to a prompt's page and on to a release page; the home page
"View site" opens; the admin index in order of use; a new prompt one click from its first version.
"""

from __future__ import annotations

import re

import pytest


def test_from_the_prompt_list_through_the_hub_to_a_release(admin_page, shared_demo, visit):
    visit(admin_page, "/admin/registry/prompt/")
    headers = admin_page.locator("#result_list thead th").all_inner_texts()
    assert [h.strip().lower() for h in headers[-3:]] == ["development", "staging", "production"]
    row = admin_page.locator("#result_list tbody tr", has_text="support.refund-reply")
    assert "canary v3 @ 10 %" in row.locator("td.field-env_production").inner_text()
    # The page fits a 1,400-pixel screen: nothing wider than the viewport.
    assert admin_page.evaluate("document.documentElement.scrollWidth") <= 1400

    row.locator("th a").click()
    admin_page.wait_for_url(re.compile(r"/admin/registry/prompt/\d+/change/"))
    releases = admin_page.locator("#prompt-hub-releases")
    production = releases.locator("tr", has_text="production")
    assert "v3 @ 10 %" in production.inner_text()
    for title in ("Versions", "Datasets", "Recent eval runs", "Recent calls", "A/B results"):
        assert admin_page.locator(".prompt-hub-panel h2", has_text=title).count() == 1, title
    assert admin_page.locator("#prompt-hub-datasets").get_by_role("link", name="golden").count()

    production.get_by_role("link", name="Release page").click()
    admin_page.wait_for_url(re.compile(r"/admin/releases/release/\d+/change/"))
    assert "support.refund-reply in production" in admin_page.locator("#content h1").inner_text()


def test_view_site_opens_the_home_page_and_the_index_is_in_order_of_use(
    admin_page, shared_demo, visit
):
    visit(admin_page, "/admin/")
    sections = admin_page.locator("#content-main .module caption").all_inner_texts()
    assert [s.strip().upper() for s in sections][:4] == [
        "PROMPTS",
        "RELEASES",
        "EVALUATIONS",
        "RUNS",
    ]
    assert sections[-1].strip().upper() == "AUTHENTICATION AND AUTHORIZATION"
    icon = admin_page.locator("link[rel=icon]").get_attribute("href")
    assert admin_page.request.get(icon).ok

    admin_page.get_by_role("link", name="View site").click()
    admin_page.wait_for_url("**/")
    assert admin_page.locator("h1").inner_text() == "Prompt Registry"
    for name in ("Admin", "API docs", "Health"):
        assert admin_page.get_by_role("link", name=name, exact=True).count() == 1, name
    admin_page.get_by_role("link", name="Health", exact=True).click()
    assert '"ok"' in admin_page.content()
    admin_page.go_back()


@pytest.mark.django_db(transaction=True)  # it adds a prompt
def test_a_new_prompt_is_one_click_from_its_first_version(admin_page, demo, visit):
    visit(admin_page, "/admin/registry/prompt/add/")
    admin_page.fill("#id_key", "sales.thank-you")
    admin_page.fill("#id_description", "Thanks a customer after a purchase.")
    admin_page.fill("#id_tags", "sales")
    admin_page.locator("input[name=_save]").click()
    admin_page.wait_for_url(re.compile(r"/admin/registry/prompt/\d+/change/"))
    assert "write its first version" in admin_page.locator(".messagelist").inner_text()
    assert admin_page.locator("#prompt-hub-releases").inner_text().count("never released") == 3

    admin_page.get_by_role("link", name="Write the first version").click()
    admin_page.wait_for_url(re.compile(r"/admin/registry/promptversion/add/\?prompt=\d+"))
