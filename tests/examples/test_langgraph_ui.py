"""examples/langgraph_ui: the chat page built on ``useStream``
(``@langchain/langgraph-sdk/react``), served by Vite whose ``/langgraph``
requests go to a real runyard serving the demo pipelines, in the system's
Chromium. Two turns in one thread: the second reply remembers the first, so
the page's thread is the session the chat pipeline keeps its memory in.

Needs the example's packages (``make node-deps``: ``npm ci`` from its lock)
and Chromium; without them the test is skipped, except under ``CI=true``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support import REPO, free_port, make_app, serve_in_thread

pytestmark = [pytest.mark.server, pytest.mark.browser]
EXAMPLE = REPO / "examples" / "langgraph_ui"
CHROMIUM = os.environ.get("RUNYARD_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 20_000


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the example's browser test is required in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason}; with CI=true this test fails instead")


@pytest.fixture
def page_url() -> Iterator[str]:
    """The example's dev server (Vite), in front of the demo app."""
    node = shutil.which("node")
    vite = EXAMPLE / "node_modules" / "vite" / "bin" / "vite.js"
    if node is None or not vite.is_file():
        unavailable("node, or the example's node_modules, is missing (make node-deps)")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    assert node is not None
    with serve_in_thread(make_app(store="memory://")) as runyard:
        port = free_port()
        command = [node, str(vite), "--port", str(port), "--strictPort", "--host", "127.0.0.1"]
        server = subprocess.Popen(
            command, cwd=EXAMPLE, env={**os.environ, "RUNYARD_URL": runyard}, stdout=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url, server)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=10)


def wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the example's Vite server did not start")


def test_the_use_stream_chat_page_streams_replies_in_one_thread(page_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{page_url}/?owner=ui-{uuid.uuid4().hex[:8]}")
            say = page.locator("input[name=message]")
            replies = page.locator("[data-testid=reply]")

            say.fill("My name is Ada.")
            say.press("Enter")
            page.wait_for_function("document.querySelectorAll('[data-testid=reply]')[0]?.textContent.includes('Ada')")
            thread = page.locator("[data-testid=thread]").inner_text()
            assert thread.startswith("ses_")

            page.wait_for_selector("input[name=message]:not([disabled])")
            say.fill("What is my name?")
            say.press("Enter")
            # the reply is redrawn as streamed tokens give way to the run's final
            # values: wait for the whole text, not for a first sight of the name
            expect(replies.nth(1)).to_have_text("chat: Your name is Ada.")
            assert page.locator("[data-testid=thread]").inner_text() == thread  # the same thread: one session
        finally:
            browser.close()
