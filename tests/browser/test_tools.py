"""A draft's tools in a real browser: typed into the workbench's binding section, a duplicate name
shown in place as it is typed, fixed, and saved."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.factories import ORDER_LOOKUP, PromptFactory, make_version

pytestmark = pytest.mark.django_db(transaction=True)

REFUND = {"type": "function", "function": {"name": "refund", "description": "Refund an order."}}


def test_an_author_declares_tools_with_a_mistake_shown_in_place(admin_page, visit) -> None:
    page = admin_page
    prompt = PromptFactory(key="support.orders")
    make_version(prompt)
    draft = make_version(prompt, commit=False, message="Tools.")

    visit(page, f"/admin/registry/promptversion/{draft.pk}/change/")
    tools = page.locator(".wb-json[data-json=tools] textarea")
    tools.fill(json.dumps([ORDER_LOOKUP, ORDER_LOOKUP]))
    in_place = page.locator(".wb-problems[data-field=tools]")
    expect(in_place).to_contain_text("both named 'order_lookup'")

    tools.fill(json.dumps([ORDER_LOOKUP, REFUND]))
    expect(in_place).to_be_empty()
    page.locator(".wb-json[data-json=tool_choice] textarea").fill('"auto"')
    page.keyboard.press("Control+s")
    expect(page.locator("ul.messagelist")).to_contain_text("Saved support.orders v2.")
    draft.refresh_from_db()
    assert (draft.tools, draft.tool_choice) == ([ORDER_LOOKUP, REFUND], "auto")
    assert not page.console_errors
