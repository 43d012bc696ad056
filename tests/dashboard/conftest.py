"""The dashboard in a real browser: Debian's Chromium driven by Playwright.

The browser is the system's (``/usr/bin/chromium``, from Debian's ``chromium``
package); Playwright never downloads one. Without it the tests are skipped,
except under ``CI=true``, where a missing browser fails them (``.ci/run``
installs it).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.dashboard.proxy import CuttableProxy
from tests.support import make_app, serve_in_thread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = os.environ.get("RUNYARD_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"
# A page waits at most this long for anything; every scenario is a few seconds
# long alone, but 4 test processes share 2 cores in CI, and 15 s was once not enough.
WAIT_MS = 45_000

NewPage = Callable[..., "Page"]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser tests are required in CI: {reason}", pytrace=False)
    pytest.skip(f"{reason}; with CI=true these tests fail instead")


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless system Chromium for the whole package."""
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo app on SQLite, as ``runyard demo`` serves it."""
    path = tmp_path_factory.mktemp("dashboard") / "runyard.db"
    app = make_app(store=f"sqlite:///{path}", drain_s=0.2)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="package")
def proxy(server: str) -> Iterator[CuttableProxy]:
    """A relay in front of ``server`` whose connections a test can cut."""
    host, port = server.removeprefix("http://").split(":")
    relay = CuttableProxy(host, int(port))
    yield relay
    relay.close()


@pytest.fixture
def owner() -> str:
    """A fresh owner (client id) per test, so that each test sees only its own runs."""
    return f"dash-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def new_page(browser: Browser, owner: str) -> Iterator[NewPage]:
    """``new_page(client_id=owner)``: a page in a fresh browser context acting as that client id.
    Uncaught page errors fail the test."""
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_page(client_id: str = owner) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script(f"localStorage.setItem('runyard.client_id', {json.dumps(client_id)})")
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``tests/screenshots/<name>.png`` for review."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header lands mid-page
    page.screenshot(path=str(path), full_page=True)
    return path
