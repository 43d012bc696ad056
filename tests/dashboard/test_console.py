"""The dashboard as an operations console (issue 16 items 2, 5 and 6; issue 18 item 5),
end to end in headless Chromium against a playground server (as ``runyard demo``
serves it) with prices and a trace URL: search, the owner column, the health page
and its live charts, the run's proportional time line, tokens and cost, re-run,
a sanitised markdown output, the trace link, the phone-width layout. Screenshots
of the list, the run page and the health page land in ``tests/screenshots/``."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from runyard import RunContext
from tests.dashboard.conftest import NewPage, screenshot
from tests.dashboard.test_dashboard import start_run, wait_finished
from tests.support import make_app, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(60)]

TRACE_URL = "http://localhost:16686/trace/{trace_id}"
PRICES = '{"sim-writer": {"input_per_mtok": 3, "output_per_mtok": 15}}'
PHASES = ["plan", "search", "read", "write"]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One playground server on SQLite for the whole module."""
    path: Path = tmp_path_factory.mktemp("console") / "runyard.db"
    app = make_app(store=f"sqlite:///{path}", drain_s=0.2, playground=True, prices=PRICES, trace_url=TRACE_URL)

    @app.pipeline("tooled")
    async def tooled(ctx: RunContext, input: Any) -> str:
        """Two tool calls as the LangChain adapter reports them (its tool.error names no id); the second fails."""
        await ctx.emit("tool.start", {"id": "call-1", "name": "lookup", "input": 1})
        await asyncio.sleep(0.3)
        await ctx.emit("tool.end", {"id": "call-1", "name": "lookup", "output": 1})
        await ctx.emit("tool.start", {"id": "call-2", "name": "lookup", "input": 2})
        await asyncio.sleep(0.1)
        await ctx.emit("tool.error", {"code": "tool_error", "message": "no", "name": "lookup"})
        return "done"

    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def research(console: str) -> dict[str, Any]:
    """A finished research run of another owner whose topic carries a script (it lands in the markdown report)."""
    topic = 'otters <script>window.__pwned = 1</script><img src="x" onerror="window.__pwned = 2">'
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUNYARD_DEMO_SPEED", "0.3")  # the simulated delays, shortened
        run = start_run(console, "researcher", "research", {"topic": topic})
        return wait_finished(console, "researcher", run["run_id"], timeout=30)


def open_run(page: Page, console: str, run: dict[str, Any], owner: str) -> None:
    page.goto(f"{console}/#/runs/{run['run_id']}?as={owner}")
    page.wait_for_selector("#run-view[data-ended=true]")


def listed_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("#runs-body tr", "trs => trs.map((tr) => tr.dataset.runId)")
    return ids


def test_search_finds_a_run_by_its_error_text(console: str, owner: str, new_page: NewPage) -> None:
    fail_at = random.randrange(100, 999)
    broken = start_run(console, "someone-else", "ticker", {"marker": "b", "count": fail_at + 1, "fail_at": fail_at})
    start_run(console, owner, "ticker", {"marker": "fine", "count": 1})
    wait_finished(console, "someone-else", broken["run_id"])
    page = new_page()
    page.goto(f"{console}/#/runs")
    page.wait_for_selector("#runs-body tr")
    page.fill("#filter-q", f"FAILED AT {fail_at}")
    page.wait_for_function(
        f"[...document.querySelectorAll('#runs-body tr')].map((tr) => tr.dataset.runId).join() === '{broken['run_id']}'"
    )
    row = page.locator(f"#runs-body tr[data-run-id='{broken['run_id']}']")
    assert "someone-else" in row.inner_text()  # the owner column: a playground lists every owner's runs
    assert f"failed at {fail_at}" in row.locator(".cell-error").inner_text()
    assert page.get_attribute("#filter-q", "value") is not None
    assert f"q=FAILED+AT+{fail_at}" in page.url or f"q=FAILED%20AT%20{fail_at}" in page.url
    page.fill("#filter-q", "")
    page.select_option("#filter-range", "15m")
    page.wait_for_function("document.querySelectorAll('#runs-body tr').length > 1")
    screenshot(page, "console-runs")


def test_the_run_page_of_another_owner_shows_its_time_line_in_proportion(
    console: str, research: dict[str, Any], new_page: NewPage
) -> None:
    page = new_page()
    page.goto(f"{console}/#/runs")
    link = page.locator(f"#runs-body tr[data-run-id='{research['run_id']}'] a").first
    link.click()  # opens it as its owner
    page.wait_for_selector("#run-view[data-ended=true]")
    assert page.inner_text("#run-owner") == "researcher"
    page.wait_for_selector("#timeline li[data-kind=phase]")
    bars = page.eval_on_selector_all(
        "#timeline li[data-kind=phase]",
        """lis => lis.map((li) => {
            const bar = li.querySelector('.span-bar').getBoundingClientRect();
            const track = li.querySelector('.span-track').getBoundingClientRect();
            return [li.dataset.key, bar.left - track.left, bar.width, track.width];
        })""",
    )
    assert [key for key, *_ in bars] == [f"phase:{name}" for name in PHASES]
    lefts = [left for _, left, _, _ in bars]
    assert lefts == sorted(lefts)  # in order on the axis
    # each bar is as long as its phase took (from the events), within 10 %
    took = phase_durations(console, research["run_id"], "researcher")
    total_s = iso_seconds(research["finished_at"]) - iso_seconds(research["started_at"])
    for (key, _, width, track), name in zip(bars, PHASES, strict=True):
        expected = took[name] / total_s * track
        assert abs(width - expected) <= max(0.1 * expected, 2), (key, width, expected)


def test_tokens_cost_and_trace_link_of_a_run(console: str, research: dict[str, Any], new_page: NewPage) -> None:
    page = new_page()
    open_run(page, console, research, "researcher")
    usage = [e["data"] for e in events(console, research["run_id"], "researcher") if e["type"] == "usage"]
    input_tokens = sum(u["input_tokens"] for u in usage)
    output_tokens = sum(u["output_tokens"] for u in usage)
    assert page.get_attribute("#run-tokens", "data-input") == str(input_tokens)
    assert page.get_attribute("#run-tokens", "data-output") == str(output_tokens)
    cost = float(page.get_attribute("#run-cost", "data-cost") or "nan")
    assert cost == pytest.approx((input_tokens * 3 + output_tokens * 15) / 1_000_000)
    trace_id = research["trace_id"]
    assert page.get_attribute("#trace-link", "href") == TRACE_URL.format(trace_id=trace_id)
    screenshot(page, "console-run")


def test_a_script_in_a_markdown_output_does_not_run(console: str, research: dict[str, Any], new_page: NewPage) -> None:
    page = new_page()
    open_run(page, console, research, "researcher")
    page.wait_for_selector("#run-document .markdown h1")
    assert page.inner_text("#run-document h1").startswith("Research report: otters")
    page.wait_for_timeout(300)  # an onerror handler would have fired by now
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#run-document script, #run-document [onerror]").count() == 0
    # shown once: the streamed copy of the report gives way to the rendered one
    assert page.locator("#run-text").is_hidden()
    assert "report" not in page.inner_text("#run-output")


def test_re_run_makes_a_new_run_with_the_same_input(console: str, owner: str, new_page: NewPage) -> None:
    first = start_run(console, owner, "ticker", {"marker": f"again-{uuid.uuid4().hex[:6]}", "count": 2})
    wait_finished(console, owner, first["run_id"])
    page = new_page()
    page.goto(f"{console}/#/runs/{first['run_id']}")
    page.wait_for_selector("#run-view[data-ended=true]")
    page.click("#rerun")
    page.wait_for_function(f"location.hash.startsWith('#/runs/run_') && !location.hash.includes('{first['run_id']}')")
    page.wait_for_selector("#run-view[data-ended=true]")
    second_id = page.get_attribute("#run-view", "data-run-id")
    second = wait_finished(console, owner, str(second_id))
    assert (second["pipeline"], second["input"]) == (first["pipeline"], first["input"])


def test_the_health_page_counts_pipelines_and_its_charts_follow_a_load(
    console: str, research: dict[str, Any], owner: str, new_page: NewPage
) -> None:
    page = new_page()
    page.goto(f"{console}/#/health")
    page.wait_for_selector("#health-body tr[data-pipeline=research]")
    assert page.get_attribute("#health-body tr[data-pipeline=research] td[data-rate]", "data-rate") == "1"
    page.wait_for_function("Number(document.querySelector('#chart-events').dataset.points) >= 2")
    stop = threading.Event()

    def load() -> None:  # tickers, one after another, until the chart has seen them
        while not stop.is_set():
            run = start_run(console, owner, "ticker", {"marker": "load", "count": 40, "interval_ms": 5})
            wait_finished(console, owner, run["run_id"])

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        page.wait_for_function("Number(document.querySelector('#chart-events').dataset.events) > 0")
        page.wait_for_function("Number(document.querySelector('#chart-runs').dataset.created) > 0")
    finally:
        stop.set()
        loader.join(timeout=20)
    page.wait_for_selector("#health-body tr[data-pipeline=ticker]")
    screenshot(page, "console-health")


def test_the_time_line_shows_durable_steps_and_limit_waits(console: str, owner: str, new_page: NewPage) -> None:
    staged = start_run(console, owner, "stages", {"stages": 2, "stage_s": 0.3})
    holder = start_run(console, owner, "limited", {"hold": 1.6})  # holds the single test-api permit
    waiter = start_run(console, owner, "limited", {"hold": 0.1})  # waits for it: a limit.wait event
    for run in (staged, holder, waiter):
        wait_finished(console, owner, run["run_id"])
    page = new_page()
    page.goto(f"{console}/#/runs/{staged['run_id']}")
    page.wait_for_selector("#run-view[data-ended=true]")
    steps = page.eval_on_selector_all(
        "#timeline li[data-kind=step]", "lis => lis.map((li) => [li.dataset.key, li.dataset.end - li.dataset.start])"
    )
    assert [key for key, _ in steps] == ["step:stage1#1", "step:stage2#1"]
    # each took its stage_s, in ms: an event's time has ms precision, so 0.3 s may show as 299
    assert all(0.3 * 1000 - 2 <= took < 1.5 * 1000 for _, took in steps), steps
    page.goto(f"{console}/#/runs/{waiter['run_id']}")
    page.wait_for_selector("#run-view[data-ended=true]")
    assert "waits for test-api" in page.inner_text("#timeline li[data-kind=wait]")


def test_the_time_line_shows_tool_calls(console: str, owner: str, new_page: NewPage) -> None:
    run = start_run(console, owner, "tooled", {})
    wait_finished(console, owner, run["run_id"])
    page = new_page()
    page.goto(f"{console}/#/runs/{run['run_id']}")
    page.wait_for_selector("#run-view[data-ended=true]")
    tools = page.eval_on_selector_all(
        "#timeline li[data-kind=tool]",
        "lis => lis.map((li) => [li.dataset.key, li.matches('.span-failed'), li.dataset.end - li.dataset.start])",
    )
    assert [(key, failed) for key, failed, _ in tools] == [("tool:call-1", False), ("tool:call-2", True)]
    # 0.3 s and 0.1 s, in ms: an event's time has ms precision, so 0.1 s may show as 99
    assert tools[0][2] > tools[1][2] >= 100 - 2


def test_a_running_run_shows_its_progress_in_the_list(console: str, owner: str, new_page: NewPage) -> None:
    run = start_run(console, owner, "ticker", {"marker": "slow", "count": 400, "interval_ms": 20})
    page = new_page()
    page.goto(f"{console}/#/runs?status=running")
    cell = f"#runs-body tr[data-run-id='{run['run_id']}'] .cell-progress"
    page.wait_for_function(f"/^\\d+ \\/ 400$/.test(document.querySelector(\"{cell} .muted\")?.textContent ?? '')")
    assert 0 < float(page.get_attribute(f"{cell} progress", "value") or 0) < 1
    httpx.post(f"{console}/v1/runs/{run['run_id']}/cancel", headers={"X-Client-Id": owner})


def test_an_unknown_run_says_how_owners_work(console: str, new_page: NewPage) -> None:
    page = new_page()
    page.goto(f"{console}/#/runs/run_{'0' * 24}")
    message = page.inner_text("#run-missing")
    assert "visible only to their owner" in message and "X-Client-Id" in message


def test_at_phone_width_nothing_scrolls_sideways(console: str, research: dict[str, Any], new_page: NewPage) -> None:
    page = new_page()
    page.set_viewport_size({"width": 375, "height": 800})
    for hash_ in ("#/runs", f"#/runs/{research['run_id']}?as=researcher", "#/health"):
        page.goto(f"{console}/{hash_}")
        page.wait_for_selector("main h1")
        page.wait_for_timeout(400)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, (hash_, width)
    page.goto(f"{console}/#/runs")
    page.wait_for_selector("#runs-body tr")
    screenshot(page, "console-runs-phone")


# -- helpers ---------------------------------------------------------------------------


def events(console: str, run_id: str, owner: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{console}/v1/runs/{run_id}/events", headers={"X-Client-Id": owner}).json()
    found: list[dict[str, Any]] = body["events"]
    return found


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def phase_durations(console: str, run_id: str, owner: str) -> dict[str, float]:
    """Each phase's time from its ``started`` event to its ``done`` event, in seconds."""
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    for event in events(console, run_id, owner):
        if event["type"] == "phase":
            at = iso_seconds(event["ts"])
            if event["data"]["status"] == "started":
                started[event["data"]["name"]] = at
            else:
                took[event["data"]["name"]] = at - started[event["data"]["name"]]
    return took


def test_a_first_visit_to_a_playground_is_the_clis_user_and_opens_its_runs(console: str, browser: Browser) -> None:
    """The CLI sends no client id (it is ``anonymous``); a page that has not been
    given one becomes the same user in a playground, so each opens the other's runs."""
    from_cli = httpx.post(f"{console}/v1/runs", json={"pipeline": "ticker", "input": {"marker": "cli", "count": 1}})
    assert from_cli.status_code == 201
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(console)
        page.wait_for_function("document.querySelector('#who').textContent === 'anonymous'")
        page.goto(f"{console}/#/runs/{from_cli.json()['run_id']}")  # no ?as=: the page's own run
        page.wait_for_selector("#run-view[data-ended=true]")
        kept = browser.new_context()  # an id someone chose is kept
        kept.add_init_script("localStorage.setItem('runyard.client_id', 'chosen-one')")
        other = kept.new_page()
        other.goto(console)
        other.wait_for_selector("#runs-body")
        assert other.inner_text("#who") == "chosen-one"
        kept.close()
    finally:
        context.close()
