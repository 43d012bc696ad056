"""The calls tests make on a runyard server running in another process (by URL)."""

from __future__ import annotations

import time
from typing import Any

import httpx

OWNER = {"X-Client-Id": "remote"}
FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}


def create(url: str, pipeline: str, input: Any) -> str:
    """A new run's id."""
    response = httpx.post(f"{url}/v1/runs", json={"pipeline": pipeline, "input": input}, headers=OWNER)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def snapshot(url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/runs/{run_id}", headers=OWNER)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_until(url: str, run_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    """The run's snapshot once its status is one of ``statuses``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = snapshot(url, run_id)
        if current["status"] in statuses:
            return current
        time.sleep(0.02)
    raise AssertionError(f"{run_id} never reached {statuses}: {snapshot(url, run_id)}")


def stored_events(url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's whole event log, as ``/events`` pages it."""
    response = httpx.get(f"{url}/v1/runs/{run_id}/events", params={"limit": 10_000}, headers=OWNER)
    events: list[dict[str, Any]] = response.json()["events"]
    return events
