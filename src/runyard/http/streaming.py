"""Response plumbing for SSE streams (the wire format is ``runyard.events.sse``).

``EventStreamResponse`` is written here rather than taken from sse-starlette,
which runs four tasks per stream and an anyio cancel scope around every send:
under 1,000 live streams that was 6-8 % of the server's CPU and ~40 tracked
objects per stream for the collector to scan. Here a stream is its request's
task plus one watcher that cancels it when the client disconnects. Heartbeats
come from the follower (after a stretch of *silence*, which only it knows), and
server shutdown ends streams by closing the hub, which wakes every follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runyard.errors import TooManyStreams
from runyard.events import sse
from runyard.events.stream import Joined, Write
from runyard.governance.backend import CapReached, Caps
from runyard.http.connections import body_writer
from runyard.http.middleware import OUTER_SEND
from runyard.models import Run
from runyard.observability import metrics
from runyard.runtime import Runtime

CHUNK_BYTES = 256 * 1024  # one send() carries at most this much, so a page never becomes one huge write
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]


STREAM_CAPS = "caps:streams"  # the shared cap's name: its keys are {prefix}limits:caps:streams:{owner}


class StreamSlots:
    """The streams each owner has open, at most ``per_owner`` across the deployment.

    ``shared`` gives the deployment-wide cap while the limits are shared
    (``RUNYARD_BROKER=redis://``: leases in Redis, ``governance/redis_caps.py``;
    one round trip per stream opened, and a dead process's slots come back as
    their leases end), or None (``local://``: this process is the deployment).
    The count in this process is kept either way: it answers first (no round
    trip for an owner already at the cap here), and it is the cap while Redis
    does not answer, so an outage bounds an owner at ``per_owner`` per API
    process rather than failing every stream or letting any number through.
    """

    def __init__(self, per_owner: int, shared: Callable[[], Caps | None] = lambda: None) -> None:
        self.per_owner = per_owner
        self._shared = shared
        self._open: dict[str, int] = {}

    async def take(self, owner: str) -> StreamSlot:
        """One of the owner's slots, or ``TooManyStreams`` if they are all taken."""
        slot = self._take_here(owner)
        caps = self._shared()
        if caps is not None:
            await self._lease(slot, caps)
        return slot

    def taking(self, owner: str) -> asyncio.Future[StreamSlot]:
        """``take`` under way, for a caller with a round trip of its own to make
        meanwhile: a task while the deployment's count is asked (Redis), else
        already done (no task: this process's count is answered at once)."""
        taken: asyncio.Future[StreamSlot] = asyncio.get_running_loop().create_future()
        try:
            taken.set_result(self._take_here(owner))
        except TooManyStreams as refused:
            taken.set_exception(refused)
            return taken
        caps = self._shared()
        return taken if caps is None else asyncio.ensure_future(self._lease(taken.result(), caps))

    def _take_here(self, owner: str) -> StreamSlot:
        held = self._open.get(owner, 0)
        if held >= self.per_owner:
            raise _refusal(held, self.per_owner, "here")
        self._open[owner] = held + 1  # before asking Redis: concurrent takes here count each other
        return StreamSlot(self, owner)

    async def _lease(self, slot: StreamSlot, caps: Caps) -> StreamSlot:
        try:
            slot.lease = (caps, await caps.take(slot.owner))
        except CapReached as full:
            slot.release()
            raise _refusal(full.held, self.per_owner, "in the deployment") from None
        except BaseException:
            slot.release()
            raise
        return slot

    def held(self, owner: str) -> int:
        return self._open.get(owner, 0)

    def _give_back(self, owner: str) -> None:
        held = self._open[owner] - 1
        if held:
            self._open[owner] = held
        else:
            del self._open[owner]  # owners come and go: keep only those with streams open


def _refusal(held: int, per_owner: int, where: str) -> TooManyStreams:
    return TooManyStreams(f"{held} streams of this owner are open {where} already (at most {per_owner})")


class StreamSlot:
    """One open stream's place in its owner's count; ``release`` may be called twice."""

    __slots__ = ("_slots", "lease", "owner")

    def __init__(self, slots: StreamSlots, owner: str) -> None:
        self._slots: StreamSlots | None = slots
        self.owner = owner
        self.lease: tuple[Caps, str] | None = None  # its place in the deployment's count, if shared

    def release(self) -> None:
        if self._slots is not None:
            self._slots._give_back(self.owner)
            self._slots = None
            if self.lease is not None:
                caps, lease = self.lease
                caps.release(lease)


def give_back_when_taken(taking: asyncio.Future[StreamSlot]) -> None:
    """The slot of a stream refused for another reason goes back once taken (at
    once if it was); a take that failed or was cancelled holds nothing."""

    def settle(done: asyncio.Future[StreamSlot]) -> None:
        if not done.cancelled() and done.exception() is None:
            done.result().release()

    taking.add_done_callback(settle)


Chunks = AsyncGenerator[bytes, None]


class EventStreamResponse(Response):
    """Streams ``body``'s chunks until it ends or the client goes away; the
    stream's ``slot`` is given back then, whichever way it ends, and the run's
    channel ``joined`` left (a body that never starts cannot leave it).
    ``body`` may be made of the send that writes a chunk, for a body that
    writes some itself (a run's live events: ``sse_response``)."""

    def __init__(
        self,
        body: Chunks | Callable[[Send], Chunks],
        slot: StreamSlot,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
        joined: Joined | None = None,
    ) -> None:
        super().__init__(status_code=200)
        self._body = body
        self._chunks: Chunks | None = None if callable(body) else body
        self._slot = slot
        self._on_disconnect = on_disconnect
        self._joined = joined
        self.raw_headers[:] = [*(h for h in self.raw_headers if h[0] != b"content-length"), *HEADERS]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.current_task()
        assert stream is not None
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, stream, gone))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if scope["method"] != "HEAD":
                # Past runyard's own layers: each of the six between here and the
                # server looks at a response's start only. Starlette, FastAPI and
                # those layers held 7-9 % of a steady stream's samples
                # (bench/streams.py --profile); this cut was within that A/B's noise.
                send_chunk = scope.get(OUTER_SEND, send)
                chunks = self._chunks = self._body(send_chunk) if callable(self._body) else self._body
                async for chunk in chunks:
                    await send_chunk({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (asyncio.CancelledError, OSError):
            if not gone.is_set():
                raise  # not the client leaving: a real cancellation
            stream.uncancel()
        finally:
            self._slot.release()
            watcher.cancel()
            if self._chunks is not None:
                await self._chunks.aclose()
            if self._joined is not None:
                self._joined.leave()
        if gone.is_set() and self._on_disconnect is not None:
            await self._on_disconnect()


async def _watch_disconnect(receive: Receive, stream: asyncio.Task[None], gone: asyncio.Event) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        stream.cancel()


def sse_response(
    runtime: Runtime,
    run: Run,
    after: int,
    pad_bytes: int,
    slot: StreamSlot,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    joined: Joined | None = None,
) -> EventStreamResponse:
    """The run's stream from ``after``; from its channel ``joined`` when the run
    was read after joining it (``Runtime.join_run``), which the response leaves."""

    def body(send: Send) -> Chunks:
        return _body(runtime, run, after, pad_bytes, _live_writer(send, pad_bytes), joined)

    return EventStreamResponse(body, slot, on_disconnect, joined)


async def _body(runtime: Runtime, run: Run, after: int, pad_bytes: int, write: Write, joined: Joined | None) -> Chunks:
    if run.status.finished and after >= run.last_seq:
        return  # resumed after the end: nothing more will ever come
    metrics.STREAM_SUBSCRIBERS.inc()
    history_end = run.last_seq
    replay_started = time.perf_counter() if history_end > after else None
    try:
        async for batch in runtime.follow(run, after, write, joined):
            if not batch:
                yield sse.ping(pad_bytes)
                continue
            for chunk in _chunks(batch, pad_bytes):
                yield chunk
            if replay_started is not None and batch[-1][0] >= history_end:
                metrics.REPLAY_SECONDS.observe(time.perf_counter() - replay_started)
                replay_started = None
    finally:
        metrics.STREAM_SUBSCRIBERS.dec()


def _live_writer(send: Send, pad_bytes: int) -> Write:
    """``follow``'s ``write`` for a stream whose chunks ``send`` sends: the live
    frames a delivery brings, sent in the delivery's own call when the
    connection takes them at once (no flow control holding it back), straight
    to the connection where the server allows (``connections.body_writer``)."""
    direct = body_writer(send)

    def write(frames: list[sse.Frame]) -> Awaitable[None] | None:
        if direct is not None and len(frames) == 1 and not pad_bytes:
            # a delivery's usual one frame: no chunking to do
            chunk = frames[0][2]
            return None if direct(chunk) else _started(_send_chunks(send, iter((chunk,))))
        chunks = _chunks(frames, pad_bytes)
        if direct is not None:
            for chunk in chunks:
                if not direct(chunk):
                    return _started(_send_chunks(send, itertools.chain((chunk,), chunks)))
            return None
        return _started(_send_chunks(send, chunks))

    return write


async def _send_chunks(send: Send, chunks: Iterator[bytes]) -> None:
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


def _started(write: Coroutine[Any, Any, None]) -> Awaitable[None] | None:
    """Run ``write`` until it first waits: None if it never did (the server's
    send did not need to wait for the socket to drain), else an awaitable that
    finishes it, for the stream's own task to await."""
    try:
        waiting_on = write.send(None)
    except StopIteration:
        return None
    return _finish(write, waiting_on)


async def _finish(write: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Drive ``write`` on from where ``_started`` left it, from this task: wait
    for what it waits on (a future, or a bare yield), then resume it."""
    try:
        while True:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                # Not ``await waiting_on``: the write's own await of it is under
                # way. The write sees its outcome when it resumes.
                await asyncio.wait([waiting_on])
            waiting_on = write.send(None)
    except StopIteration:
        return
    finally:
        write.close()  # cancelled half-way (the client left): the write goes no further


def frames_response(
    frames: AsyncGenerator[list[sse.Frame], None], pad_bytes: int, slot: StreamSlot
) -> EventStreamResponse:
    """A stream of ``frames``' batches that does not end at a run's end (a session's)."""
    return EventStreamResponse(_frames_body(frames, pad_bytes), slot)


async def _frames_body(frames: AsyncGenerator[list[sse.Frame], None], pad_bytes: int) -> AsyncGenerator[bytes, None]:
    metrics.STREAM_SUBSCRIBERS.inc()
    try:
        async for batch in frames:
            if not batch:
                yield sse.ping(pad_bytes)
                continue
            for chunk in _chunks(batch, pad_bytes):
                yield chunk
    finally:
        metrics.STREAM_SUBSCRIBERS.dec()
        await frames.aclose()


def _chunks(batch: list[sse.Frame], pad_bytes: int) -> Iterator[bytes]:
    """Frames joined into chunks of about ``CHUNK_BYTES``, built one chunk at a time."""
    frames: list[bytes] = []
    size = 0
    for _, _, frame in batch:
        if pad_bytes:
            frame = sse.padded(frame, pad_bytes)
        frames.append(frame)
        size += len(frame)
        if size >= CHUNK_BYTES:
            yield b"".join(frames)
            frames, size = [], 0
    if frames:
        yield b"".join(frames)
