"""Logs: JSON lines that say which run and which request each line is about.

Every line written inside a run carries its ``run_id``, ``session_id``,
``owner`` and ``pipeline`` (a pipeline's own ``logging`` calls too); every line
written while an HTTP request is handled carries its ``request_id``, also sent
back as ``X-Request-ID``; each request ends with one access line.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runyard import Settings
from runyard.observability.logs import ConsoleFormatter, JSONFormatter, configure_logging
from tests.support import make_app, serve_in_thread


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """Every record logged during the test, as the JSON formatter writes it."""
    captured: list[dict[str, Any]] = []
    formatter = JSONFormatter()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(json.loads(formatter.format(record)))

    handler = Capture(level=logging.INFO)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_in_thread(make_app(store="memory://")) as url:
        yield url


def test_a_pipelines_own_log_line_carries_its_runs_ids(server: str, lines: list[dict[str, Any]]) -> None:
    response = httpx.post(
        f"{server}/v1/runs/wait", json={"pipeline": "chatty", "input": "tea"}, headers={"X-Client-Id": "logger"}
    )
    run = response.json()
    (line,) = [line for line in lines if line["logger"] == "user.pipeline"]
    assert line["message"] == "thinking about tea" and line["level"] == "warning"
    assert (line["run_id"], line["session_id"], line["owner"], line["pipeline"]) == (
        run["run_id"],
        run["session_id"],
        "logger",
        "chatty",
    )
    assert "request_id" not in line  # the run executes on its worker, not in the request


def test_every_request_gets_an_id_on_its_lines_and_in_its_answer(server: str, lines: list[dict[str, Any]]) -> None:
    response = httpx.get(f"{server}/v1/runs/run_missing", headers={"X-Client-Id": "logger"})
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 16
    (access,) = [line for line in lines if line["logger"] == "runyard.http"]
    assert access["request_id"] == request_id
    assert access["message"] == "GET /v1/runs/run_missing 404"
    assert access["status"] == 404 and access["duration_ms"] >= 0
    other = httpx.get(f"{server}/healthz").headers["x-request-id"]
    assert other != request_id


def test_a_callers_request_id_is_kept_and_a_strange_one_replaced(server: str) -> None:
    assert httpx.get(f"{server}/healthz", headers={"X-Request-ID": "edge-42.a"}).headers["x-request-id"] == "edge-42.a"
    replaced = httpx.get(f"{server}/healthz", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert len(replaced) == 16


@pytest.mark.parametrize(("chosen", "formatter"), [("json", JSONFormatter), ("console", ConsoleFormatter)])
def test_the_format_and_level_come_from_the_settings(chosen: str, formatter: type[logging.Formatter]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(Settings(log_format=chosen, log_level="warning"))  # type: ignore[arg-type]
        (handler,) = root.handlers
        assert isinstance(handler.formatter, formatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_auto_is_readable_lines_on_a_terminal_and_json_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for tty, expected in ((True, ConsoleFormatter), (False, JSONFormatter)):
            terminal = io.StringIO()
            monkeypatch.setattr(terminal, "isatty", lambda tty=tty: tty)
            monkeypatch.setattr("sys.stderr", terminal)
            configure_logging(Settings(log_format="auto"))
            assert isinstance(root.handlers[0].formatter, expected)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
