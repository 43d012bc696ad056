"""Live fan-out inside one process.

A ``RunChannel`` exists only while a run has subscribers in this process. It
keeps the run's most recent events as encoded SSE frames (contiguous by
``seq``, bounded; encoded once for all its subscribers) and an
``asyncio.Event`` that is set and replaced on every delivery. Subscribers own
nothing but a cursor: publishing never waits for them and never queues per
subscriber, and a subscriber that falls behind the channel's window reads the
store instead. Memory per subscriber is therefore constant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from runyard.events.sse import Frame, encode
from runyard.models import Event

WINDOW = 256  # events a channel keeps for subscribers that are nearly caught up...
WINDOW_BYTES = 4 << 20  # ...within about this much data


class RunChannel:
    __slots__ = ("_bytes", "_frames", "changed", "closed", "run_id", "subscribers")

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.subscribers = 0
        self.closed = False  # the process is shutting down: followers stop
        self.changed = asyncio.Event()
        self._frames: list[Frame] = []
        self._bytes = 0

    def deliver(self, events: Iterable[Event]) -> None:
        """Add newly persisted events and wake the subscribers."""
        kept = self._frames
        for event in events:
            if kept and event.seq <= kept[-1][0]:
                continue  # a duplicate delivery
            if kept and event.seq != kept[-1][0] + 1:
                kept.clear()  # a gap (a missed message): the store fills it for whoever needs it
                self._bytes = 0
            frame = encode(event)
            kept.append(frame)
            self._bytes += len(frame[2])
        if len(kept) > 2 * WINDOW or self._bytes > WINDOW_BYTES:
            self._trim()
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every follower of this channel (they resume elsewhere by cursor)."""
        self.closed = True
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def _trim(self) -> None:
        """Keep the newest ``WINDOW`` events, or fewer if they exceed ``WINDOW_BYTES``."""
        kept, size, start = self._frames, 0, len(self._frames)
        while start > 0 and len(kept) - start < WINDOW and size + len(kept[start - 1][2]) <= WINDOW_BYTES:
            start -= 1
            size += len(kept[start][2])
        del kept[:start]
        self._bytes = size

    def after(self, cursor: int, limit: int) -> list[Frame] | None:
        """Frames with ``seq > cursor`` from the window; None if the window starts
        later than ``cursor + 1`` (or is empty), so the caller must read the store."""
        kept = self._frames
        if not kept or kept[0][0] > cursor + 1:
            return None
        start = cursor + 1 - kept[0][0]
        return kept[start : start + limit]


class Hub:
    """The channels of the runs this process's subscribers follow."""

    def __init__(self) -> None:
        self._channels: dict[str, RunChannel] = {}
        self.closed = False

    @property
    def subscribers(self) -> int:
        return sum(channel.subscribers for channel in self._channels.values())

    def join(self, run_id: str) -> RunChannel:
        channel = self._channels.get(run_id)
        if channel is None:
            channel = self._channels[run_id] = RunChannel(run_id)
            channel.closed = self.closed
        channel.subscribers += 1
        return channel

    def close(self) -> None:
        """The process is stopping: end every stream now, so that clients resume
        on another process instead of waiting for this one's connections to drain."""
        self.closed = True
        for channel in self._channels.values():
            channel.close()

    def leave(self, channel: RunChannel) -> None:
        channel.subscribers -= 1
        if channel.subscribers <= 0 and self._channels.get(channel.run_id) is channel:
            del self._channels[channel.run_id]

    def deliver(self, events: list[Event]) -> None:
        """Hand persisted events (of any runs, each run's in order) to their channels."""
        channels = self._channels
        if not channels:
            return
        start = 0
        for i in range(1, len(events) + 1):
            if i == len(events) or events[i].run_id != events[start].run_id:
                channel = channels.get(events[start].run_id)
                if channel is not None:
                    channel.deliver(events[start:i])
                start = i
