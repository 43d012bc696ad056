"""The store page in headless Chromium: the signed-in owner's long-term items by
namespace (the namespaces below, the items in and under it), searched by a
query with scores, deleted from the page; another owner's items never show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.dashboard.conftest import NewPage, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(60)]


def put(server: str, owner: str, namespace: list[str], key: str, value: dict[str, Any]) -> None:
    answer = httpx.put(
        f"{server}/v1/store/items",
        json={"namespace": namespace, "key": key, "value": value},
        headers={"X-Client-Id": owner},
    )
    answer.raise_for_status()


def shown_keys(page: Page) -> list[str]:
    return [row.get_attribute("data-key") or "" for row in page.locator("#store-items tr[data-key]").all()]


def test_the_store_page_browses_searches_and_deletes_the_owners_items(
    server: str, owner: str, new_page: NewPage
) -> None:
    put(server, owner, ["users", "u1", "prefs"], "theme", {"text": "dark theme please"})
    put(server, owner, ["users", "u1", "notes"], "n1", {"text": "tea at five"})
    put(server, owner, ["teams"], "t", {"text": "the team"})
    put(server, f"{owner}-other", ["users", "secret"], "s", {"text": "not yours"})
    page = new_page()

    page.goto(f"{server}/#/store")
    page.locator("#store-namespaces a", has_text="users").wait_for()
    assert page.locator("#store-namespaces a").all_inner_texts() == ["teams", "users"]
    assert sorted(shown_keys(page)) == ["n1", "t", "theme"]

    page.locator("#store-namespaces a", has_text="users").click()
    page.locator("#store-namespaces a", has_text="u1").click()
    page.locator("#store-namespaces a", has_text="prefs").wait_for()
    assert page.locator("#store-namespaces a").all_inner_texts() == ["notes", "prefs"]
    assert sorted(shown_keys(page)) == ["n1", "theme"]
    assert page.locator("#store-crumbs").inner_text() == "all / users / u1"

    page.fill("#store-query", "tea")
    page.press("#store-query", "Enter")
    page.locator("#store-items tr[data-key] td", has_text="1.000").wait_for()
    assert shown_keys(page) == ["n1"]
    screenshot(page, "store")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete item n1").click()
    page.locator("#store-items", has_text="No item matches").wait_for()
    gone = httpx.get(
        f"{server}/v1/store/items", params={"namespace": "users.u1.notes", "key": "n1"}, headers={"X-Client-Id": owner}
    )
    assert gone.status_code == 404
