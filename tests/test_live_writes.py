"""Live events written by the delivery itself (``events.stream.follow``'s ``write``).

A follower that has caught up waits *fed*: its channel hands each delivery's
frames to its connection at once, without waking it. It is woken only for
what that cannot do: a gap (it reads the store), a write that has to wait for
the socket (it finishes it before anything else), a write that fails, the end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable

import pytest

from runyard.events.hub import Hub
from runyard.events.sse import Frame
from runyard.events.stream import follow
from runyard.http.streaming import _started
from runyard.models import Event, EventDraft, Run, RunStatus, Session
from runyard.store._numbering import cancel_group
from runyard.store.base import AppendGroup
from runyard.store.memory import MemoryStore

HEARTBEAT_S = 30.0  # no heartbeat in these specs


@pytest.fixture
async def store() -> AsyncGenerator[MemoryStore, None]:
    store = MemoryStore()
    await store.open()
    at = time.time()
    await store.create_run(
        Run("run_a", "ses_a", "alice", "ticker", RunStatus.RUNNING, {}, at), Session("ses_a", "alice", at, at)
    )
    await appended(store, 1)
    yield store
    await store.close()


async def appended(store: MemoryStore, ticks: int) -> list[Event]:
    drafts = [EventDraft("run_a", "tick", b"{}", time.time()) for _ in range(ticks)]
    [result] = await store.append([AppendGroup("run_a", drafts)])
    assert isinstance(result, list)
    return result


async def ended(store: MemoryStore) -> list[Event]:
    [result] = await store.append([cancel_group("run_a", time.time())])
    assert isinstance(result, list)
    return result


def seqs(frames: list[Frame]) -> list[int]:
    return [seq for seq, _, _ in frames]


async def waiting(stream: AsyncGenerator[list[Frame], None]) -> asyncio.Future[list[Frame]]:
    """The stream's next batch, asked for; returns once the follower waits for it."""
    batch = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    assert not batch.done()
    return batch


async def test_a_caught_up_follower_has_its_live_events_written_without_being_woken(store: MemoryStore) -> None:
    hub = Hub()
    written: list[list[int]] = []

    def write(frames: list[Frame]) -> None:
        written.append(seqs(frames))

    stream = follow(store, hub, "run_a", 0, HEARTBEAT_S, write)
    assert seqs(await anext(stream)) == [1]  # history comes through the generator
    batch = await waiting(stream)

    hub.deliver(await appended(store, 2))
    hub.deliver(await appended(store, 1))
    await asyncio.sleep(0.01)
    assert written == [[2, 3], [4]]
    assert not batch.done()  # the follower slept through both

    hub.deliver(await ended(store))
    assert written == [[2, 3], [4], [5, 6]]  # its status, then its end
    with pytest.raises(StopAsyncIteration):
        await batch  # the end was written: the follow is over


async def test_after_a_gap_the_follower_is_woken_and_reads_what_it_missed_from_the_store(store: MemoryStore) -> None:
    hub = Hub()
    written: list[list[int]] = []
    stream = follow(store, hub, "run_a", 0, HEARTBEAT_S, lambda frames: written.append(seqs(frames)))
    await anext(stream)
    batch = await waiting(stream)

    await appended(store, 1)  # seq 2: its delivery is lost
    hub.deliver(await appended(store, 1))

    assert seqs(await batch) == [2, 3]
    assert written == []
    await stream.aclose()


async def test_a_write_that_has_to_wait_is_finished_before_anything_else_is_sent(store: MemoryStore) -> None:
    hub = Hub()
    drained = asyncio.get_running_loop().create_future()
    sent: list[int] = []

    async def send_after_drain(frames: list[Frame]) -> None:
        await drained  # the socket's buffer is full
        sent.extend(seqs(frames))

    def write(frames: list[Frame]) -> Awaitable[None] | None:
        return _started(send_after_drain(frames))

    stream = follow(store, hub, "run_a", 0, HEARTBEAT_S, write)
    await anext(stream)
    batch = await waiting(stream)

    hub.deliver(await appended(store, 1))  # its write waits: the follower is woken to finish it
    await asyncio.sleep(0.01)
    hub.deliver(await appended(store, 1))  # not written while seq 2 is unfinished
    await asyncio.sleep(0.01)
    assert sent == [] and not batch.done()

    drained.set_result(None)
    assert seqs(await batch) == [3]  # seq 3 comes through the generator, after seq 2 was sent
    assert sent == [2]
    await stream.aclose()


async def test_a_write_that_fails_ends_the_follow_with_its_error(store: MemoryStore) -> None:
    hub = Hub()

    def write(frames: list[Frame]) -> None:
        raise ConnectionResetError("the client went away")

    stream = follow(store, hub, "run_a", 0, HEARTBEAT_S, write)
    await anext(stream)
    batch = await waiting(stream)
    hub.deliver(await appended(store, 1))
    with pytest.raises(ConnectionResetError):
        await batch


async def test_a_send_that_never_waits_is_done_within_the_call() -> None:
    sent: list[str] = []

    async def send() -> None:
        sent.append("chunk")

    assert _started(send()) is None
    assert sent == ["chunk"]


async def test_a_send_that_waits_is_finished_by_whoever_awaits_the_rest() -> None:
    writable = asyncio.Event()
    steps: list[str] = []

    async def send() -> None:
        steps.append("waits")
        await writable.wait()
        await asyncio.sleep(0)  # a bare yield, too
        steps.append("sent")

    rest = _started(send())
    assert rest is not None and steps == ["waits"]
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    assert steps == ["waits"]
    writable.set()
    await finishing
    assert steps == ["waits", "sent"]


async def test_a_send_whose_rest_is_cancelled_goes_no_further() -> None:
    closed: list[bool] = []

    async def send() -> None:
        try:
            await asyncio.Event().wait()  # never writable
        finally:
            closed.append(True)

    rest = _started(send())
    assert rest is not None
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert closed == [True]
