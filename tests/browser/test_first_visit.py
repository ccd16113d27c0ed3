"""A first visit, in a real browser: log in with the login ``make run`` printed, then find the
demo's prompts and a release from the admin index."""

from __future__ import annotations

import re

LOGIN = re.compile(r"user (?P<user>\S+)\s+password (?P<password>\S+)")


def test_the_printed_login_opens_the_admin(browser, shared_demo, live_server):
    match = LOGIN.search(shared_demo)
    assert match, shared_demo
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto("/admin/")
        page.fill("#id_username", match["user"])
        page.fill("#id_password", match["password"])
        page.click("input[type=submit]")
        page.wait_for_url("**/admin/")
        assert page.locator("#user-tools").inner_text().upper().startswith("WELCOME")
    finally:
        context.close()


def test_a_wrong_password_is_refused_in_place(browser, shared_demo, live_server):
    context = browser.new_context(base_url=live_server.url)
    try:
        page = context.new_page()
        page.goto("/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "not-the-password")
        page.click("input[type=submit]")
        assert "correct username and password" in page.locator(".errornote").inner_text()
        assert "/admin/login/" in page.url
    finally:
        context.close()


def test_from_the_index_to_a_released_prompt(admin_page, shared_demo):
    admin_page.goto("/admin/")
    admin_page.locator("#content-main a[href='/admin/registry/prompt/']").first.click()
    admin_page.wait_for_url("**/admin/registry/prompt/")
    rows = admin_page.locator("#result_list tbody tr")
    assert rows.count() >= 5
    link = rows.first.locator("th a")
    key = link.inner_text()
    link.click()
    admin_page.wait_for_url("**/change/")
    assert key in admin_page.title()
