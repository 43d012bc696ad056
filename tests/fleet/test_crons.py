"""Each due time of a cron makes exactly one run with several worker processes
(issue 13): every worker's scheduler tries every due time, and the store lets
one of them claim it, in the transaction that creates its run. Real time: an
every-minute cron over three due times (about three minutes)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.remote import OWNER

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

DUE_TIMES = 2
PERIOD_S = 60.0
SLACK_S = 20.0  # a tick, a claim and a short run after each due time, on a busy machine


def seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def cron_runs(client: httpx.Client, cron_id: str) -> list[dict[str, Any]]:
    response = client.get("/v1/runs", params={"limit": 200})
    assert response.status_code == 200, response.text
    return [run for run in response.json()["runs"] if run["metadata"].get("cron_id") == cron_id]


@pytest.mark.timeout(240)  # real time: up to a minute to the first due time, one more period
def test_an_every_minute_cron_makes_one_run_per_due_time_with_two_workers(fleet: Fleet) -> None:
    api = fleet.start("api")
    fleet.start("worker")
    fleet.start("worker")
    with httpx.Client(base_url=api.url, headers=OWNER, timeout=30) as client:
        body = {"pipeline": "nap", "input": {"seconds": 0.1}, "schedule": "* * * * *"}
        created = client.post("/v1/crons", json=body)
        assert created.status_code == 201, created.text
        cron = created.json()
        first_due = seconds(cron["next_run_at"])
        last_due = first_due + (DUE_TIMES - 1) * PERIOD_S
        deadline = last_due + SLACK_S
        while True:  # until the last due time has fired and every run ended
            current = client.get(f"/v1/crons/{cron['cron_id']}").json()
            runs = cron_runs(client, cron["cron_id"])
            moved_on = seconds(current["next_run_at"]) > last_due
            if moved_on and len(runs) >= DUE_TIMES and all(run["status"] == "succeeded" for run in runs):
                break
            assert time.time() < deadline, (current, runs)
            time.sleep(0.5)
        assert client.patch(f"/v1/crons/{cron['cron_id']}", json={"enabled": False}).status_code == 200
    created_at = sorted(seconds(run["created_at"]) for run in runs)
    assert len(runs) == DUE_TIMES, runs  # one per due time: no worker fired a time another had
    # each run belongs to its own due time: created after it, before the next
    for due_index, at in enumerate(created_at):
        due = first_due + due_index * PERIOD_S
        assert due <= at < due + PERIOD_S, (due_index, created_at)
