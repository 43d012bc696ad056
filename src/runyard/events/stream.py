"""Following one run's events: replay from the store, then live, by cursor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable

from runyard.events.hub import Hub, Listener, RunChannel
from runyard.events.sse import Frame, encode
from runyard.models import Run
from runyard.store.base import EventStore

MAX_PAGE = 2000  # events per store read and per yielded batch...
PAGE_BYTES = 1 << 20  # ...and about this much data, so big events make short pages
FIRST_PAGE = 16  # events of the first page, before their size is known (16 x 64 KiB is a whole page)
# A page is held three times over while it is sent (events, frames, chunks) and
# each follower sends a whole page in one turn of the loop. At 1 MiB a page,
# 2,000 followers replaying a 16 MiB run took the server to 1.8 GiB and stalled
# the loop (/healthz 4.3 s). So followers share this budget: up to 32 of them get
# whole pages (a lone replay is as fast as before), more get smaller ones, down
# to 64 KiB: 2,000 followers then peaked at ~420 MiB. At 32 KiB they peaked at
# ~300 MiB but spent 38 s of CPU against 20 s on the same 4 GB (bench/hostile.py).
PAGES_BUDGET = 32 << 20
MIN_PAGE_BYTES = 64 << 10


# Writes frames on a follower's connection, as its consumer would: None once
# they are handed over, or an awaitable that finishes a write that had to wait.
Write = Callable[[list[Frame]], Awaitable[None] | None]


class Joined:
    """A run's channel, joined for a follower. Joined before the run was read
    (``join_first``), it also holds the channel's ``version`` at the join
    and the run's ``last_seq`` as read after it: every event past ``last_seq``
    was published after the join, so it reaches the channel, and a follower
    from a cursor at ``last_seq`` or past it reads nothing from the store until
    the channel moves (a stream opening before its run's first event, as most
    do, reads its run and nothing else). Whoever holds it ``leave``s it once the
    follower is done or never starts; ``leave`` may be called twice."""

    __slots__ = ("_hub", "channel", "last_seq", "version")

    def __init__(self, hub: Hub, channel: RunChannel, version: int = -1, last_seq: int | None = None) -> None:
        self._hub: Hub | None = hub
        self.channel = channel
        self.version = version
        self.last_seq = last_seq

    def read_to_end_at(self, after: int) -> int:
        """The channel's version at which a follower from ``after`` has read
        the whole history, or -1 if it must read the store to know."""
        return self.version if self.last_seq is not None and self.last_seq <= after else -1

    def leave(self) -> None:
        if self._hub is not None:
            self._hub.leave(self.channel)
            self._hub = None


async def join_first(hub: Hub, run_id: str, read_run: Callable[[], Awaitable[Run]]) -> tuple[Run, Joined]:
    """The run as ``read_run`` reads it once its channel is joined, and the
    channel (see ``Joined``); the channel is left if the read raises."""
    channel = await hub.join(run_id)
    version = channel.version
    try:
        run = await read_run()
    except BaseException:
        hub.leave(channel)
        raise
    return run, Joined(hub, channel, version, run.last_seq)


class Writer:
    """A caught-up follower's own writes of live frames, done by its channel at
    delivery (``Fed``), from ``cursor`` on. What the follower must learn when
    it wakes: where the writes got to, whether they wrote the ``end``, and the
    write that had to wait (or the error one raised), to finish (or raise)
    before anything else is written."""

    __slots__ = ("_listener", "_write", "cursor", "ended", "failure", "unfinished")

    def __init__(self, write: Write, listener: Listener) -> None:
        self._write = write
        self._listener = listener
        self.cursor = 0
        self.ended = False
        self.unfinished: Awaitable[None] | None = None
        self.failure: Exception | None = None

    def take(self, frames: list[Frame]) -> bool:
        fresh = frames
        if frames[0][0] <= self.cursor:  # some came from the store first
            fresh = [frame for frame in frames if frame[0] > self.cursor]
        if not fresh:
            return True
        if fresh[0][0] != self.cursor + 1:
            return False  # a gap: the follower reads the store
        try:
            self.unfinished = self._write(fresh)
        except Exception as exc:  # the connection's: raised where the follower's own write would raise it
            self.failure = exc
            return False
        self.cursor = fresh[-1][0]
        self._listener.spoke()
        self.ended = fresh[-1][1]
        return self.unfinished is None and not self.ended

    async def settle(self) -> int:
        """The cursor the writes reached, once the last one is finished."""
        unfinished, self.unfinished = self.unfinished, None
        if unfinished is not None:
            await unfinished
        if self.failure is not None:
            raise self.failure
        return self.cursor


async def follow(
    store: EventStore,
    hub: Hub,
    run_id: str,
    after: int,
    heartbeat_s: float,
    write: Write | None = None,
    joined: Joined | None = None,
) -> AsyncGenerator[list[Frame], None]:
    """Yield batches of the run's events with ``seq > after`` as SSE frames, in
    order, each once, until the ``end`` event; an empty batch after
    ``heartbeat_s`` of silence.

    With ``write``, live events reach the connection without this generator:
    while it waits caught up, its channel writes each delivery with ``write``
    (see ``Writer``); it yields what ``write`` could not take.

    The channel is joined (and the broker delivers the run's events to it) before
    the first store read, so an event persisted before the join is in the store
    and one published after it is in the channel: nothing falls between the two.
    With ``joined`` (the channel joined before the run was read), that first read
    is skipped when the run had nothing past ``after``.
    The only lock held across an await is a turn among the followers catching
    up on a long history (``Hub.store_reads``), for one page.
    """
    if joined is None:
        joined = Joined(hub, await hub.join(run_id))
    channel = joined.channel
    listener = Listener(channel, heartbeat_s)
    writer = Writer(write, listener) if write is not None else None
    try:
        cursor = after
        page = max(1, FIRST_PAGE * _page_bytes(hub) // PAGE_BYTES)
        poll_store = False
        catching_up = False  # the last store read filled its page: more history follows
        # The channel's version before the last store read, if that read reached the
        # history's end: while the version stays there, nothing was delivered (or
        # lost) since, and the follower is caught up without another read. Opening
        # a stream read its store twice, the second time in a reader thread for
        # nothing (~5 % of the server's CPU while 1,000 streams opened).
        read_to_end_at = joined.read_to_end_at(after)
        while True:
            version = channel.version  # taken before reading, so no wake-up is missed
            batch: list[Frame] | None
            if poll_store:
                batch = None
            elif version == read_to_end_at:
                batch = []
            else:
                batch = channel.after(cursor, page)
            live = batch is not None
            if batch is None:
                # Only a follower catching up takes a turn: the turn bounds the
                # pages held at once by a crowd replaying a long history, but a
                # waiter is woken one loop iteration at a time, and 1,000 streams
                # opening at once each queued their first small read behind it
                # (bench/streams.py steady: first event p50 0.7 -> 1.6 s).
                async with hub.store_reads if catching_up else contextlib.nullcontext():
                    batch = [encode(event) for event in await store.read_events(run_id, cursor, page)]
                poll_store = False
                catching_up = len(batch) >= page
                read_to_end_at = -1 if catching_up else version
            if batch:
                if not live or len(batch) > 1:  # not per live event: 3.6-4 % of a steady load's samples
                    page = _page_size(batch, _page_bytes(hub))
                seq, is_end, _ = batch[-1]
                cursor = seq
                yield batch
                listener.spoke()
                if is_end:
                    return
                continue
            if channel.closed:
                return  # shutting down: the client resumes elsewhere from its cursor
            while True:
                if writer is not None:
                    writer.cursor = cursor
                woken = await listener.wait(version, writer)
                if writer is not None:
                    cursor = await writer.settle()
                    if writer.ended:
                        return
                if woken:
                    break
                # Silence: say so, and look at the store in case a cross-process
                # notification was missed. Not where none can be: there, nothing
                # changed (10,000 idle streams with a 2 s heartbeat read the store
                # 5,000 times a second for nothing, and could not all open:
                # bench/streams.py idle), so the follower waits on.
                yield []
                listener.spoke()
                if not hub.sees_every_event:
                    poll_store = True
                    break
    finally:
        listener.close()
        joined.leave()


def _page_bytes(hub: Hub) -> int:
    """This follower's share of the pages budget."""
    return max(MIN_PAGE_BYTES, min(PAGE_BYTES, PAGES_BUDGET // max(1, hub.subscribers)))


def _page_size(batch: list[Frame], page_bytes: int) -> int:
    """How many events the next page may hold, from the size of this one's."""
    average = sum(len(frame) for _, _, frame in batch) / len(batch)
    return max(1, min(MAX_PAGE, int(page_bytes / average)))
