"""Process-local limits on external APIs: ``app.limit(name, concurrency=)`` and
``ctx.limit(name)``.

A limit is a semaphore whose waiters are served round-robin across owners, so
one owner's burst of 100 calls does not starve another owner's single call. A
run that waits more than a second is told so with a ``limit.wait`` event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from runyard.errors import ConfigurationError
from runyard.fairness import FairLines
from runyard.observability import metrics

if TYPE_CHECKING:
    from runyard.context import RunContext

WAIT_NOTICE_S = 1.0


class FairSemaphore:
    """``capacity`` permits; waiters are served fairly across owners."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._waiters: FairLines[asyncio.Future[None]] = FairLines()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, owner: str) -> None:
        if self.in_flight < self.capacity and not self._waiters:
            self.in_flight += 1
            self._waiters.take(owner)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.push(owner, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(owner)  # granted while being cancelled: hand it on
            else:
                self._waiters.remove(owner, waiter)
            raise

    def release(self, owner: str) -> None:
        self.in_flight -= 1
        self._waiters.done(owner)
        while (turn := self._waiters.pop()) is not None:
            next_owner, waiter = turn
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
                return
            self._waiters.done(next_owner)  # cancelled meanwhile: its turn passes


class Limit:
    """One declared limit on an external API."""

    def __init__(self, name: str, concurrency: int | None) -> None:
        self.name = name
        self.concurrency = concurrency
        self._semaphore = FairSemaphore(concurrency) if concurrency else None

    @property
    def in_flight(self) -> int:
        return self._semaphore.in_flight if self._semaphore else 0

    @asynccontextmanager
    async def acquire(self, ctx: RunContext, tokens: int = 0) -> AsyncIterator[None]:
        semaphore = self._semaphore
        if semaphore is None:
            yield
            return
        started = time.perf_counter()
        await self._wait_for_permit(semaphore, ctx)
        metrics.LIMIT_WAIT_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        in_flight = metrics.LIMIT_IN_FLIGHT.labels(self.name)
        in_flight.set(semaphore.in_flight)
        try:
            yield
        finally:
            semaphore.release(ctx.owner)
            in_flight.set(semaphore.in_flight)

    async def _wait_for_permit(self, semaphore: FairSemaphore, ctx: RunContext) -> None:
        acquiring = asyncio.ensure_future(semaphore.acquire(ctx.owner))
        try:
            done, _ = await asyncio.wait({acquiring}, timeout=WAIT_NOTICE_S)
            if not done:
                await ctx.emit("limit.wait", {"limit": self.name, "queued_behind": semaphore.queued - 1})
            await acquiring
        except BaseException:
            if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
                semaphore.release(ctx.owner)  # granted just as we were cancelled
            else:
                acquiring.cancel()
            raise


class LimitRegistry:
    """The limits an app declared, by name."""

    def __init__(self) -> None:
        self._limits: dict[str, Limit] = {}

    def declare(self, name: str, *, concurrency: int | None = None) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._limits[name] = Limit(name, concurrency)

    def get(self, name: str) -> Limit:
        try:
            return self._limits[name]
        except KeyError:
            raise ConfigurationError(f"limit {name!r} is not declared: call app.limit({name!r}, ...)") from None

    def all(self) -> list[Limit]:
        return list(self._limits.values())
