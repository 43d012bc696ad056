"""Opening a run's stream (``Runtime.join_run``, ``events.stream.Joined``): the
run's channel is joined before the run is read, so a stream from a cursor the
run has not passed reads the run and no history, loses nothing published
meanwhile, and every way the request ends leaves the channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runyard.app import Runyard
from runyard.models import Event, Run
from tests.governance.support import wait_until
from tests.support import make_app

OWNER = {"X-Client-Id": "opener"}
LATER = {"pipeline": "ticker", "input": {"marker": "m", "count": 3}, "after_s": 60}  # queued, no event yet


@contextlib.asynccontextmanager
async def served(**settings: Any) -> AsyncIterator[tuple[Runyard, httpx.AsyncClient]]:
    app = make_app(store="memory://", drain_s=0.2, **settings)
    async with app.running():
        transport = httpx.ASGITransport(app=app.http())
        async with httpx.AsyncClient(transport=transport, base_url="http://runyard", headers=OWNER) as client:
            yield app, client


async def created(client: httpx.AsyncClient, body: dict[str, Any] = LATER) -> str:
    response = await client.post("/v1/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    return [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]


def count_history_reads(app: Runyard, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    reads: list[tuple[str, int]] = []
    read_events = app.runtime.store.read_events

    async def counted(run_id: str, after: int, limit: int) -> list[Event]:
        reads.append((run_id, after))
        return await read_events(run_id, after, limit)

    monkeypatch.setattr(app.runtime.store, "read_events", counted)
    return reads


async def stream_until_cancelled(app: Runyard, client: httpx.AsyncClient, run_id: str) -> httpx.Response:
    """The run's whole stream, opened at once; the run is cancelled once the stream follows it."""
    stream = asyncio.create_task(client.get(f"/v1/runs/{run_id}/stream"))
    await wait_until(lambda: app.runtime.hub.subscribers > 0)
    assert (await client.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
    return await asyncio.wait_for(stream, 10)


async def test_a_stream_opened_before_its_run_s_first_event_reads_no_history(monkeypatch: pytest.MonkeyPatch) -> None:
    async with served() as (app, client):
        run_id = await created(client)
        reads = count_history_reads(app, monkeypatch)
        events = events_of(await stream_until_cancelled(app, client, run_id))
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "end" and events[-1]["data"]["status"] == "cancelled"
        assert reads == []  # everything came through the channel
        # a stream from a cursor the run has passed reads its history, as before
        assert events_of(await client.get(f"/v1/runs/{run_id}/stream?after=1")) == events[1:]
        assert reads == [(run_id, 1)]


async def test_an_event_published_between_the_join_and_the_run_read_reaches_the_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run as read says no event yet; one is persisted and published right
    after that read, before the stream starts: it was published after the join,
    so the channel has it (were the run read first, it would be lost)."""
    async with served() as (app, client):
        run_id = await created(client)
        get_run = app.runtime.store.get_run

        async def then_an_event(wanted: str) -> Run | None:
            run = await get_run(wanted)
            monkeypatch.setattr(app.runtime.store, "get_run", get_run)  # once: the stream's read
            assert run is not None and run.last_seq == 0
            await app.runtime.events.append_group(run_id, [("tick", {"i": "between"})])
            return run

        monkeypatch.setattr(app.runtime.store, "get_run", then_an_event)
        reads = count_history_reads(app, monkeypatch)
        events = events_of(await stream_until_cancelled(app, client, run_id))
        assert (events[0]["seq"], events[0]["type"], events[0]["data"]) == (1, "tick", {"i": "between"})
        assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
        assert events[-1]["type"] == "end"
        assert reads == []


async def test_every_way_a_stream_request_ends_leaves_the_run_s_channel() -> None:
    async with served(max_streams_per_owner=1) as (app, client):
        hub = app.runtime.hub
        run_id = await created(client)
        stranger = {"X-Client-Id": "stranger"}
        refusals = [
            (f"/v1/runs/run_{'0' * 32}/stream", {}, 404),  # no such run
            (f"/v1/runs/{run_id}/stream", stranger, 404),  # another owner's
            (f"/v1/runs/{run_id}/stream?after=soon", {}, 400),  # not a cursor
            (f"/v1/runs/{run_id}/stream?after=5", {}, 400),  # past the run's last event
        ]
        for path, headers, status in refusals:
            assert (await client.get(path, headers=headers)).status_code == status, path
            assert hub.subscribers == 0, path
        # one stream open takes the owner's only slot: a second one is refused
        first = asyncio.create_task(client.get(f"/v1/runs/{run_id}/stream"))
        await wait_until(lambda: hub.subscribers > 0)
        assert (await client.get(f"/v1/runs/{run_id}/stream")).status_code == 429
        assert hub.subscribers == 1
        assert (await client.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
        last = events_of(await asyncio.wait_for(first, 10))[-1]
        assert hub.subscribers == 0
        # resumed after the run's end: answered at once, nothing followed
        assert events_of(await client.get(f"/v1/runs/{run_id}/stream?after={last['seq']}")) == []
        assert hub.subscribers == 0


class HeldCaps:
    """A deployment-wide cap whose every take is answered only once ``answer`` is set."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()
        self.released: list[str] = []

    async def take(self, key: str) -> str:
        self.asked.set()
        await self.answer.wait()
        return f"lease-{key}"

    def release(self, lease: str) -> None:
        self.released.append(lease)


async def test_the_deployment_s_count_is_asked_while_the_run_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a fleet a stream's place is a round trip to Redis: it is made beside the
    run's read, not after it, and given back when the run turns out missing."""
    async with served() as (app, client):
        run_id = await created(client)
        caps = HeldCaps()
        monkeypatch.setattr(app.runtime.limits, "caps", lambda name, capacity: caps)
        get_run = app.runtime.store.get_run

        async def read_once_the_place_is_asked(wanted: str) -> Run | None:
            await asyncio.wait_for(caps.asked.wait(), 5)  # after the run's read, it would never come
            caps.answer.set()
            return await get_run(wanted)

        monkeypatch.setattr(app.runtime.store, "get_run", read_once_the_place_is_asked)
        missing = await client.get("/v1/runs/run_0123456789abcdef0123456789abcdef/stream")
        assert missing.status_code == 404, missing.text
        await wait_until(lambda: caps.released == [f"lease-{OWNER['X-Client-Id']}"])
        events = events_of(await stream_until_cancelled(app, client, run_id))
        assert events[-1]["type"] == "end"
        assert caps.released == [f"lease-{OWNER['X-Client-Id']}"] * 2
