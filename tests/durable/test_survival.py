"""Work survives what kills executions: ``kill -9`` of the worker in the middle
of a step, a drain (a deploy), and a full restart while a run waits for an
answer or a time. One ``runyard`` process on a SQLite file, killed and started
again on the same file; each stage's call is counted by a fake API on loopback,
so a call made by a process that died is counted too."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_api import FakeAPI, serve_fake_api
from tests.support import ServerProcess

APP = "tests.durable.app:app"


@pytest.fixture
def api() -> Iterator[tuple[FakeAPI, str]]:
    fake = FakeAPI(delay_s=0.0)
    with serve_fake_api(fake) as url:
        yield fake, url


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "RUNYARD_STORE": f"sqlite:///{tmp_path}/durable.db",
        "RUNYARD_LEASE_S": "2",
        "RUNYARD_DRAIN_S": "0.5",
        "RUNYARD_CANCEL_GRACE_S": "1",
    }
    process = ServerProcess(env, app=APP, output=tmp_path / "server.log")
    try:
        yield process.start()
    finally:
        process.stop()


def calls(fake: FakeAPI) -> Counter[str]:
    return Counter(fake.owners)


def snapshot(server: ServerProcess, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/runs/{run_id}", timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def until(predicate: Any, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def until_status(server: ServerProcess, run_id: str, statuses: set[str], timeout_s: float = 30.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(snapshot(server, run_id))
        return seen["status"] in statuses

    until(reached, timeout_s, f"run {run_id} to be {statuses}")
    return seen


def events(server: ServerProcess, run_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/runs/{run_id}/events", params={"limit": 10000}, timeout=5)
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()["events"]
    assert [e["seq"] for e in found] == list(range(1, len(found) + 1)), "the log is gap-free"
    return found


def start_stages(server: ServerProcess, url: str, **plan: Any) -> str:
    body = {"pipeline": "stages", "input": {"stages": 5, "stage_s": 1.5, "api": url, **plan}}
    response = httpx.post(f"{server.url}/v1/runs", json=body, timeout=5)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def emitted(log: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """The pipeline's own events and the steps', as (type, data): what must appear once."""
    return [(e["type"], e["data"]) for e in log if e["type"] not in ("status", "end", "error")]


def assert_each_stage_once_but(log: list[dict[str, Any]], cut: str) -> None:
    """Every event once, except the cut-off step's ``started`` (then its ``restarted`` marker)."""
    seen = Counter(repr(item) for item in emitted(log))
    repeated = {item: n for item, n in seen.items() if n > 1}
    assert repeated == {repr(("step", {"name": cut, "n": 1, "status": "started"})): 2}, repeated
    steps = [e["data"] for e in log if e["type"] == "step" and e["data"]["name"] == cut]
    assert [s["status"] for s in steps] == ["started", "restarted", "started", "done"]
    for i in range(1, 6):
        assert seen[repr(("stage.begin", {"i": i}))] == 1 and seen[repr(("stage.end", {"i": i}))] == 1


def test_kill_9_in_the_middle_of_stage_3_calls_stages_1_and_2_once(
    server: ServerProcess, api: tuple[FakeAPI, str]
) -> None:
    fake, url = api
    run_id = start_stages(server, url)
    until(lambda: calls(fake)["stage3"] == 1, what="stage 3 to be called")
    server.kill()
    server.start()
    done = until_status(server, run_id, {"succeeded", "failed"}, timeout_s=60)
    assert done["status"] == "succeeded", done
    assert calls(fake) == {"stage1": 1, "stage2": 1, "stage3": 2, "stage4": 1, "stage5": 1}
    assert done["attempt"] == 2, "a lost worker uses up one retry"
    assert_each_stage_once_but(events(server, run_id), cut="stage3")


def test_a_drain_hands_the_run_back_without_a_retry_and_it_resumes_past_its_steps(
    server: ServerProcess, api: tuple[FakeAPI, str]
) -> None:
    fake, url = api
    fake.held = "stage3"  # its first call outlasts the drain however slowly the machine goes
    run_id = start_stages(server, url)
    until(lambda: calls(fake)["stage3"] == 1, what="stage 3 to be called")
    server.stop()  # SIGTERM: drains for 0.5 s, then hands the run back
    fake.released.set()
    server.start()
    done = until_status(server, run_id, {"succeeded", "failed"}, timeout_s=60)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1, "a drain uses up no retry"
    assert calls(fake) == {"stage1": 1, "stage2": 1, "stage3": 2, "stage4": 1, "stage5": 1}
    log = events(server, run_id)
    assert_each_stage_once_but(log, cut="stage3")
    reasons = [e["data"].get("reason") for e in log if e["type"] == "status" and e["data"]["status"] == "queued"]
    assert reasons == ["handed_back"]


def test_a_question_is_answered_after_a_restart_of_the_server(server: ServerProcess, api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    run_id = start_stages(server, url, stage_s=0.0, ask=True)
    asked = until_status(server, run_id, {"waiting"})
    server.stop()
    server.start()
    answer = {"value": {"approve": True}, "ask_id": asked["waiting_for"]["ask_id"]}
    response = httpx.post(f"{server.url}/v1/runs/{run_id}/input", json=answer, timeout=5)
    assert response.status_code == 202, response.text
    done = until_status(server, run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert calls(fake) == {f"stage{i}": 1 for i in range(1, 6)}
    seen = Counter(repr(item) for item in emitted(events(server, run_id)))
    assert max(seen.values()) == 1, seen


def test_a_sleep_ends_on_time_across_a_restart(server: ServerProcess, api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    run_id = start_stages(server, url, stage_s=0.0, sleep_s=6.0)  # longer than a stop and a start, mostly
    asleep = until_status(server, run_id, {"waiting"})
    assert set(asleep["waiting_for"]) == {"until"}
    server.stop()
    time.sleep(0.5)
    server.start()
    back = time.time()  # a worker exists again from here
    done = until_status(server, run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert calls(fake) == {f"stage{i}": 1 for i in range(1, 6)}
    log = events(server, run_id)
    slept_at = next(e for e in log if e["type"] == "status" and e["data"].get("reason") == "slept")
    began = next(e for e in log if e["type"] == "status" and e["data"]["status"] == "waiting")
    until_ts = datetime.fromisoformat(asleep["waiting_for"]["until"]).timestamp()
    woken_ts = datetime.fromisoformat(slept_at["ts"]).timestamp()
    assert seconds(began, slept_at) >= 6.0 - 0.05, "never before its time"
    # within a second of its time, or of a worker being back if the restart outlasted it
    assert woken_ts <= max(until_ts, back) + 1.0, (woken_ts - until_ts, back - until_ts)


def seconds(earlier: dict[str, Any], later: dict[str, Any]) -> float:
    return (datetime.fromisoformat(later["ts"]) - datetime.fromisoformat(earlier["ts"])).total_seconds()
