"""The crons page (issue 13), in headless Chromium: it lists the caller's crons
with their next run, adds one from its form (a bad schedule shows the server's
refusal), disables and enables one in place, and shows nobody else's."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import NewPage, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(60)]


def crons_of(server: str, owner: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server}/v1/crons", headers={"X-Client-Id": owner})
    assert answer.status_code == 200, answer.text
    crons: list[dict[str, Any]] = answer.json()["crons"]
    return crons


def test_the_crons_page_adds_lists_and_toggles_crons(server: str, owner: str, new_page: NewPage) -> None:
    theirs = httpx.post(
        f"{server}/v1/crons",
        json={"pipeline": "nap", "input": {"seconds": 0.01}, "schedule": "0 0 1 1 *"},
        headers={"X-Client-Id": "someone-else"},
    )
    assert theirs.status_code == 201, theirs.text
    page = new_page()
    page.goto(f"{server}/#/crons")
    page.wait_for_selector("#crons td.muted")  # "No crons.": another owner's is not shown
    page.wait_for_function("document.querySelectorAll('#cron-pipeline option').length > 0")

    page.select_option("#cron-pipeline", "nap")
    page.fill("#cron-schedule", "every morning")
    page.click("#cron-add")
    page.wait_for_selector("#cron-form-problem:has-text('invalid_schedule')")
    assert crons_of(server, owner) == []

    page.fill("#cron-schedule", "30 7 * * *")
    page.fill("#cron-timezone", "Europe/Paris")
    page.fill("#cron-input", '{"seconds": 2}')
    page.click("#cron-add")
    page.wait_for_selector("#crons tr[data-cron-id][data-enabled=true] td.cron-next time")
    (cron,) = crons_of(server, owner)
    assert (cron["schedule"], cron["timezone"], cron["input"]["seconds"]) == ("30 7 * * *", "Europe/Paris", 2)
    row = f"#crons tr[data-cron-id='{cron['cron_id']}']"
    assert page.get_attribute(f"{row} td.cron-next time", "datetime") == cron["next_run_at"]
    screenshot(page, "crons")

    page.uncheck(f"{row} input.cron-enabled")
    page.wait_for_selector(f"{row}[data-enabled=false] td.cron-next:has-text('disabled')")
    assert crons_of(server, owner)[0]["next_run_at"] is None
    page.check(f"{row} input.cron-enabled")
    page.wait_for_selector(f"{row}[data-enabled=true] td.cron-next time")
    assert crons_of(server, owner)[0]["enabled"] is True
