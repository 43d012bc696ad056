"""``redis://host:port/db[?prefix=runyard:]``: live fan-out across the processes of a deployment.

Each run has a pub/sub channel, ``{prefix}events:{run_id}``, that a process
subscribes to only while the run has subscribers there (the hub says when, with
``watch`` and ``unwatch``); each session has one too, ``{prefix}events:`` +
its ``session_channel``, on which every batch of its runs' events is published
again for the session's followers::

    publish(events) ──► this process's hub, at once
                   └──► one PUBLISH per run, one pipeline per batch
                                   │
    other process: subscriber connection ──► reader task ──► hub.deliver

The store stays the source of truth: events are persisted before they are
published, so whatever pub/sub loses only delays a stream, and the broker works
to keep that delay short. A subscription is confirmed by Redis before ``watch``
returns; after the subscriber connection comes back, every watched run is
subscribed again and its channel resynced (its followers read the store once),
so a drop costs a store read, not a heartbeat (``redis_subscriber.py``). While
Redis cannot be reached, publishing backs off and remembers each run's newest
unsent event, which it sends when Redis answers again: a follower elsewhere
that sees it with a gap reads the store. ``ping`` raises meanwhile, so the
process reports unready.

Signals (worker wake-ups, cancel requests) travel on one more channel,
``{prefix}control``, subscribed for the connection's whole life. A process
handles its own signals at once, not when they come back. After the subscriber
connection comes back, the process wakes its own workers: whatever was queued
meanwhile is claimed now rather than at the next poll. A queued run's wake-up
goes to two workers instead, through a list (``redis_wakes.py``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from runyard.broker.base import WAKE, Broker, SignalHandler
from runyard.broker.folding import Folded
from runyard.broker.redis_subscriber import Subscriber
from runyard.broker.redis_wakes import RedisWakeQueue
from runyard.broker.redis_wire import Channels, decode_events, encode_events, split_url
from runyard.models import Event
from runyard.retrying import Backoff

if TYPE_CHECKING:
    from runyard.events.hub import Hub, Watcher

log = logging.getLogger("runyard.broker")

# Connecting and answering a command: bounds how long a hung Redis holds up the event writer (once;
# publishing then backs off) or a readiness probe. Commands are bounded with asyncio.timeout, not
# redis-py's socket_timeout: with it, redis-py sends through asyncio.wait_for, which on Python 3.11
# can swallow a cancellation that arrives as the send completes. A URL's socket_connect_timeout wins.
TIMEOUT_S = 1.0
# After a failed publish, batches skip Redis for 50 ms, doubling up to 1 s (no
# jitter: it is a pause of this process's writer, not a retry in step with others).
PUBLISH_PAUSE = Backoff(first_s=0.05, max_s=1.0, spread=(1.0, 1.0))
MAX_UNSENT = 10_000  # runs whose newest unsent event is remembered while Redis is unreachable
# A batch's messages go out as one script call: one command to pack and one reply
# to read. A pipeline of one PUBLISH per run and per session packed each command
# and read each reply under a timeout of its own, and py-spy put a quarter of a
# PostgreSQL + Redis process's CPU there under the steady load (bench/README.md).
PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end"


class RedisBroker(Broker):
    """Redis pub/sub between processes: one client for PUBLISH, one subscriber
    connection read by one task."""

    def __init__(self, url: str) -> None:
        self.url = url
        redis_url, prefix = split_url(url)
        self._channels = Channels(prefix)
        self._on_signal: SignalHandler | None = None
        self._origin = secrets.token_hex(8)  # tells this broker's own messages apart when they come back
        # One immediate retry: a pooled connection that Redis closed (a restart)
        # fails once, then reconnects. Anything longer would hold up the writer.
        self._client = Redis.from_url(redis_url, socket_connect_timeout=TIMEOUT_S, retry=Retry(NoBackoff(), 1))
        self._publish_all = self._client.register_script(PUBLISH_ALL)
        self._hub: Hub | None = None
        self._closed = False
        self._subscriber = Subscriber(self._client, self._channels, self)
        # A wake-up for every worker says only "look at the queue": a burst costs two messages.
        self._wake_all = Folded(lambda: self._send(WAKE, ""), "runyard-redis-waker")
        self.wakes = self._wake_queue = RedisWakeQueue(self._client, prefix, TIMEOUT_S)  # a queued run's: two
        # publishing
        self._resume_at = 0.0  # while Redis fails, batches skip it until then
        self._publish_failures = 0  # in a row
        self._unsent: dict[str, Event] = {}  # run id -> its newest event that did not reach Redis

    # -- lifecycle ---------------------------------------------------------------

    async def open(self, hub: Hub, on_signal: SignalHandler | None = None) -> None:
        self._hub = hub
        self._on_signal = on_signal
        # Start subscribed when Redis is up; when it is not, the reader says so and keeps trying.
        await self._subscriber.start()

    async def close(self) -> None:
        self._closed = True
        await self._wake_all.close()
        await self._wake_queue.close()
        await self._subscriber.close()
        await self._client.aclose()
        self._hub = self._on_signal = None

    async def ping(self) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await self._client.ping()

    # -- signals -----------------------------------------------------------------

    async def signal(self, kind: str, run_id: str = "") -> None:
        self._deliver_signal(kind, run_id)
        if self._closed:
            return
        if kind == WAKE and not run_id:
            self._wake_all.ask()
            return
        await self._send(kind, run_id)

    async def queued(self, pipeline: str) -> None:
        self._deliver_signal(WAKE, "")  # this process's worker, if any, looks at once
        if not self._wake_queue.waiting_here(pipeline):  # and if it waits for the pipeline, no other need
            self._wake_queue.ask(pipeline)

    async def _send(self, kind: str, run_id: str) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await self._client.publish(self._channels.control, orjson.dumps([self._origin, kind, run_id]))
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            log.debug("signal %s %s not sent (%s); workers find it in the store", kind, run_id, exc)

    def _deliver_signal(self, kind: str, run_id: str) -> None:
        if self._on_signal is None:
            return
        try:
            self._on_signal(kind, run_id)
        except Exception:
            log.exception("handling signal %s %s failed", kind, run_id)

    def on_signal(self, message: bytes) -> None:
        try:
            origin, kind, run_id = orjson.loads(message)
        except (ValueError, TypeError) as exc:
            log.warning("ignoring a malformed signal: %s", exc)
            return
        if origin != self._origin:  # our own were handled when sent
            self._deliver_signal(str(kind), str(run_id))

    # -- publishing --------------------------------------------------------------

    async def publish(self, events: list[Event]) -> None:
        if self._hub is not None:
            self._hub.deliver(events)  # subscribers in this process need no round trip through Redis
        if self._closed or not events:
            return
        by_run: dict[str, list[Event]] = {}
        for event in events:
            by_run.setdefault(event.run_id, []).append(event)
        if time.monotonic() < self._resume_at:
            self._remember(by_run)
            return
        messages: list[bytes] = []  # channel, message, channel, message...
        for run_id, event in self._unsent.items():
            if run_id not in by_run:
                self._add_messages(messages, [event])
        for run_events in by_run.values():
            self._add_messages(messages, run_events)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await self._publish_all(args=messages)
        except (RedisError, OSError) as exc:
            self._remember(by_run)
            if not self._publish_failures:
                log.warning("publishing to Redis failed (%s); streams elsewhere catch up from the store", exc)
            self._publish_failures += 1
            self._resume_at = time.monotonic() + PUBLISH_PAUSE.delay(self._publish_failures)
            return
        if self._publish_failures:
            log.warning("publishing to Redis again (%d runs' newest events re-sent)", len(self._unsent))
            self._publish_failures = 0
        self._unsent.clear()

    def _add_messages(self, messages: list[bytes], events: list[Event]) -> None:
        """One run's events for the run's channel, and for its session's (whose
        followers elsewhere read the store when they hear of them)."""
        message = encode_events(self._origin, events)
        messages += (self._channels.of(events[0].run_id), message)
        session = events[0].session
        if session is not None:
            messages += (self._channels.of(session), message)

    def _remember(self, by_run: dict[str, list[Event]]) -> None:
        """Keep each run's newest unsent event: sent later, it shows followers
        elsewhere a gap, which they fill from the store, instead of a silence."""
        unsent = self._unsent
        for run_id, run_events in by_run.items():
            if run_id in unsent or len(unsent) < MAX_UNSENT:
                unsent[run_id] = run_events[-1]

    # -- what the subscriber connection hears --------------------------------------

    @property
    def watcher(self) -> Watcher:
        return self._subscriber

    async def watch(self, run_id: str) -> None:
        await self._subscriber.watch(run_id)

    def unwatch(self, run_id: str) -> None:
        self._subscriber.unwatch(run_id)

    def on_events(self, message: bytes) -> None:
        try:
            origin, events = decode_events(message)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring a malformed event message: %s", exc)
            return
        if origin == self._origin or self._hub is None:
            return  # our own: the hub had them before they were sent
        self._hub.deliver(events)

    def on_subscribed(self, run_id: str | None) -> None:
        if run_id is None:
            self._deliver_signal(WAKE, "")  # wake-ups sent while unsubscribed were lost
        elif self._hub is not None:
            # Whatever was published before this subscription held is only in
            # the store: the run's followers read it once. (For a run watched
            # just now the channel is new and empty, and this costs nothing.)
            self._hub.resync([run_id])
