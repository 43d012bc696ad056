"""The long-term store across a fleet (issue 13): an item put through one API
process is what a pipeline reads on a worker, what the pipeline writes is read
through another API process, and an expired item is swept by the workers'
housekeeping from the shared PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.remote import OWNER, create, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def test_items_are_shared_by_every_process_of_the_owner_and_swept_by_the_workers(fleet: Fleet) -> None:
    first, second = fleet.start("api"), fleet.start("api")
    fleet.start("worker", RUNYARD_SWEEP_INTERVAL_S="1")
    item = {"namespace": ["users", "u1"], "key": "prefs", "value": {"theme": "dark"}}
    assert httpx.put(f"{first.url}/v1/store/items", json=item, headers=OWNER).status_code == 200
    brief = {"namespace": ["cache"], "key": "brief", "value": {"v": 1}, "ttl_s": 0.5}
    assert httpx.put(f"{first.url}/v1/store/items", json=brief, headers=OWNER).status_code == 200

    run_id = create(second.url, "recall", {"namespace": ["users", "u1"], "key": "prefs"})
    done = wait_until(second.url, run_id, {"succeeded", "failed"})

    assert done["output"]["item"]["value"] == {"theme": "dark"}
    seen = httpx.get(f"{first.url}/v1/store/items", params={"namespace": "users.u1", "key": "seen"}, headers=OWNER)
    assert seen.json()["value"] == {"by": run_id}
    deadline = time.monotonic() + 15
    while fleet.query("SELECT 1 FROM items WHERE key = 'brief'"):  # the worker's sweep, once a second
        assert time.monotonic() < deadline, "the expired item was never swept"
        time.sleep(0.1)
    assert [row["key"] for row in fleet.query("SELECT key FROM items ORDER BY key")] == ["prefs", "seen"]
