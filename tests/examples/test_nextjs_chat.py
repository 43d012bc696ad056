"""examples/nextjs_chat in a real browser: the AI SDK's ``useChat`` page, built
as its README says and served by ``vite preview`` (which passes ``/v1`` on to a
runyard server with the demo's ``chat`` pipeline), in Debian's Chromium.

Reloading the page mid-answer loses nothing: ``resume: true`` reconnects to the
chat's unfinished run and the answer appears whole, exactly once.

The example is built (``npm ci``, ``npm run build``) once per session. Without
Node, npm or Chromium the test skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from runyard.demo.chat import offline_reply
from tests.dashboard.conftest import CHROMIUM, WAIT_MS
from tests.support import REPO, free_port, make_app, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.timeout(180)]

EXAMPLE = REPO / "examples" / "nextjs_chat"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the example's browser test is required in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason}; with CI=true this test fails instead")


@pytest.fixture(scope="module")
def built() -> None:
    """The example's dependencies from its committed lock, and its page built into dist/."""
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed")
    assert npm is not None
    installed = EXAMPLE / "node_modules" / ".package-lock.json"
    lock = EXAMPLE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        _npm(npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
    _npm(npm, "run", "build")


def _npm(npm: str, *args: str) -> None:
    done = subprocess.run([npm, *args], cwd=EXAMPLE, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"npm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def page_url(built: None) -> Iterator[str]:
    """``vite preview`` of the built page, its /v1 passed on to a server of the demo app."""
    with serve_in_thread(make_app(store="memory://", drain_s=0.2)) as runyard:
        port = free_port()
        preview = [shutil.which("node") or "node", "node_modules/vite/bin/vite.js", "preview"]
        command = [*preview, "--host", "127.0.0.1", "--port", str(port), "--strictPort"]
        env = {**os.environ, "RUNYARD_URL": runyard}
        with subprocess.Popen(command, cwd=EXAMPLE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as vite:
            try:
                url = f"http://127.0.0.1:{port}"
                _wait_until_up(url, vite)
                yield url
            finally:
                vite.terminate()


def _wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"vite preview exited: {process.stderr.read() if process.stderr else ''!r}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "vite preview did not start"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, page_url: str) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_url)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_reloading_mid_answer_shows_the_whole_answer_exactly_once(page: Page, page_url: str) -> None:
    # a long message makes a long answer (the demo's offline responder quotes it, a word every 30 ms)
    message = " ".join(f"word{n}-{uuid.uuid4().hex[:4]}" for n in range(60))
    reply = offline_reply([{"role": "user", "content": message}])
    answers = page.locator("li[data-role=assistant]")

    page.get_by_label("Message").fill(message)
    page.get_by_role("button", name="Send").click()
    page.wait_for_function(
        "() => (document.querySelector('li[data-role=assistant]')?.textContent ?? '').includes('word3-')"
    )
    heard = answers.first.text_content() or ""
    assert len(heard) < len(reply), "the page is reloaded mid-answer"

    page.reload()

    page.locator("li[data-role=assistant]", has_text="what you said before.").wait_for()
    page.locator("p[data-status=ready]").wait_for()
    assert page.locator("li[data-role=user]").all_text_contents() == [message]
    assert answers.all_text_contents() == [reply], "the whole answer, once"
    owner = page.evaluate("localStorage.getItem('runyard.client_id')")
    runs = httpx.get(f"{page_url}/v1/runs", headers={"X-Client-Id": owner}, timeout=10).json()["runs"]
    assert [(run["input"], run["status"]) for run in runs] == [({"message": message}, "succeeded")], "one run"
