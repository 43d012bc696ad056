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
import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runyard import Settings
from runyard.http.middleware import new_request_id
from runyard.models import Run, RunStatus
from runyard.observability.logs import ConsoleFormatter, JSONFormatter, configure_logging, log_run
from tests.governance.support import wait_until
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


def test_new_request_ids_are_unique_here_and_in_a_forked_child() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch("[0-9a-f]{16}", request_id) for request_id in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, then out at once (no test teardown in a fork)
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    assert len(from_child) == 16 and from_child[:8] != new_request_id()[:8]  # its own prefix


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


def test_a_json_line_has_its_time_in_utc_to_the_millisecond_and_its_extras_in_order() -> None:
    formatter = JSONFormatter()
    lines = []
    for created in (1_764_000_000.0, 1_764_000_000.999, 1_764_000_061.5):  # two in one second, one later
        extra = {"b": 1, "a": 2}
        record = logging.getLogger("t").makeRecord("t", logging.INFO, "", 0, "%s!", ("hi",), None, extra=extra)
        record.created, record.msecs = created, (created - int(created)) * 1000
        lines.append(json.loads(formatter.format(record)))
    assert [line["ts"] for line in lines] == [
        "2025-11-24T16:00:00.000Z",
        "2025-11-24T16:00:00.999Z",
        "2025-11-24T16:01:01.500Z",
    ]
    assert list(lines[0]) == ["ts", "level", "logger", "message", "b", "a"]
    assert lines[0]["message"] == "hi!"


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


# -- issue 10: a run's life, one JSON line per transition ------------------------------

LIFE_FIELDS = ("run_id", "session_id", "owner", "pipeline", "attempt")


def life_of(lines: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "runyard.runs" and line["run_id"] == run_id]


async def test_a_runs_creation_start_and_end_are_json_lines_with_its_ids(lines: list[dict[str, Any]]) -> None:
    """Issue 10: no log line carried a run's id when it was created, started or
    ended; an operator could not grep a run."""
    async with make_app(store="memory://").running() as rt:
        run = await rt.create_run("grepper", "nap", {"seconds": 0.01})
        assert await rt.wait(run, 10) is not None
    life = life_of(lines, run.run_id)
    assert [line["transition"] for line in life] == ["created", "started", "ended"]
    for line in life:
        assert [line[name] for name in LIFE_FIELDS] == [run.run_id, run.session_id, "grepper", "nap", 1]
        assert line["level"] == "info" and line["message"] == f"run {run.run_id} {line['transition']}"
    assert (life[-1]["status"], life[-1]["code"]) == ("succeeded", None)
    assert life[1]["worker_id"] == rt.engine.worker_id


async def test_a_run_handed_back_at_shutdown_and_its_next_attempt_are_logged(
    lines: list[dict[str, Any]], tmp_path: Any
) -> None:
    db = f"sqlite:///{tmp_path}/r.db"
    async with make_app(store=db, drain_s=0).running() as rt:
        run = await rt.create_run("grepper", "nap_retry", {"seconds": 30})
        await wait_until(lambda: rt.engine.active == 1)
    async with make_app(store=db).running() as rt:
        await rt.cancel_run("grepper", run.run_id)
        assert await rt.wait(run, 10) is not None
    life = life_of(lines, run.run_id)
    transitions = [(line["transition"], line["attempt"]) for line in life]
    assert transitions[:3] == [("created", 1), ("started", 1), ("handed_back", 1)]
    assert life[2]["next_attempt"] == 1 and life[2]["reason"] == "drain", "a drain uses up no retry"
    assert transitions[-1] == ("ended", 1) and life[-1]["status"] == "cancelled"


def test_the_waiting_hook_logs_a_run_like_every_other_transition(lines: list[dict[str, Any]]) -> None:
    """``waiting`` (a run parked on ``ctx.ask``) has its line ready for the status to come."""
    run = Run("run_1", "ses_1", "owner_1", "chat", RunStatus.RUNNING, None, 0.0, attempt=3)
    log_run("waiting", run, question="which city?")
    (line,) = life_of(lines, "run_1")
    assert [line[name] for name in LIFE_FIELDS] == ["run_1", "ses_1", "owner_1", "chat", 3]
    assert (line["transition"], line["question"]) == ("waiting", "which city?")
