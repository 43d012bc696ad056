"""Webhooks across a fleet (issue 13): two worker processes deliver one outbox
on PostgreSQL; every run's delivery arrives once, never twice at the same
moment (a claim leases its deliveries with ``FOR UPDATE SKIP LOCKED``), and the
fleet counts exactly one success per run."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from runyard.webhooks import verify_signature
from tests.fleet.conftest import Fleet
from tests.http.test_system import sample
from tests.remote import OWNER
from tests.support import ServerProcess
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

RUNS = 60
SECRET = "whsec_fleet"
HOOKS = {"RUNYARD_WEBHOOK_SECRET": SECRET, "RUNYARD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"}


async def create_runs(url: str, webhook: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, headers=OWNER, timeout=30) as client:
        body = {"pipeline": "nap", "input": {"seconds": 0}, "webhook": webhook}
        responses = await asyncio.gather(*(client.post("/v1/runs", json=body) for _ in range(RUNS)))
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses if r.status_code != 201][:3]
    return [r.json()["run_id"] for r in responses]


def test_two_workers_deliver_each_run_once(fleet: Fleet) -> None:
    api = fleet.start("api", **HOOKS)
    workers = [fleet.start("worker", **HOOKS), fleet.start("worker", **HOOKS)]
    # each request held a while: two deliveries of one run at once would overlap here
    with Receiver(hold_s=0.05).running() as receiver:
        run_ids = asyncio.run(create_runs(api.url, receiver.url))
        deliveries = receiver.wait_for(RUNS, timeout_s=60)
    assert Counter(d.run_id for d in deliveries) == Counter(run_ids)  # each run once, none other
    assert receiver.overlaps == []
    assert all(verify_signature(d.body, d.signature, SECRET) for d in deliveries)
    assert {json.loads(d.body)["status"] for d in deliveries} == {"succeeded"}
    # a delivery is counted, then taken off the outbox, just after the receiver answered it
    assert wait_until(lambda: delivered(workers) == RUNS and not fleet.query("SELECT run_id FROM webhook_outbox"))
    assert delivered(workers) == RUNS


def delivered(workers: list[ServerProcess]) -> float:
    """Successful deliveries counted by the workers, together."""
    return sum(
        sample(httpx.get(f"{w.url}/metrics").text, "runyard_webhook_deliveries_total", result="delivered") or 0
        for w in workers
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
