"""The Redis broker's subscriber connection: the runs a process watches, and its signals.

One connection of its own, outside the pool, read by one task (``read_replies``).
It is subscribed to ``{prefix}control`` for its whole life, and to a run's
channel while the process's hub watches the run::

    watch(run) ──► queued ──┐
    unwatch(run) ──► queued ┴─► one write: SUBSCRIBE a b c ..., UNSUBSCRIBE x y ...
    reader task ◄── "subscribe" confirmations (each wakes its watch), messages

The changes asked for while a write is on its way go in the next one: a ramp of
1,000 streams opening together cost Redis 51 ``SUBSCRIBE`` commands, not 1,002
(``bench/README.md``, "A twenty-third round"). A subscription is
confirmed by Redis before ``watch`` returns. After the connection comes back,
every watched run is subscribed again; each confirmation is reported
(``Listener.subscribed``) so that the broker resyncs the run's channel, whose
followers read the store once, and wakes its own workers when the control
channel holds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from runyard.broker.redis_wire import Channels, read_replies
from runyard.retrying import Backoff

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection

log = logging.getLogger("runyard.broker")

WATCH_TIMEOUT_S = 1.0  # a join waits this long at most for Redis to confirm a subscription
# The subscriber reconnects after 50 ms (with jitter), doubling up to 2 s while Redis stays unreachable.
RECONNECT = Backoff(first_s=0.05, max_s=2.0)


class Listener(Protocol):
    """What the subscriber connection hears, for the broker to act on."""

    def on_events(self, message: bytes) -> None:
        """A message on a run's (or a session's) channel."""

    def on_signal(self, message: bytes) -> None:
        """A message on the control channel."""

    def on_subscribed(self, run_id: str | None) -> None:
        """A subscription holds: the run's channel, or (``None``) the control channel."""


class Subscriber:
    """The runs watched by one process, kept subscribed on one connection."""

    def __init__(self, client: Redis, channels: Channels, listener: Listener) -> None:
        self._client = client
        self._channels = channels
        self._control = channels.control
        self._listener = listener
        self._closed = False
        # only the reader task reads the connection; the sender task and the reader write to it
        self._watched: set[str] = set()  # runs the hub has subscribers for
        self._subscribing: list[bytes] = []  # channels to SUBSCRIBE in the next write
        self._unwatched: set[str] = set()  # runs to UNSUBSCRIBE in the next write
        self._conn: AbstractConnection | None = None  # the connection, while it is up
        self._attempt: asyncio.Future[None] | None = None  # the connection attempt under way, if any
        # Per channel, one entry per SUBSCRIBE sent and not yet confirmed, in order
        # (Redis confirms each in turn): a waiting watch's future, or None.
        self._confirming: dict[bytes, deque[asyncio.Future[None] | None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start reading; returns once the first connection attempt is over, whatever its outcome."""
        first = self._attempt = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._subscribe_forever(), name="runyard-redis-subscriber")
        await asyncio.shield(first)

    async def close(self) -> None:
        self._closed = True
        for task in (self._reader, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._reader = self._sender = None
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_result(None)  # the reader was cancelled before it began
        self._attempt = None
        await self._disconnect()

    # -- watching ----------------------------------------------------------------

    async def watch(self, run_id: str) -> None:
        if self._closed:
            return
        self._watched.add(run_id)
        self._unwatched.discard(run_id)
        try:
            async with asyncio.timeout(WATCH_TIMEOUT_S):
                while self._conn is None:
                    attempt = self._attempt
                    if attempt is None:
                        return  # Redis is down: the next connection subscribes the run and resyncs it
                    await asyncio.shield(attempt)
                if run_id not in self._watched:
                    return  # unwatched while this waited
                channel = self._channels.of(run_id)
                confirmed = asyncio.get_running_loop().create_future()
                self._confirming.setdefault(channel, deque()).append(confirmed)
                self._subscribing.append(channel)
                self._send_soon()
                await confirmed
        except TimeoutError:
            log.warning("Redis did not confirm the subscription to run %s within %gs", run_id, WATCH_TIMEOUT_S)

    def unwatch(self, run_id: str) -> None:
        self._watched.discard(run_id)
        if self._conn is None or self._closed:
            return  # no live subscription: the next connection leaves the run out
        self._unwatched.add(run_id)
        self._send_soon()

    def _send_soon(self) -> None:
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_changes(), name="runyard-redis-subscriptions")

    async def _send_changes(self) -> None:
        """What was watched and unwatched since the last write, in one write:
        SUBSCRIBE first, so that a run watched and then unwatched meanwhile ends
        unsubscribed; a run unwatched and watched again is left subscribed."""
        try:
            while (self._subscribing or self._unwatched) and self._conn is not None:
                subscribe, self._subscribing = self._subscribing, []
                unwatched, self._unwatched = self._unwatched, set()
                leave = [self._channels.of(run_id) for run_id in unwatched if run_id not in self._watched]
                commands: list[list[bytes | str]] = [["SUBSCRIBE", *subscribe]] if subscribe else []
                if leave:
                    commands.append(["UNSUBSCRIBE", *leave])
                if commands:
                    await self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
        except (RedisError, OSError) as exc:
            # The reader notices the broken connection and reconnects: every watched
            # run is subscribed again, and the watches waiting here are let go.
            log.debug("changing subscriptions failed: %s", exc)
        finally:
            self._sender = None

    # -- the reader task ---------------------------------------------------------

    async def _subscribe_forever(self) -> None:
        failures = 0  # connections lost or refused since the last one that held
        down_since: float | None = None
        while True:
            attempt = self._attempt
            if attempt is None:
                attempt = self._attempt = asyncio.get_running_loop().create_future()
            try:
                await self._connect()
            except Exception as exc:
                await self._disconnect()
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("cannot subscribe to Redis (%s); retrying", exc)
            else:
                if down_since is not None:
                    log.warning("subscribed to Redis again after %.1fs", time.monotonic() - down_since)
                    down_since = None
                failures = 0
            finally:
                self._attempt = None
                if not attempt.done():
                    attempt.set_result(None)  # watchers waiting for a connection go on, with or without one
            if down_since is None:
                try:
                    assert self._conn is not None
                    await read_replies(self._conn, self._dispatch)
                except Exception as exc:
                    down_since = time.monotonic()
                    log.warning("lost the Redis subscriber connection (%s); reconnecting", exc)
                await self._disconnect()
            failures += 1
            await asyncio.sleep(RECONNECT.delay(failures))

    async def _connect(self) -> None:
        """Open the connection and subscribe every watched run."""
        conn: AbstractConnection = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        # No await between taking the watched runs and sending SUBSCRIBE: a watch
        # that starts later sees the connection and subscribes by itself.
        channels = [self._control, *(self._channels.of(run_id) for run_id in self._watched)]
        for channel in channels:
            self._confirming.setdefault(channel, deque()).append(None)
        self._conn = conn
        await conn.send_command("SUBSCRIBE", *channels, check_health=False)

    def _dispatch(self, reply: Any) -> None:
        """One reply read from the connection."""
        if not isinstance(reply, list) or len(reply) != 3:
            return  # a PONG
        kind, channel, payload = reply
        if kind == b"message":
            if channel == self._control:
                self._listener.on_signal(payload)
            else:
                self._listener.on_events(payload)
        elif kind == b"subscribe":
            self._on_subscribed(channel)

    def _on_subscribed(self, channel: bytes) -> None:
        waiters = self._confirming.get(channel)
        if waiters:
            waiter = waiters.popleft()
            if not waiters:
                del self._confirming[channel]
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if channel == self._control:
            self._listener.on_subscribed(None)
        else:
            run_id = self._channels.run_of(channel)
            if run_id is not None:
                self._listener.on_subscribed(run_id)

    async def _disconnect(self) -> None:
        """Drop the connection; its subscriptions die with it, and what was
        queued for it is left to the next one (which subscribes every watched run)."""
        conn, self._conn = self._conn, None
        self._subscribing = []
        self._unwatched.clear()
        confirming, self._confirming = self._confirming, {}
        for waiters in confirming.values():
            for waiter in waiters:
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)  # the next connection subscribes the run and resyncs it
        if conn is not None:
            await conn.disconnect(nowait=True)
