"""A silent stream (``runyard.events.follow``): it heartbeats, and reads the store
after a silence only where a notification can be lost on its way (a broker that
spans processes), not where every persisted event reaches the hub (``local://``)."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from runyard.events import follow
from runyard.events.hub import Hub
from runyard.events.sse import Frame
from runyard.models import Event, EventDraft, Run, RunStatus
from runyard.store.base import AppendGroup
from runyard.store.memory import MemoryStore

HEARTBEAT_S = 0.05


class CountingStore(MemoryStore):
    """The memory store, counting its event reads."""

    reads = 0

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        self.reads += 1
        return await super().read_events(run_id, after, limit)


class DeliversNothing:
    """A cross-process broker's watch whose notifications never arrive."""

    async def watch(self, run_id: str) -> None:
        pass

    def unwatch(self, run_id: str) -> None:
        pass


async def running_run() -> CountingStore:
    store = CountingStore()
    await store.open()
    await store.create_run(Run("run_a", "ses_a", "alice", "ticker", RunStatus.RUNNING, {}, time.time()))
    return store


async def until_heartbeats(stream: AsyncGenerator[list[Frame], None], beats: int) -> list[int]:
    """The seqs ``stream`` yields until it has sent ``beats`` heartbeats (empty batches)."""
    seqs: list[int] = []
    async for batch in stream:
        seqs.extend(seq for seq, _, _ in batch)
        beats -= not batch
        if not beats:
            break
    await stream.aclose()
    return seqs


async def test_a_silent_stream_on_a_hub_that_sees_every_event_heartbeats_without_reading_the_store() -> None:
    store = await running_run()
    stream = follow(store, Hub(), "run_a", 0, HEARTBEAT_S)
    assert await until_heartbeats(stream, 4) == []
    assert store.reads == 1  # the history, before it went live


async def test_a_silent_stream_fed_by_a_broker_reads_the_store_after_each_heartbeat() -> None:
    """So an event whose notification was lost reaches the stream at its next heartbeat."""
    store = await running_run()
    await store.append([AppendGroup("run_a", [EventDraft("run_a", "tick", b"{}", time.time())])])  # never published
    stream = follow(store, Hub(DeliversNothing()), "run_a", 0, HEARTBEAT_S)
    assert await until_heartbeats(stream, 4) == [1]
    assert store.reads == 1 + 3  # the history, then after each heartbeat but the last (the stream closed there)


async def test_a_stream_that_has_read_its_history_to_the_end_waits_without_reading_it_again() -> None:
    store = await running_run()
    await store.append([AppendGroup("run_a", [EventDraft("run_a", "tick", b"{}", time.time())])])
    stream = follow(store, Hub(), "run_a", 0, HEARTBEAT_S)
    assert await until_heartbeats(stream, 2) == [1]
    assert store.reads == 1


async def test_a_channel_that_lost_notifications_sends_its_follower_back_to_the_store() -> None:
    store = await running_run()
    hub = Hub()
    stream = follow(store, hub, "run_a", 0, HEARTBEAT_S)
    assert await anext(stream) == []  # read the (empty) history, then heard nothing
    await store.append([AppendGroup("run_a", [EventDraft("run_a", "tick", b"{}", time.time())])])  # never published
    hub.resync(["run_a"])  # as a broker does when it reconnects
    assert [seq for seq, _, _ in await anext(stream)] == [1]
    await stream.aclose()
    assert store.reads == 2
