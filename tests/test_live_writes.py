"""Live events written by the delivery itself (``events.stream.follow``'s ``write``).

A follower that has caught up waits *fed*: its channel hands each delivery's
frames to its connection at once, without waking it. It is woken only for
what that cannot do: a gap (it reads the store), a write that has to wait for
the socket (it finishes it before anything else), a write that fails, the end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from runyard.events.hub import Hub
from runyard.events.sse import Frame
from runyard.events.stream import follow
from runyard.http.connections import body_writer
from runyard.http.streaming import _live_writer, _started
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


# -- straight to the connection (``connections.body_writer``) -------------------


class Socket:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def streaming_cycle(socket: Socket) -> RequestResponseCycle:
    """uvicorn's own request cycle of a GET, its SSE response started."""
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "GET"},
        transport=socket,  # type: ignore[arg-type]
        flow=FlowControl(socket),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    await cycle.send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    socket.written.clear()
    return cycle


async def test_a_chunk_written_straight_to_the_connection_is_the_bytes_uvicorn_would_send() -> None:
    direct, sent = Socket(), Socket()
    writer = body_writer((await streaming_cycle(direct)).send)
    by_uvicorn = await streaming_cycle(sent)
    assert writer is not None
    for chunk in (b"data: 1\n\n", b"x" * 70_000):
        assert writer(chunk)
        await by_uvicorn.send({"type": "http.response.body", "body": chunk, "more_body": True})
    assert direct.written == sent.written


async def test_nothing_is_written_straight_while_the_client_is_slow_or_gone() -> None:
    socket = Socket()
    cycle = await streaming_cycle(socket)
    writer = body_writer(cycle.send)
    assert writer is not None
    cycle.flow.pause_writing()
    assert not writer(b"data: 1\n\n")
    cycle.flow.resume_writing()
    cycle.disconnected = True
    assert not writer(b"data: 1\n\n")
    assert socket.written == []


async def test_another_server_s_send_gets_no_straight_writer() -> None:
    async def send(message: Any) -> None:
        pass

    assert body_writer(send) is None


async def test_live_frames_wait_for_a_slow_client_and_then_go_in_order() -> None:
    socket = Socket()
    cycle = await streaming_cycle(socket)
    write = _live_writer(cycle.send, 0)
    assert write([(1, False, b"data: 1\n\n")]) is None  # straight through
    cycle.flow.pause_writing()
    rest = write([(2, False, b"data: 2\n\n"), (3, False, b"data: 3\n\n")])
    assert rest is not None and len(socket.written) == 1
    finishing = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    assert not finishing.done()
    cycle.flow.resume_writing()
    await finishing
    assert b"".join(socket.written) == b"9\r\ndata: 1\n\n\r\n12\r\ndata: 2\n\ndata: 3\n\n\r\n"
