"""``redis://host:port/db[?prefix=runyard:]``: limits shared by every process
of a deployment, on the broker's Redis (``RUNYARD_BROKER``) under its key
prefix, in ``{prefix}limits:``.

The parts of a limit: ``redis_semaphore.py`` (the concurrency cap, a
lease-based fair semaphore), ``redis_windows.py`` (``rpm``, ``tpm``) and
``redis_breaker.py``; beside the limits, ``redis_caps.py`` (a cap per key on
leases, refused rather than waited for: the streams per owner). This backend
owns what they share: one client for their
scripts, and two tasks per process::

    keeper        every quarter lease: renews every permit (and cap lease) this process
                  holds and every waiter it has, one script per limit; wakes the waiters that
                  were granted a permit or dropped; while any wait, runs again as
                  the earliest lease ends (a dead holder's permit is handed on then)
    inbox reader  BLPOP on {prefix}limits:inbox:{process}, a connection of its own:
                  a script that grants a permit to a waiter of this process pushes
                  the waiter there, and the reader wakes it

Neither waits on anything but Redis; both keep trying, with backoff, while
Redis is away. ``close`` stops them, stops the calls still holding permits
(nothing would renew them) and gives those permits back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine
from typing import Any, Protocol

from runyard.broker.redis_wire import split_url
from runyard.governance.breaker import Breaker
from runyard.governance.redis_breaker import RedisBreaker
from runyard.governance.redis_caps import RedisCaps
from runyard.governance.redis_common import BACKOFF, REDIS_ERRORS, TIMEOUT_S, Outage, connect, log, server_ms
from runyard.governance.redis_semaphore import RedisSemaphore
from runyard.governance.redis_windows import RedisWindows
from runyard.retrying import retry
from runyard.settings import redact_url

INBOX_BLOCK_S = 1.0  # one BLPOP waits this long at most, then the reader asks again
CLOSE_TIMEOUT_S = 2.0  # close() waits this long at most for permits to be given back


class Leased(Protocol):
    """A part holding leases the keeper renews: a semaphore's permits, a cap's places."""

    name: str

    @property
    def busy(self) -> bool: ...

    async def keep(self) -> float: ...

    async def close(self) -> None: ...


class RedisLimits:
    """The ``redis://`` limits backend of one process."""

    def __init__(self, url: str, *, lease_s: float) -> None:
        if lease_s <= 0:
            raise ValueError("lease_s must be > 0")
        self.url = url
        redis_url, prefix = split_url(url)
        self.prefix = f"{prefix}limits:"
        self.lease_s = lease_s
        self.idle_ms = server_ms(max(60.0, 10 * lease_s))  # a limit's keys expire after this long unused
        self.process = secrets.token_hex(8)
        self.inbox_prefix = f"{self.prefix}inbox:"
        self.inbox = self.inbox_prefix + self.process
        self.client = connect(redis_url)
        self._blocking = connect(redis_url, max_connections=1)  # BLPOP holds its connection: a pool of its own
        self.wakers: dict[str, asyncio.Event] = {}  # waiting member -> its wake-up, for the inbox reader
        self._leased: list[Leased] = []  # what the keeper renews
        self._caps: dict[str, RedisCaps] = {}
        self._work = asyncio.Event()  # set when a semaphore gets a waiter: the keeper has something to do
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    # -- the parts ---------------------------------------------------------------

    def semaphore(self, name: str, capacity: int) -> RedisSemaphore:
        semaphore = RedisSemaphore(self, name, capacity)
        self._leased.append(semaphore)
        return semaphore

    def caps(self, name: str, capacity: int) -> RedisCaps:
        """At most ``capacity`` leases per key under ``name`` (made once per name)."""
        caps = self._caps.get(name)
        if caps is None or caps.capacity != capacity:
            caps = self._caps[name] = RedisCaps(self, name, capacity)
            self._leased.append(caps)
        return caps

    def windows(self, name: str, rpm: int | None, tpm: int | None) -> RedisWindows:
        return RedisWindows(self, name, rpm, tpm)

    def breaker(self, name: str, policy: Breaker) -> RedisBreaker:
        return RedisBreaker(self, name, policy)

    def has_work(self) -> None:
        self._work.set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in the background (giving back, freeing a probe); close() waits for it."""
        if self._closed:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- lifecycle ---------------------------------------------------------------

    async def open(self) -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await self.client.ping()
        except REDIS_ERRORS as exc:
            log.warning("limits: Redis at %s is not reachable yet (%s); calls wait for it", redact_url(self.url), exc)
        self._tasks = [
            asyncio.create_task(self._keep_forever(), name="runyard-limits-keeper"),
            asyncio.create_task(self._read_inbox(), name="runyard-limits-inbox"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(part.close() for part in self._leased))
                while self._background:
                    await asyncio.wait(set(self._background))
        self._closed = True
        for task in list(self._background):
            task.cancel()
        await self._blocking.aclose()
        await self.client.aclose()

    # -- the background tasks ----------------------------------------------------

    async def _keep_forever(self) -> None:
        while True:
            busy = [part for part in self._leased if part.busy]
            if not busy:
                self._work.clear()
                await self._work.wait()
                continue
            due = self.lease_s / 4
            for part in busy:
                try:
                    due = min(due, await part.keep())
                except Exception:  # a bug must not stop the renewals of every other permit
                    log.exception("limits: renewing %s's leases failed", part.name)
            await asyncio.sleep(due)

    async def _read_inbox(self) -> None:
        outage = Outage("limits: the wake-up inbox")

        async def next_wake_up() -> Any:
            async with asyncio.timeout(INBOX_BLOCK_S + TIMEOUT_S):
                return await self._blocking.blpop([self.inbox], timeout=INBOX_BLOCK_S)

        while True:
            # while Redis fails, the keeper wakes granted waiters, every quarter lease
            reply = await retry(next_wake_up, BACKOFF, on=REDIS_ERRORS, failed=outage.failed)
            outage.recovered()
            if reply is not None:
                member = reply[1]
                wake = self.wakers.get(member.decode() if isinstance(member, bytes) else member)
                if wake is not None:
                    wake.set()
