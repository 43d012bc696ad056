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

A follower waits with a ``Listener``: woken by its channel's next delivery, or
by a heartbeat timer that it arms once per heartbeat period rather than once
per wait (see ``Listener``). A follower that is caught up may wait *fed*: the
delivery then hands its new frames to the follower's ``Fed`` (which writes
them to its connection at once) instead of waking it, and wakes it only when
the frames cannot be taken that way (see ``RunChannel._wake``).
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


class Fed(Protocol):
    """A waiting follower that takes live frames without being woken."""

    def take(self, frames: list[Frame]) -> bool:
        """Take ``frames`` (newly delivered, in order); False if the follower
        must be woken instead (it then finds them in the window or the store)."""


class RunChannel:
    __slots__ = (
        "_bytes",
        "_ended",
        "_first",
        "_frames",
        "_waiters",
        "closed",
        "run_id",
        "subscribers",
        "version",
        "watched",
    )

    def __init__(self, run_id: str, *, closed: bool = False, watched: asyncio.Future[None] | None = None) -> None:
        self.run_id = run_id
        self.subscribers = 0
        self.closed = closed  # the process is shutting down: followers stop
        # Bumped on every wake-up: a follower reads it before it looks at the
        # window or the store, and waits only if it has not moved since.
        self.version = 0
        self._waiters: dict[asyncio.Future[bool], Fed | None] = {}
        self.watched = watched  # the broker's watch of this run, shared by joiners
        # The window: the frames' bytes, contiguous from seq ``_first``, the last
        # one the run's end if ``_ended``. Bytes rather than frames (tuples): a
        # tuple is tracked by the garbage collector until a pass has looked at it,
        # and 1,000 streams' windows filling up at 10 events/s made a pass of the
        # young generation (15-25 ms, the whole process stopped) every few seconds.
        self._frames: list[bytes] = []
        self._first = 0
        self._ended = False
        self._bytes = 0

    def deliver(self, events: Iterable[Event]) -> None:
        """Add newly persisted events and wake the subscribers."""
        kept = self._frames
        added: list[Frame] = []
        for event in events:
            following = self._first + len(kept)  # the seq the window expects next
            if kept and event.seq < following:
                continue  # a duplicate delivery
            frame = encode(event)
            if not kept or event.seq != following:
                kept.clear()  # a gap (a missed message): the store fills it for whoever needs it
                self._bytes, self._first = 0, event.seq
            kept.append(frame[2])
            self._ended = frame[1]
            self._bytes += len(frame[2])
            added.append(frame)
        if not added:
            return  # only duplicates: waking the subscribers would find nothing new
        if len(kept) > 2 * WINDOW or self._bytes > WINDOW_BYTES:
            self._trim()
        self._wake(added)

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

    async def changed_since(self, version: int) -> None:
        """Return once the channel has changed since it was at ``version``."""
        if self.version == version:
            waiter = self.waiter()
            try:
                await waiter
            finally:
                self.discard(waiter)

    def waiter(self, fed: Fed | None = None) -> asyncio.Future[bool]:
        """A future the next wake-up resolves with True (``discard`` it if you stop
        waiting); with ``fed``, deliveries it takes do not resolve it."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = fed
        return waiter

    def discard(self, waiter: asyncio.Future[bool]) -> None:
        self._waiters.pop(waiter, None)

    def _wake(self, added: list[Frame] | None = None) -> None:
        # Futures of our own rather than an asyncio.Event replaced on every
        # delivery: one object less per event, and a follower's heartbeat
        # can resolve its own future (Listener).
        #
        # A fed follower that takes the ``added`` frames stays asleep: a live
        # event then costs no task step, no generator step and no new future
        # per stream, and a commit's 100 streams are written in this one call
        # rather than in 100 task steps one after the other.
        self.version += 1
        waiters, self._waiters = self._waiters, {}
        for waiter, fed in waiters.items():
            if waiter.done():
                continue
            if fed is not None and added and fed.take(added):
                self._waiters[waiter] = fed
            else:
                waiter.set_result(True)

    def _trim(self) -> None:
        """Keep the newest ``WINDOW`` events, or fewer if they exceed ``WINDOW_BYTES``.
        Their size is summed in C: a loop over them in Python took 93 µs a trim
        (19 µs now), and runs started together trim together: 1,000 at once
        under a steady load (``bench/README.md``, "A fifteenth round")."""
        kept = self._frames
        start = max(0, len(kept) - WINDOW)
        size = sum(map(len, kept[start:]))
        while size > WINDOW_BYTES and start < len(kept):  # big frames: fewer of them
            size -= len(kept[start])
            start += 1
        del kept[:start]
        self._bytes = size
        self._first += start

    def after(self, cursor: int, limit: int) -> list[Frame] | None:
        """Frames with ``seq > cursor`` from the window; None if the window starts
        later than ``cursor + 1`` (or is empty), so the caller must read the store."""
        kept, first = self._frames, self._first
        if not kept or first > cursor + 1:
            return None
        start = cursor + 1 - first
        end = first + len(kept) - 1 if self._ended else -1  # the end's seq, if the window holds it
        return [(seq, seq == end, data) for seq, data in enumerate(kept[start : start + limit], cursor + 1)]


class Listener:
    """One follower's wait on its channel: until the channel's next wake-up, or
    until ``quiet_s`` have passed since the follower last ``spoke`` (sent
    something), whichever comes first.

    A timeout per wait (``asyncio.timeout``) armed and cancelled a timer for
    every event of every stream: 8-9 % of a steady load's server CPU
    (bench/streams.py --profile, 1,000 streams x 10 events/s). The listener arms one timer per silence
    instead: when it fires while the follower is waiting, it either ends the
    wait (silence long enough) or re-arms itself for the time the follower's
    silence will be; when the follower is busy, its next wait arms it again.
    """

    __slots__ = ("_channel", "_loop", "_quiet_s", "_spoke_at", "_timer", "_waiter")

    def __init__(self, channel: RunChannel, quiet_s: float) -> None:
        self._channel = channel
        self._quiet_s = quiet_s
        self._loop = asyncio.get_running_loop()
        self._spoke_at = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[bool] | None = None

    def spoke(self) -> None:
        """The follower sent something: silence counts from now."""
        self._spoke_at = self._loop.time()

    async def wait(self, version: int, fed: Fed | None = None) -> bool:
        """True once the channel changed since ``version`` (at once if it has);
        False after ``quiet_s`` of the follower's silence. With ``fed``,
        deliveries it takes do not end the wait."""
        channel = self._channel
        if channel.version != version:
            return True
        waiter = self._waiter = channel.waiter(fed)
        if self._timer is None:
            self._timer = self._loop.call_at(self._spoke_at + self._quiet_s, self._on_timer)
        try:
            return await waiter
        finally:
            self._waiter = None
            channel.discard(waiter)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # not waiting: its next wait arms the timer
        due = self._spoke_at + self._quiet_s
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._on_timer)
        else:
            waiter.set_result(False)


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
    def sees_every_event(self) -> bool:
        """Whether every persisted event reaches this hub (``local://``): then a
        silent follower has missed nothing and need not read the store to be sure."""
        return self._watcher is None

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
