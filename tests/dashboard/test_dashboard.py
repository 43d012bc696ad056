"""The dashboard at ``/``, end to end in headless Chromium: the form starts runs, the run
page streams them live and resumes after reloads and dropped connections without a
duplicate or a gap, the list filters, the session page shows the memory, the
counters move. Each test saves a screenshot under ``tests/screenshots/``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import jwt
import pytest

from tests.dashboard.conftest import NewPage, screenshot
from tests.dashboard.proxy import CuttableProxy
from tests.support import make_app, serve_in_thread

if TYPE_CHECKING:
    from pathlib import Path

    from playwright.sync_api import Page, Request

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # then the browser fixture skips every test (or fails it under CI=true)
    PlaywrightTimeout = TimeoutError  # type: ignore[misc,assignment]

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(60)]

FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}


# -- helpers -------------------------------------------------------------------------


def start_run(server: str, owner: str, pipeline: str, input: dict[str, Any], **fields: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server}/v1/runs", json={"pipeline": pipeline, "input": input, **fields}, headers={"X-Client-Id": owner}
    )
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


def wait_finished(server: str, owner: str, run_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = httpx.get(f"{server}/v1/runs/{run_id}", headers={"X-Client-Id": owner}).json()
        if run["status"] in FINISHED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout} s"
        time.sleep(0.05)


def rendered_seqs(page: Page) -> list[int]:
    """The seqs of the run page's raw event log, in page order."""
    seqs: list[int] = page.eval_on_selector_all("#event-log li", "items => items.map((li) => Number(li.dataset.seq))")
    return seqs


def tick_indexes(page: Page) -> list[int]:
    indexes: list[int] = page.eval_on_selector_all("#ticks tr", "rows => rows.map((tr) => Number(tr.dataset.i))")
    return indexes


def assert_complete(page: Page, run_id: str, server: str, owner: str, ticks: int) -> None:
    """The page shows every event of the finished run exactly once, in order, and every tick."""
    last_seq = wait_finished(server, owner, run_id)["last_seq"]
    page.wait_for_selector("#run-view[data-ended=true]")
    assert rendered_seqs(page) == list(range(1, last_seq + 1))
    assert tick_indexes(page) == list(range(ticks))
    assert page.get_attribute("#run-view", "data-status") == "succeeded"


def record_streams(page: Page) -> list[str | None]:
    """The Last-Event-ID of every stream request the page makes from now on."""
    cursors: list[str | None] = []

    def seen(request: Request) -> None:
        if request.url.split("?")[0].endswith("/stream"):
            cursors.append(request.headers.get("last-event-id"))

    page.on("request", seen)
    return cursors


def wait_rows(page: Page, count: int, **data: str) -> set[str]:
    """Waits until the runs table has ``count`` rows, each with these ``data-*`` values; their run ids."""
    checks = " && ".join(f"tr.dataset.{name} === {json.dumps(value)}" for name, value in data.items()) or "true"
    rows = "[...document.querySelectorAll('#runs-body tr')]"
    page.wait_for_function(f"{rows}.length === {count} && {rows}.every((tr) => {checks})")
    ids: list[str] = page.eval_on_selector_all("#runs-body tr", "rows => rows.map((tr) => tr.dataset.runId)")
    return set(ids)


def wait_state(page: Page, *states: str) -> None:
    """Waits until the run page's stream is in one of these states (``data-connection``)."""
    check = f"{json.dumps(states)}.includes(document.querySelector('#run-view').dataset.connection)"
    try:
        page.wait_for_function(check, polling=20)
    except PlaywrightTimeout:
        dataset = page.eval_on_selector("#run-view", "el => JSON.stringify(el.dataset)")
        raise AssertionError(f"the stream never got to {states}: {dataset}") from None


def resumed(page: Page) -> None:
    """Waits until the run page's stream has gone live again after a drop."""
    page.wait_for_function("Number(document.querySelector('#run-view').dataset.resumes || 0) >= 1")


def ticks_at_least(page: Page, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#ticks tr').length >= {n}")


# -- the scenarios --------------------------------------------------------------------


def test_a_run_started_from_the_form_streams_its_events_live(server: str, owner: str, new_page: NewPage) -> None:
    page = new_page()
    page.goto(f"{server}/#/new")
    page.select_option("#pipeline", "ticker")
    page.fill("#field-marker", "from-the-form")
    page.fill("#field-count", "12")
    page.fill("#field-interval_ms", "150")
    assert '"count": 12' in page.input_value("#input-json")  # the fields write the JSON input
    screenshot(page, "form-ticker")
    page.click("#start-run")

    page.wait_for_url("**/#/runs/run_*")
    run_id = page.url.rsplit("/", 1)[1]
    ticks_at_least(page, 3)
    # the events arrive while the run is still going, not all at the end
    assert page.get_attribute("#run-view", "data-status") == "running"
    assert page.locator("#ticks tr").count() < 12
    assert page.get_attribute("#run-view", "data-connection") == "live"
    screenshot(page, "run-ticker-live")

    assert_complete(page, run_id, server, owner, ticks=12)
    assert page.get_attribute("#ticks-progress-bar", "value") == "1"
    assert '"marker": "from-the-form"' in page.inner_text("#run-output")
    assert page.locator("#cancel-run").is_hidden()
    screenshot(page, "run-ticker-done")


def test_a_reload_mid_run_continues_the_stream_without_duplicates(server: str, owner: str, new_page: NewPage) -> None:
    # 15 s: still running after the reload, with 4 test processes on 2 cores (3 s was not)
    run = start_run(server, owner, "ticker", {"marker": "reload", "count": 150, "interval_ms": 100})
    page = new_page()
    page.goto(f"{server}/#/runs/{run['run_id']}")
    ticks_at_least(page, 6)

    cursors = record_streams(page)
    page.reload()
    page.wait_for_selector("#run-view[data-connection=live]")
    # the page remembered where it was (sessionStorage) and went on from its history's end
    remembered = int(page.get_attribute("#run-view", "data-resumed-from") or 0)
    assert remembered >= 7
    assert cursors and cursors[0] is not None and int(cursors[0]) >= remembered
    assert page.get_attribute("#run-view", "data-status") == "running"
    screenshot(page, "run-after-reload")

    assert_complete(page, run["run_id"], server, owner, ticks=150)
    assert len(cursors) == 1  # one stream after the reload, to the end


def test_a_dropped_connection_resumes_with_last_event_id(
    proxy: CuttableProxy, server: str, owner: str, new_page: NewPage
) -> None:
    # The run must still be going when the network goes: the page is opened
    # before it starts, and it lasts 10 s (at 4 s, a loaded CI machine once opened
    # the page after the run had ended, and there was no stream left to cut).
    page = new_page()
    run = start_run(server, owner, "ticker", {"marker": "drop", "count": 40, "interval_ms": 250})
    page.goto(f"{proxy.url}/#/runs/{run['run_id']}")
    ticks_at_least(page, 5)
    cursors = record_streams(page)
    assert page.get_attribute("#run-view", "data-ended") != "true", "the run ended before the cut: nothing to resume"

    # the network goes away: the stream is cut and reconnecting fails until it is back
    page.context.set_offline(True)
    page.wait_for_function("!navigator.onLine")
    assert proxy.cut() > 0
    wait_state(page, "offline", "reconnecting")
    seen_before = int(page.get_attribute("#run-view", "data-last-seq") or 0)
    time.sleep(1.0)  # the run goes on meanwhile
    screenshot(page, "run-connection-lost")
    assert int(page.get_attribute("#run-view", "data-last-seq") or 0) == seen_before
    page.context.set_offline(False)

    resumed(page)
    assert page.inner_text("#connection") in (f"live (resumed after event {seen_before})", "ended")
    assert_complete(page, run["run_id"], server, owner, ticks=40)
    # it resumed from exactly the last event it had, and each cursor moved forward
    assert str(seen_before) in cursors
    assert (page.get_attribute("#run-view", "data-cursors") or "").split()[1:] == [str(seen_before)]
    assert [int(c) for c in cursors if c is not None] == sorted(int(c) for c in cursors if c is not None)

    # a second cut, without going offline: the page reconnects at once with the right cursor
    run = start_run(server, owner, "ticker", {"marker": "cut", "count": 30, "interval_ms": 100})
    page.goto(f"{proxy.url}/#/runs/{run['run_id']}")
    ticks_at_least(page, 5)
    cursors.clear()
    proxy.cut()
    resumed(page)
    assert cursors and all(c is not None and int(c) >= 5 for c in cursors)
    assert_complete(page, run["run_id"], server, owner, ticks=30)
    started_from = (page.get_attribute("#run-view", "data-cursors") or "").split()
    assert len(started_from) == 2 and started_from[1] == cursors[-1]


def test_the_runs_list_filters_by_status_and_pipeline(server: str, owner: str, new_page: NewPage) -> None:
    good = start_run(server, owner, "ticker", {"marker": "ok", "count": 3})
    bad = start_run(server, owner, "ticker", {"marker": "bad", "count": 5, "fail_at": 2})
    chat = start_run(server, owner, "chat", {"message": "hello"})
    for run in (good, bad, chat):
        wait_finished(server, owner, run["run_id"])

    page = new_page()
    page.goto(f"{server}/#/runs")
    assert wait_rows(page, 3) == {good["run_id"], bad["run_id"], chat["run_id"]}
    assert page.locator("#filter-scope").count() == 0  # not an admin: own runs only
    screenshot(page, "runs-list")

    page.select_option("#filter-status", "failed")
    assert wait_rows(page, 1, status="failed") == {bad["run_id"]}
    assert "status=failed" in page.url  # the filters are in the address, so a reload keeps them

    page.select_option("#filter-status", "")
    page.select_option("#filter-pipeline", "chat")
    assert wait_rows(page, 1, pipeline="chat") == {chat["run_id"]}

    page.select_option("#filter-status", "succeeded")
    page.select_option("#filter-pipeline", "ticker")
    assert wait_rows(page, 1, status="succeeded", pipeline="ticker") == {good["run_id"]}
    page.reload()
    assert wait_rows(page, 1, status="succeeded", pipeline="ticker") == {good["run_id"]}
    assert page.input_value("#filter-pipeline") == "ticker"

    # the list is live: a new run appears without a reload
    newer = start_run(server, owner, "ticker", {"marker": "late", "count": 1})
    wait_finished(server, owner, newer["run_id"])
    page.wait_for_selector(f"#runs-body tr[data-run-id='{newer['run_id']}']")

    # a failed run's page highlights its error
    page.goto(f"{server}/#/runs/{bad['run_id']}")
    page.wait_for_selector("#run-view[data-ended=true]")
    alert = page.locator("#run-alerts .notice-error")
    assert "ticker failed at 2" in alert.first.inner_text()
    assert page.get_attribute("#run-view", "data-status") == "failed"
    assert tick_indexes(page) == [0, 1]
    screenshot(page, "run-failed")


def test_the_session_page_shows_the_conversation(server: str, owner: str, new_page: NewPage) -> None:
    page = new_page()
    page.goto(f"{server}/#/new?pipeline=chat")
    page.fill("#field-message", "Hi, my name is Ada.")
    page.fill("#session-id", "")
    page.click("#start-run")
    page.wait_for_selector("#run-view[data-ended=true]")
    assert "Nice to meet you, Ada" in page.inner_text("#run-text")

    # the next turn continues the same session
    page.click("text=continue it")
    page.wait_for_selector("#field-message")
    session_id = page.input_value("#session-id")
    assert session_id.startswith("ses_")
    page.fill("#field-message", "What is my name?")
    page.click("#start-run")
    page.wait_for_selector("#run-view[data-ended=true]")
    assert "Your name is Ada." in page.inner_text("#run-text")

    page.click(f"#run-meta a[href='#/sessions/{session_id}']")
    page.wait_for_function("document.querySelectorAll('#history li').length === 4")
    roles = page.eval_on_selector_all("#history li", "items => items.map((li) => li.dataset.role)")
    assert roles == ["user", "assistant", "user", "assistant"]
    assert "Your name is Ada." in page.inner_text("#history li:last-child")
    page.wait_for_function("document.querySelectorAll('#session-runs tr[data-run-id]').length === 2")
    assert page.inner_text("#session-status") == "idle"
    screenshot(page, "session")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    screenshot(page, "session-narrow")


def test_a_research_run_shows_phases_progress_and_text(
    server: str, owner: str, new_page: NewPage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNYARD_DEMO_SPEED", "0.3")  # the simulated delays, shortened
    page = new_page()
    page.goto(f"{server}/#/new?pipeline=research")
    page.fill("#field-topic", "durable event streams")
    page.click("#start-run")
    page.wait_for_selector("#phases li[data-phase=search]")
    page.wait_for_selector("#run-view[data-ended=true]")
    phases = page.eval_on_selector_all("#phases li", "lis => lis.map((li) => [li.dataset.phase, li.dataset.status])")
    assert phases == [["plan", "done"], ["search", "done"], ["read", "done"], ["write", "done"]]
    assert page.get_attribute("#run-progress-bar", "value") == "1"
    assert page.inner_text("#run-text").startswith("# Research report: durable event streams")
    assert page.locator("#activity li[data-type=finding]").count() == 5
    page.click("#raw-events summary")
    screenshot(page, "run-research")


def test_the_counters_show_live_numbers(server: str, owner: str, new_page: NewPage) -> None:
    page = new_page()
    page.goto(f"{server}/#/runs")
    page.wait_for_function("document.querySelector('#counter-queued').dataset.value !== ''")
    run = start_run(server, owner, "ticker", {"marker": "busy", "count": 300, "interval_ms": 50})
    page.wait_for_function("Number(document.querySelector('#counter-active').dataset.value) >= 1")
    page.wait_for_function("Number(document.querySelector('#counter-rate').dataset.value) > 0")
    assert page.get_attribute("#counter-queued", "data-value") is not None
    screenshot(page, "counters")

    # and the run's page cancels it
    page.click(f"#runs-body a[href='#/runs/{run['run_id']}']")
    page.wait_for_selector("#run-view[data-status=running]")
    page.click("#cancel-run")
    page.wait_for_selector("#run-view[data-ended=true][data-status=cancelled]")
    assert wait_finished(server, owner, run["run_id"])["status"] == "cancelled"
    assert page.locator("#run-alerts .notice-error").count() == 0  # cancelled is not an error
    assert "cancelled" in page.inner_text("#run-alerts .notice-warn")


def test_with_jwt_auth_the_page_asks_for_a_token_and_uses_it(tmp_path: Path, new_page: NewPage) -> None:
    secret = "dashboard-test-secret-0123456789abcdef"
    app = make_app(store=f"sqlite:///{tmp_path}/jwt.db", drain_s=0.2, auth="jwt", jwt_secret=secret)
    token = jwt.encode({"sub": "dash-jwt", "exp": int(time.time()) + 600}, secret, algorithm="HS256")
    with serve_in_thread(app) as url:
        page = new_page()
        page.goto(f"{url}/#/runs")
        page.wait_for_selector("#identity-dialog[open]")  # the first 401 opens it
        assert "bearer token" in page.inner_text("#identity-reason")
        page.fill("#identity-token", token)
        page.click("#identity-save")
        assert page.inner_text("#who") == "dash-jwt"  # the token's sub

        page.goto(f"{url}/#/new")
        page.fill("#field-count", "5")
        page.fill("#field-interval_ms", "20")
        page.click("#start-run")
        page.wait_for_selector("#run-view[data-ended=true][data-status=succeeded]")  # the stream sent it too
        assert tick_indexes(page) == list(range(5))
        page.close()


def test_under_jwt_an_admin_sees_every_owners_runs(tmp_path: Path, new_page: NewPage) -> None:
    """Admins exist only under an auth mode that proves who is asking (RUNYARD_AUTH=jwt)."""
    secret = "dashboard-test-secret-0123456789abcdef"
    app = make_app(
        store=f"sqlite:///{tmp_path}/admin.db", drain_s=0.2, auth="jwt", jwt_secret=secret, admin_subjects="dash-root"
    )

    def bearer(sub: str) -> str:
        return jwt.encode({"sub": sub, "exp": int(time.time()) + 600}, secret, algorithm="HS256")

    with serve_in_thread(app) as url:
        carol = {"Authorization": f"Bearer {bearer('carol')}"}
        created = httpx.post(f"{url}/v1/runs", json={"pipeline": "ticker", "input": {"marker": "c"}}, headers=carol)
        assert created.status_code == 201, created.text
        row = f"#runs-body tr[data-run-id='{created.json()['run_id']}']"

        admin = new_page()
        admin.add_init_script(f"localStorage.setItem('runyard.token', {json.dumps(bearer('dash-root'))})")
        admin.goto(f"{url}/#/runs?pipeline=ticker")
        admin.wait_for_selector("#filter-scope")
        admin.wait_for_selector(row)
        assert "every owner's" in admin.inner_text("#runs-summary")
        admin.select_option("#filter-scope", "mine")
        admin.wait_for_selector(row, state="detached")
        admin.close()
