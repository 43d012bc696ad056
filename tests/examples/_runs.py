"""What the examples' specs share: starting runs, reading their streams, waiting for them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.sse_reader import frames

FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
Event = dict[str, Any]


def owner(name: str) -> dict[str, str]:
    return {"X-Client-Id": name}


async def create(client: httpx.AsyncClient, who: str, pipeline: str, input: Any, **fields: Any) -> dict[str, Any]:
    body = {"pipeline": pipeline, "input": input, **fields}
    response = await client.post("/v1/runs", json=body, headers=owner(who))
    assert response.status_code == 201, response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


async def stream_new_run(client: httpx.AsyncClient, who: str, pipeline: str, input: Any, **fields: Any) -> list[Event]:
    """``POST /v1/runs/stream``: every event of the new run, until its ``end``."""
    body = {"pipeline": pipeline, "input": input, **fields}
    events: list[Event] = []
    async with client.stream("POST", "/v1/runs/stream", json=body, headers=owner(who)) as response:
        assert response.status_code == 200, await response.aread()
        async for frame in frames(response):
            if "id" in frame:
                events.append(frame["data"])
                if frame["event"] == "end":
                    break
    return events


async def snapshot(client: httpx.AsyncClient, who: str, run_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/runs/{run_id}", headers=owner(who))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def all_events(client: httpx.AsyncClient, who: str, run_id: str) -> list[Event]:
    response = await client.get(f"/v1/runs/{run_id}/events", headers=owner(who))
    assert response.status_code == 200, response.text
    events: list[Event] = response.json()["events"]
    return events


async def wait_finished(client: httpx.AsyncClient, who: str, run_id: str, within: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        current = await snapshot(client, who, run_id)
        if current["status"] in FINISHED:
            return current
        assert time.monotonic() < deadline, f"run {run_id} still {current['status']}"
        await asyncio.sleep(0.02)


def of_type(events: list[Event], type: str) -> list[Any]:
    return [event["data"] for event in events if event["type"] == type]


def assert_complete_log(events: list[Event], status: str = "succeeded") -> Any:
    """``seq`` 1..n without a gap or a repeat, one ``end`` last with ``status``; its output."""
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert [event["type"] for event in events].count("end") == 1
    end = events[-1]
    assert end["type"] == "end" and end["data"]["status"] == status, end
    return end["data"].get("output")
