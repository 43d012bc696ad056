"""A session stream across a fleet (issue 13): followed through one API process
while another API process creates the session's runs and workers execute them,
on PostgreSQL + Redis. Every event of every run arrives once, in order, live
(the heartbeat is longer than the test, so nothing waits for a poll), a cursor
resumes it exactly on the other process, and deleting the session elsewhere
ends it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import Fleet
from tests.remote import OWNER, stored_events, wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

NO_POLLING = {"RUNYARD_SSE_HEARTBEAT_S": "60"}


async def frames(client: httpx.AsyncClient, session_id: str, **headers: str) -> AsyncIterator[tuple[str, Any]]:
    """(id, event) of each frame of the session's stream, until it ends."""
    async with client.stream("GET", f"/v1/sessions/{session_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        async for block in _blocks(response):
            fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
            if "data" in fields:
                yield fields["id"], json.loads(fields["data"])


async def _blocks(response: httpx.Response) -> AsyncIterator[str]:
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            yield block


def test_a_session_followed_on_one_api_while_another_creates_its_runs(fleet: Fleet) -> None:
    follower = fleet.start("api", **NO_POLLING)
    creator = fleet.start("api", **NO_POLLING)
    fleet.start("worker")
    fleet.start("worker")
    asyncio.run(asyncio.wait_for(_scenario(follower.url, creator.url), timeout=40))


async def _scenario(follower_url: str, creator_url: str) -> None:
    async with (
        httpx.AsyncClient(base_url=follower_url, headers=OWNER, timeout=30) as follower,
        httpx.AsyncClient(base_url=creator_url, headers=OWNER, timeout=30) as creator,
    ):
        session_id = (await creator.post("/v1/sessions", json={})).json()["session_id"]
        streamed: list[tuple[str, Any]] = []
        ended, arrived = asyncio.Event(), asyncio.Event()  # arrived: an event came

        async def follow() -> None:
            async for frame in frames(follower, session_id):
                streamed.append(frame)
                arrived.set()
            ended.set()

        following = asyncio.create_task(follow())
        run_ids = []
        for i in range(3):
            body = {"pipeline": "ticker", "input": {"marker": f"r{i}", "count": 10, "interval_ms": 5}}
            created = await creator.post("/v1/runs", json={**body, "session_id": session_id})
            assert created.status_code == 201, created.text
            run_ids.append(created.json()["run_id"])
            await asyncio.to_thread(wait_until, creator_url, run_ids[-1], {"succeeded"})
        logged = [{"run_id": r, **e} for r in run_ids for e in await asyncio.to_thread(stored_events, creator_url, r)]
        while len(streamed) < len(logged):  # live: no heartbeat poll comes within the test's time
            arrived.clear()
            await arrived.wait()
        assert [event for _, event in streamed] == logged

        # the cursor is the deployment's: another API process resumes from it exactly
        middle = len(logged) // 2
        resumed = []
        async for frame in frames(creator, session_id, **{"Last-Event-ID": streamed[middle][0]}):
            resumed.append(frame)
            if len(resumed) == len(logged) - middle - 1:
                break
        assert resumed == streamed[middle + 1 :]

        # a run still napping when the session is deleted through the other process
        nap = await creator.post(
            "/v1/runs", json={"pipeline": "nap", "input": {"seconds": 30}, "session_id": session_id}
        )
        await asyncio.to_thread(wait_until, creator_url, nap.json()["run_id"], {"running"})
        assert (await creator.delete(f"/v1/sessions/{session_id}")).status_code == 204
        await asyncio.wait_for(ended.wait(), timeout=10)  # not a heartbeat later
        await following
        assert streamed[-1][1]["run_id"] == nap.json()["run_id"] and streamed[-1][1]["type"] == "end"
