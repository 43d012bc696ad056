"""The session page follows the session stream: every run of the conversation,
live, including runs created elsewhere after the page opened; the feed ends
when the session is deleted."""

from __future__ import annotations

from typing import Any

import httpx

from tests.dashboard.conftest import NewPage, screenshot


def _api(server: str, owner: str) -> httpx.Client:
    return httpx.Client(base_url=server, headers={"X-Client-Id": owner}, timeout=10)


def _run(api: httpx.Client, session_id: str, marker: str) -> dict[str, Any]:
    """A ticker run in the session, once it has finished."""
    response = api.post(
        "/v1/runs/wait", json={"pipeline": "ticker", "input": {"marker": marker, "count": 3}, "session_id": session_id}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _events(api: httpx.Client, run_id: str) -> list[list[Any]]:
    return [[run_id, e["seq"], e["type"]] for e in api.get(f"/v1/runs/{run_id}/events").json()["events"]]


def test_the_session_page_shows_every_run_live_until_the_session_is_deleted(
    server: str, owner: str, new_page: NewPage
) -> None:
    with _api(server, owner) as api:
        session_id = api.post("/v1/sessions", json={}).json()["session_id"]
        first = _run(api, session_id, "first")
        expected = _events(api, first["run_id"])

        page = new_page()
        page.goto(f"{server}/#/sessions/{session_id}")
        page.wait_for_function(f"document.querySelectorAll('#session-live li').length === {len(expected)}")
        page.wait_for_selector("section[data-state=live]")

        second = _run(api, session_id, "second")  # created after the page opened, not from it
        expected += _events(api, second["run_id"])
        page.wait_for_function(f"document.querySelectorAll('#session-live li').length === {len(expected)}")
        shown = page.eval_on_selector_all(
            "#session-live li", "lis => lis.map((li) => [li.dataset.runId, Number(li.dataset.seq), li.dataset.type])"
        )
        assert shown == expected
        page.wait_for_function("document.querySelectorAll('#session-runs tr[data-run-id]').length === 2")
        screenshot(page, "session-live")

        assert api.delete(f"/v1/sessions/{session_id}").status_code == 204
        page.wait_for_selector("section[data-state=ended]")
