"""Live fan-out inside one process.

A ``RunChannel`` exists only while a run has subscribers in this process. It
keeps the run's most recent events as encoded SSE frames (contiguous by
``seq``, bounded; encoded once for all its subscribers) and an
``asyncio.Event`` that is set and replaced on every delivery. Subscribers own
nothing but a cursor: publishing never waits for them and never queues per
subscriber, and a subscriber that falls behind the channel's window reads the
store instead. Memory per subscriber is therefore constant.

The hub tells its ``Watcher`` (the broker, given when the hub is built) which
runs have subscribers here (``watch`` when a run's channel opens, ``unwatch``
when it closes), so a broker that spans processes carries only those runs'
events to this one.

A session's followers share a ``SessionChannel`` keyed by its ``session_channel``
(watched like a run): it keeps no frames, it only wakes them when an event of
any run of the session arrives (``Event.session``), and they read the store by
their cursor. A session stream's order is the store's, which a window of
frames per run could not give without a gap-free session-wide number.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Protocol

from runyard.events.sse import Frame, encode
from runyard.models import SESSION_PREFIX, Event

log = logging.getLogger("runyard.events")

WINDOW = 256  # events a channel keeps for subscribers that are nearly caught up...
WINDOW_BYTES = 4 << 20  # ...within about this much data
STORE_READS = 4


class RunChannel:
    __slots__ = ("_bytes", "_frames", "changed", "closed", "run_id", "subscribers", "watched")

    def __init__(self, run_id: str, *, closed: bool = False, watched: asyncio.Future[None] | None = None) -> None:
        self.run_id = run_id
        self.subscribers = 0
        self.closed = closed  # the process is shutting down: followers stop
        self.changed = asyncio.Event()
        self.watched = watched  # the broker's watch of this run, shared by joiners
        self._frames: list[Frame] = []
        self._bytes = 0

    def deliver(self, events: Iterable[Event]) -> None:
        """Add newly persisted events and wake the subscribers."""
        kept = self._frames
        added = False
        for event in events:
            if kept and event.seq <= kept[-1][0]:
                continue  # a duplicate delivery
            if kept and event.seq != kept[-1][0] + 1:
                kept.clear()  # a gap (a missed message): the store fills it for whoever needs it
                self._bytes = 0
            frame = encode(event)
            kept.append(frame)
            self._bytes += len(frame[2])
            added = True
        if not added:
            return  # only duplicates: waking the subscribers would find nothing new
        if len(kept) > 2 * WINDOW or self._bytes > WINDOW_BYTES:
            self._trim()
        self._wake()

    def resync(self) -> None:
        """Events may have been published without reaching this channel: forget the
        window, so that every follower reads the store up to the present once."""
        self._frames.clear()
        self._bytes = 0
        self._wake()

    def close(self) -> None:
        """End every follower of this channel (they resume elsewhere by cursor)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
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


class SessionChannel(RunChannel):
    """A session's channel: a wake-up for its followers, no frames (see the module)."""

    __slots__ = ()

    def deliver(self, events: Iterable[Event]) -> None:
        self._wake()


class Watcher(Protocol):
    """Who carries a run's events to this process only while it is watched (a broker)."""

    async def watch(self, run_id: str) -> None:
        """Deliver this run's events from now on; returns once that holds."""

    def unwatch(self, run_id: str) -> None:
        """Stop delivering this run's events (possibly a little later)."""


class Hub:
    """The channels of the runs this process's subscribers follow.

    ``watcher`` is told which runs have subscribers here; None when every
    run's events reach the hub anyway (``local://``)."""

    def __init__(self, watcher: Watcher | None = None) -> None:
        self._channels: dict[str, RunChannel] = {}
        self.closed = False
        self._subscribers = 0  # every channel's, counted as they join and leave
        # Followers reading a page of history from the store at once; the rest
        # wait their turn (FIFO). 2,000 streams starting a replay together kept
        # /healthz waiting 8.4 s with no turns, 5.1 s with 2 (bench/hostile.py,
        # memory://); 4 lets a PostgreSQL pool serve pages in parallel.
        self.store_reads = asyncio.Semaphore(STORE_READS)
        self._watcher = watcher

    @property
    def subscribers(self) -> int:
        """Followers of any run in this process (streams share their page budget by it)."""
        return self._subscribers

    async def join(self, run_id: str) -> RunChannel:
        """Subscribe to the run's channel (a session's, for a ``session_channel``).
        Returns once the broker delivers the run's newly published events here, so
        that a store read after ``join`` and the channel together miss nothing."""
        channel = self._channels.get(run_id)
        if channel is None:
            # A task, not an await: the watch must complete for every joiner
            # even if the joiner that started it is cancelled half-way.
            watch = asyncio.ensure_future(self._watcher.watch(run_id)) if self._watcher is not None else None
            kind = SessionChannel if run_id.startswith(SESSION_PREFIX) else RunChannel
            channel = self._channels[run_id] = kind(run_id, closed=self.closed, watched=watch)
        channel.subscribers += 1
        self._subscribers += 1
        watched = channel.watched
        if watched is not None and not watched.done():
            try:
                await asyncio.shield(watched)
            except Exception:
                # Brokers report their own trouble; followers still have the store.
                log.exception("watching run %s failed", run_id)
            except BaseException:
                self.leave(channel)
                raise
        return channel

    def close(self) -> None:
        """The process is stopping: end every stream now, so that clients resume
        on another process instead of waiting for this one's connections to drain."""
        self.closed = True
        for channel in self._channels.values():
            channel.close()

    def leave(self, channel: RunChannel) -> None:
        channel.subscribers -= 1
        self._subscribers -= 1
        if channel.subscribers <= 0 and self._channels.get(channel.run_id) is channel:
            del self._channels[channel.run_id]
            if self._watcher is not None:
                self._watcher.unwatch(channel.run_id)

    def resync(self, run_ids: Iterable[str]) -> None:
        """The broker may have lost these runs' events (it reconnected): their
        followers read the store once instead of waiting for the next heartbeat."""
        for run_id in run_ids:
            channel = self._channels.get(run_id)
            if channel is not None:
                channel.resync()

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
                session = events[start].session
                if session is not None and (followed := channels.get(session)) is not None:
                    followed.deliver(())
                start = i
