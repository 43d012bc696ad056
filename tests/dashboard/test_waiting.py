"""Waiting runs on the dashboard, in headless Chromium: the list filters them, a run that
asks (``ctx.ask``) shows its question and a form built from its schema, the answer goes
with the question's ask_id, a refusal shows the server's message, and the page follows
the run on to its end on the same stream; a sleeping run (``ctx.sleep``) says until when."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from runyard import RunContext
from tests.dashboard.conftest import NewPage, screenshot
from tests.dashboard.test_dashboard import rendered_seqs, start_run, wait_finished, wait_rows
from tests.support import make_app, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(60)]

ORDER = {
    "type": "object",
    "properties": {
        "plan": {"enum": ["small", "large"], "title": "Plan"},
        "count": {"type": "integer", "minimum": 1, "description": "how many"},
        "note": {"type": "string"},
        "urgent": {"type": "boolean", "default": True},
    },
    "required": ["plan", "count"],
}
NUMBERS = {"type": "array", "items": {"type": "integer"}}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The test app (with ``approve``) plus pipelines that ask with other schemas, and one that sleeps."""
    app = make_app(store="memory://", drain_s=0.2)

    @app.pipeline("order")
    async def order(ctx: RunContext, input: Any) -> Any:
        return await ctx.ask("What shall we order?", schema=ORDER)

    @app.pipeline("free_answers")
    async def free_answers(ctx: RunContext, input: Any) -> dict[str, Any]:
        first = await ctx.ask("Say anything.")
        second = await ctx.ask({"question": "Some numbers?"}, schema=NUMBERS)
        return {"first": first, "second": second}

    @app.pipeline("drowsy")
    async def drowsy(ctx: RunContext, input: Any) -> str:
        await ctx.sleep(float(input["seconds"]))
        return "awake"

    with serve_in_thread(app) as url:
        yield url


def wait_status(server: str, owner: str, run_id: str, status: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = httpx.get(f"{server}/v1/runs/{run_id}", headers={"X-Client-Id": owner}).json()
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout} s"
        time.sleep(0.05)


def ask_shown(page: Page) -> str:
    """Waits for the page's question form; the ask_id it answers."""
    page.wait_for_selector("#waiting[data-kind=ask] #answer-form")
    return page.get_attribute("#waiting", "data-ask-id") or ""


def test_a_waiting_run_is_listed_answered_from_its_page_and_followed_to_its_end(
    server: str, owner: str, new_page: NewPage
) -> None:
    run = start_run(server, owner, "approve", {"question": "Ship it?"})
    busy = start_run(server, owner, "ticker", {"marker": "busy", "count": 1})
    wait_finished(server, owner, busy["run_id"])
    asked = wait_status(server, owner, run["run_id"], "waiting")["waiting_for"]

    page = new_page()
    page.goto(f"{server}/#/runs?status=waiting")
    assert wait_rows(page, 1, status="waiting") == {run["run_id"]}
    assert page.inner_text("#runs-body .badge") == "waiting"
    screenshot(page, "runs-waiting")

    page.click(f"#runs-body a[href='#/runs/{run['run_id']}']")
    assert ask_shown(page) == asked["ask_id"]
    assert page.get_attribute("#run-view", "data-status") == "waiting"
    assert '"question": "Ship it?"' in page.inner_text("#waiting-request")
    assert page.locator("#answer-ok").get_attribute("type") == "checkbox"
    screenshot(page, "run-waiting-ask")

    sent: list[Any] = []
    page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/input") else None)
    page.check("#answer-ok")
    page.click("#answer-submit")
    page.wait_for_selector("#run-view[data-ended=true][data-status=succeeded]")
    assert sent == [{"value": {"ok": True}, "ask_id": asked["ask_id"]}]
    assert '"ok": true' in page.inner_text("#run-output")
    assert page.locator("#waiting").is_hidden()
    # the page followed the run on the stream it had open: queued, running, its end
    assert page.get_attribute("#run-view", "data-connects") == "1"
    last_seq = wait_finished(server, owner, run["run_id"])["last_seq"]
    assert rendered_seqs(page) == list(range(1, last_seq + 1))
    types = page.eval_on_selector_all("#event-log li", "items => items.map((li) => li.dataset.type)")
    assert types[types.index("input.requested") :][:4] == ["input.requested", "status", "input.received", "status"]
    screenshot(page, "run-answered")


def test_a_schema_becomes_a_form_and_a_refused_answer_shows_the_servers_message(
    server: str, owner: str, new_page: NewPage
) -> None:
    run = start_run(server, owner, "order", {})
    page = new_page()
    page.goto(f"{server}/#/runs/{run['run_id']}")
    ask_shown(page)
    assert page.inner_text("#waiting-request") == "What shall we order?"
    options = page.eval_on_selector_all("#answer-plan option", "os => os.map((o) => o.textContent)")
    assert options == ["small", "large"]  # required: no empty choice
    assert page.get_attribute("#answer-count", "type") == "number"
    assert page.get_attribute("#answer-note", "type") == "text"
    assert page.get_attribute("#answer-urgent", "type") == "checkbox"
    assert page.is_checked("#answer-urgent")  # the schema's default
    assert "how many" in page.inner_text("#answer-fields")

    page.select_option("#answer-plan", label="large")
    page.fill("#answer-count", "0")
    page.click("#answer-submit")
    problem = page.wait_for_selector("#answer-problem .notice-error")
    assert problem is not None
    assert "(invalid_input)" in problem.inner_text() and "minimum" in problem.inner_text()
    assert wait_status(server, owner, run["run_id"], "waiting")["status"] == "waiting"
    screenshot(page, "run-waiting-refused")

    page.fill("#answer-count", "3")
    page.fill("#answer-note", "by Friday")
    page.click("#answer-submit")
    page.wait_for_selector("#run-view[data-ended=true][data-status=succeeded]")
    output = wait_finished(server, owner, run["run_id"])["output"]
    assert output == {"plan": "large", "count": 3, "note": "by Friday", "urgent": True}


def test_other_schemas_get_a_json_editor_and_text_answers_where_text_may(
    server: str, owner: str, new_page: NewPage
) -> None:
    run = start_run(server, owner, "free_answers", {})
    page = new_page()
    page.goto(f"{server}/#/runs/{run['run_id']}")
    first = ask_shown(page)
    assert page.locator("#answer-fields").count() == 0
    assert "plain text" in page.inner_text("#answer-json-help")
    page.fill("#answer-json", "plain words")
    page.click("#answer-submit")

    page.wait_for_function(f"((id) => id && id !== '{first}')(document.querySelector('#waiting').dataset.askId)")
    ask_shown(page)
    assert '"question": "Some numbers?"' in page.inner_text("#waiting-request")
    page.fill("#answer-json", "one, two")
    page.click("#answer-submit")
    assert "not valid JSON" in page.inner_text("#answer-problem")
    page.fill("#answer-json", "[1, 2]")
    page.click("#answer-submit")
    page.wait_for_selector("#run-view[data-ended=true][data-status=succeeded]")
    assert wait_finished(server, owner, run["run_id"])["output"] == {"first": "plain words", "second": [1, 2]}


def test_an_answer_to_a_question_answered_meanwhile_shows_the_409(server: str, owner: str, new_page: NewPage) -> None:
    run = start_run(server, owner, "approve", {"question": "Who answers first?"})
    page = new_page()

    def no_stream(route: Route) -> None:
        route.abort()  # this page hears nothing new: someone else's answer stays unknown to it

    page.route("**/v1/runs/*/stream*", no_stream)
    page.goto(f"{server}/#/runs/{run['run_id']}")
    ask_id = ask_shown(page)
    answered = httpx.post(
        f"{server}/v1/runs/{run['run_id']}/input",
        json={"value": {"ok": False}, "ask_id": ask_id},
        headers={"X-Client-Id": owner},
    )
    assert answered.status_code == 202, answered.text
    wait_finished(server, owner, run["run_id"])

    page.check("#answer-ok")
    page.click("#answer-submit")
    problem = page.wait_for_selector("#answer-problem .notice-error")
    assert problem is not None
    assert "(run_not_waiting)" in problem.inner_text()
    screenshot(page, "run-waiting-conflict")

    page.unroute("**/v1/runs/*/stream*")
    page.wait_for_selector("#run-view[data-ended=true][data-status=succeeded]")
    assert '"ok": false' in page.inner_text("#run-output")
    assert page.locator("#waiting").is_hidden()


def test_a_sleeping_run_says_until_when(server: str, owner: str, new_page: NewPage) -> None:
    # long enough that the page is up before it wakes, with 4 test processes on 2 cores
    run = start_run(server, owner, "drowsy", {"seconds": 15})
    page = new_page()
    page.goto(f"{server}/#/runs/{run['run_id']}")
    page.wait_for_selector("#waiting[data-kind=sleep]")
    until = wait_status(server, owner, run["run_id"], "waiting")["waiting_for"]["until"]
    assert page.inner_text("#sleeping").startswith("sleeping until ")
    assert page.get_attribute("#sleeping time", "datetime") == until
    assert page.get_attribute("#run-view", "data-status") == "waiting"
    screenshot(page, "run-sleeping")
    page.wait_for_selector("#run-view[data-ended=true][data-status=succeeded]")
    assert page.locator("#waiting").is_hidden()
