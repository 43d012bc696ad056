"""Response plumbing for SSE streams (the wire format is ``runyard.events.sse``).

sse-starlette runs the response: it watches for the client's disconnect and for
server shutdown. Its own pinger is off, because the contract's heartbeat comes
after a stretch of *silence*, which only the follower knows about.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from sse_starlette import EventSourceResponse
from starlette.types import Message

from runyard.events import sse
from runyard.models import Event, Run
from runyard.observability import metrics
from runyard.runtime import Runtime

CHUNK_BYTES = 256 * 1024  # one send() carries at most this much, so a page never becomes one huge write


def sse_response(
    runtime: Runtime,
    run: Run,
    after: int,
    pad_bytes: int,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
) -> EventSourceResponse:
    async def disconnected(_message: Message) -> None:
        if on_disconnect is not None:
            await on_disconnect()

    return EventSourceResponse(
        _body(runtime, run, after, pad_bytes),
        ping=0,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        client_close_handler_callable=disconnected,
    )


async def _body(runtime: Runtime, run: Run, after: int, pad_bytes: int) -> AsyncIterator[bytes]:
    if run.status.finished and after >= run.last_seq:
        return  # resumed after the end: nothing more will ever come
    metrics.STREAM_SUBSCRIBERS.inc()
    history_end = run.last_seq
    replay_started = time.perf_counter() if history_end > after else None
    try:
        async for batch in runtime.follow(run, after):
            if not batch:
                yield sse.ping(pad_bytes)
                continue
            for chunk in _chunks(batch, pad_bytes):
                yield chunk
            if replay_started is not None and batch[-1].seq >= history_end:
                metrics.REPLAY_SECONDS.observe(time.perf_counter() - replay_started)
                replay_started = None
    finally:
        metrics.STREAM_SUBSCRIBERS.dec()


def _chunks(events: list[Event], pad_bytes: int) -> Iterator[bytes]:
    """Frames joined into chunks of about ``CHUNK_BYTES``, built one chunk at a time."""
    frames: list[bytes] = []
    size = 0
    for event in events:
        frame = sse.frame(event, pad_bytes)
        frames.append(frame)
        size += len(frame)
        if size >= CHUNK_BYTES:
            yield b"".join(frames)
            frames, size = [], 0
    if frames:
        yield b"".join(frames)
