"""Durable, resumable streams, through a real uvicorn server on SQLite."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.sse_reader import assert_gap_free, frames, read_events
from tests.support import make_app, serve_in_thread

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("streams") / "streams.db"
    # one owner ("streams") follows up to 200 runs at once here, past the default cap of 100 per owner
    with serve_in_thread(make_app(store=f"sqlite:///{db}", max_concurrent_runs=256, max_streams_per_owner=256)) as url:
        yield url


@pytest.fixture
async def client(server: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as http:
        yield http


async def start_ticker(client: httpx.AsyncClient, marker: str, count: int, interval_ms: int = 0, **extra: Any) -> str:
    body = {"pipeline": "ticker", "input": {"marker": marker, "count": count, "interval_ms": interval_ms, **extra}}
    response = await client.post("/v1/runs", json=body, headers={"X-Client-Id": "streams"})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def finish(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        snapshot: dict[str, Any] = (await client.get(f"/v1/runs/{run_id}", headers=OWNER)).json()
        if snapshot["status"] not in ("queued", "running"):
            return snapshot
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish")


OWNER = {"X-Client-Id": "streams"}


def ticks(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "tick"]


async def test_a_finished_run_of_500_events_replays_in_order_then_closes(client: httpx.AsyncClient) -> None:
    run_id = await start_ticker(client, "r500", 500)
    await finish(client, run_id)
    events = await read_events(client, run_id, headers=OWNER)
    assert_gap_free(events)
    assert [t["i"] for t in ticks(events)] == list(range(500))
    assert events[-1]["type"] == "end" and events[-1]["data"]["status"] == "succeeded"


@pytest.mark.slow
async def test_a_finished_run_of_100000_events_replays_completely(client: httpx.AsyncClient) -> None:
    run_id = await start_ticker(client, "r100k", 100_000)
    snapshot = await finish(client, run_id)
    events = await read_events(client, run_id, headers=OWNER)
    assert len(events) == snapshot["last_seq"] == 100_003
    assert_gap_free(events)
    assert events[-1]["type"] == "end"


async def test_a_late_subscriber_gets_the_history_then_the_live_events(client: httpx.AsyncClient) -> None:
    run_id = await start_ticker(client, "late", 40, interval_ms=15)
    await asyncio.sleep(0.25)  # about half the ticks are out
    events = await read_events(client, run_id, headers=OWNER)
    assert_gap_free(events)
    assert [t["i"] for t in ticks(events)] == list(range(40))


async def test_reconnecting_with_last_event_id_from_every_position_has_no_gap_or_duplicate(
    client: httpx.AsyncClient,
) -> None:
    run_id = await start_ticker(client, "every", 30)
    last_seq = (await finish(client, run_id))["last_seq"]
    for position in range(last_seq + 1):
        events = await read_events(client, run_id, last_event_id=position, headers=OWNER)
        assert [e["seq"] for e in events] == list(range(position + 1, last_seq + 1))


async def test_a_stream_cut_at_random_points_of_a_live_run_resumes_without_gap_or_duplicate(
    client: httpx.AsyncClient,
) -> None:
    run_id = await start_ticker(client, "cuts", 120, interval_ms=3)
    received: list[dict[str, Any]] = []
    rng = random.Random(7)
    while not received or received[-1]["type"] != "end":
        cursor = received[-1]["seq"] if received else 0
        received += await read_events(
            client, run_id, last_event_id=cursor, stop_after=rng.randint(1, 15), headers=OWNER
        )
    assert_gap_free(received)
    assert [t["i"] for t in ticks(received)] == list(range(120))


async def test_200_concurrent_sessions_each_see_only_their_own_events(client: httpx.AsyncClient) -> None:
    async def one(i: int) -> None:
        marker = f"iso-{i}-{random.random()}"
        run_id = await start_ticker(client, marker, 20, interval_ms=5)
        events = await read_events(client, run_id, headers=OWNER)
        assert_gap_free(events)
        assert [t["marker"] for t in ticks(events)] == [marker] * 20
        assert all(e["type"] != "tick" or run_id for e in events)

    await asyncio.gather(*(one(i) for i in range(200)))


async def test_every_subscriber_of_one_run_gets_every_event(client: httpx.AsyncClient) -> None:
    run_id = await start_ticker(client, "fan", 200, interval_ms=2)
    streams = await asyncio.gather(*(read_events(client, run_id, headers=OWNER) for _ in range(8)))
    for events in streams:
        assert_gap_free(events)
        assert len(ticks(events)) == 200
    assert all(s == streams[0] for s in streams)


async def test_the_first_event_is_never_lost_when_subscribing_right_after_creation(
    client: httpx.AsyncClient,
) -> None:
    async def one(i: int) -> None:
        run_id = await start_ticker(client, f"first-{i}", 1)
        events = await read_events(client, run_id, headers=OWNER)
        assert [e["type"] for e in events] == ["status", "tick", "status", "end"]
        assert_gap_free(events)

    await asyncio.gather(*(one(i) for i in range(50)))


async def test_a_subscriber_that_never_reads_does_not_delay_others(server: str, client: httpx.AsyncClient) -> None:
    run_id = await start_ticker(client, "slow", 400, payload_bytes=16_384)
    host, port = server.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /v1/runs/{run_id}/stream HTTP/1.1\r\nHost: x\r\nX-Client-Id: streams\r\n\r\n".encode())
    await writer.drain()  # ...and never read a byte of the ~6.5 MB answer
    try:
        started = time.monotonic()
        events = await read_events(client, run_id, headers=OWNER)
        assert len(ticks(events)) == 400
        assert time.monotonic() - started < 30
        other = await start_ticker(client, "other", 50)
        assert len(ticks(await read_events(client, other, headers=OWNER))) == 50
    finally:
        writer.close()


async def test_a_live_stream_whose_reader_pauses_gets_every_event_once_in_order(client: httpx.AsyncClient) -> None:
    # ~13 MB while the reader reads nothing for a second: the socket's buffers
    # fill, so the live writes done at delivery have to wait for the socket
    # (flow control) and the stream's own task finishes them
    run_id = await start_ticker(client, "paused", 400, interval_ms=2, payload_bytes=32_768)
    events = []
    async with client.stream("GET", f"/v1/runs/{run_id}/stream", headers=OWNER) as response:
        await asyncio.sleep(1.0)
        async for frame in frames(response):
            if "id" in frame:
                events.append(frame["data"])
    assert [tick["i"] for tick in ticks(events)] == list(range(400))
    assert events[-1]["type"] == "end"
    assert_gap_free(events)


async def test_a_silent_stream_sends_heartbeats(tmp_path: Path) -> None:
    app = make_app(store=f"sqlite:///{tmp_path}/hb.db", sse_heartbeat_s=0.2)
    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            created = await http.post("/v1/runs", json={"pipeline": "nap", "input": {"seconds": 1.2}})
            run_id = created.json()["run_id"]
            pings = 0
            async with http.stream("GET", f"/v1/runs/{run_id}/stream") as response:
                async for frame in frames(response):
                    pings += "ping" in frame.get("comments", [])
                    if frame.get("event") == "end":
                        break
            assert pings >= 3
