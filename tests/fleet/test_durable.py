"""Durable work across a fleet on PostgreSQL and Redis: an answer posted to
either API process resumes its run on a worker, a sleep ends on time whichever
worker is left, and a worker stalled past its lease cannot record a step of a
run that moved on."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.fake_api import FakeAPI, serve_fake_api
from tests.fleet.conftest import Fleet
from tests.remote import FINISHED, OWNER, create, snapshot, stored_events, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def api() -> Iterator[tuple[FakeAPI, str]]:
    fake = FakeAPI(delay_s=0.0)
    with serve_fake_api(fake) as url:
        yield fake, url


def events_once(events: list[dict[str, Any]]) -> Counter[str]:
    """How often each of the pipeline's own and the steps' events appears."""
    return Counter(repr((e["type"], e["data"])) for e in events if e["type"] not in ("status", "end", "error"))


def seconds_between(earlier: dict[str, Any], later: dict[str, Any]) -> float:
    return (datetime.fromisoformat(later["ts"]) - datetime.fromisoformat(earlier["ts"])).total_seconds()


def test_questions_answered_through_either_api_process_resume_the_run_on_a_worker(
    fleet: Fleet, api: tuple[FakeAPI, str]
) -> None:
    apis = [fleet.start("api"), fleet.start("api")]
    fleet.start("worker")
    fleet.start("worker")
    run_id = create(apis[0].url, "interview", None)
    for i, answer in enumerate(["Ada", "green", 36]):
        asked = wait_until(apis[i % 2].url, run_id, {"waiting"})
        response = httpx.post(
            f"{apis[(i + 1) % 2].url}/v1/runs/{run_id}/input",
            json={"value": answer, "ask_id": asked["waiting_for"]["ask_id"]},
            headers=OWNER,
        )
        assert response.status_code == 202, response.text
    final = wait_until(apis[0].url, run_id, FINISHED)
    assert final["output"] == {"name": "Ada", "colour": "green", "age": 36}
    events = stored_events(apis[1].url, run_id)
    answered = [e for e in events if e["type"] == "input.received"]
    resumed = [e for e in events if e["type"] == "status" and e["data"]["status"] == "running"][1:]
    assert len(answered) == len(resumed) == 3
    for received, running in zip(answered, resumed, strict=True):
        # a wake signal through Redis, not the next poll of some worker
        assert seconds_between(received, running) < 0.5
    assert max(events_once(events).values()) == 1


def test_a_sleep_ends_on_time_on_whichever_worker_is_left(fleet: Fleet, api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    front = fleet.start("api")
    fleet.start("worker")
    fleet.start("worker")
    run_id = create(front.url, "stages", {"stages": 2, "api": url, "sleep_s": 3.0})
    wait_until(front.url, run_id, {"waiting"})
    sleeper = fleet.query("SELECT worker_id FROM runs WHERE run_id = $1", run_id)
    assert sleeper == [(None,)], "a sleeping run holds no worker"
    fleet.processes[1].kill()  # one worker gone; the other holds every timer
    final = wait_until(front.url, run_id, FINISHED, timeout=30)
    assert final["status"] == "succeeded", final
    events = stored_events(front.url, run_id)
    asleep = next(e for e in events if e["type"] == "status" and e["data"]["status"] == "waiting")
    woken = next(e for e in events if e["type"] == "status" and e["data"].get("reason") == "slept")
    assert 3.0 - 0.05 <= seconds_between(asleep, woken) <= 3.0 + 1.0
    assert Counter(fake.owners) == {"stage1": 1, "stage2": 1}


def test_a_worker_stalled_in_a_step_past_its_lease_cannot_record_it(fleet: Fleet, api: tuple[FakeAPI, str]) -> None:
    fake, url = api
    front = fleet.start("api")
    fleet.start("worker")
    fleet.start("worker")
    run_id = create(front.url, "stages", {"stages": 2, "api": url, "stage_s": 1.0})
    deadline = time.monotonic() + 20
    while Counter(fake.owners)["stage1"] < 1:
        assert time.monotonic() < deadline, "stage 1 was never called"
        time.sleep(0.02)
    stalled = fleet.worker_of(run_id)
    assert stalled.proc is not None
    stalled.proc.send_signal(signal.SIGSTOP)  # mid-call: its step is not recorded yet
    try:
        deadline = time.monotonic() + 20
        while snapshot(front.url, run_id)["attempt"] < 2:
            assert time.monotonic() < deadline, "the run was never recovered"
            time.sleep(0.05)
    finally:
        stalled.proc.send_signal(signal.SIGCONT)  # wakes up to finish its call and record the step
    final = wait_until(front.url, run_id, FINISHED, timeout=30)
    assert (final["status"], final["attempt"]) == ("succeeded", 2)
    steps = fleet.query("SELECT name, n FROM steps WHERE run_id = $1", run_id)
    assert sorted(tuple(row) for row in steps) == [("stage1", 1), ("stage2", 1)]
    events = stored_events(front.url, run_id)
    done = [e["data"]["name"] for e in events if e["type"] == "step" and e["data"]["status"] == "done"]
    # a step is recorded in the same transaction as its ``done`` event: one each
    assert done == ["stage1", "stage2"], "the stalled worker's record of stage 1 was refused"
