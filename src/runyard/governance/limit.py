"""A limit on an external API, as ``app.limit(...)`` declares it and pipelines
use it: ``async with ctx.limit(name, tokens=)`` and ``await ctx.call(name, fn)``.

Admission goes breaker (fail fast while open), then windows (``rpm``, ``tpm``),
then a fair concurrency permit. A run that waits more than a second is told
so with a ``limit.wait`` event. ``call`` adds retries with backoff and jitter
that honour ``Retry-After``; cancellation stops a wait or a retry at once and
gives back what was held.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from runyard.errors import ConfigurationError
from runyard.governance import retry
from runyard.governance.breaker import Breaker, BreakerState
from runyard.governance.local import FairSemaphore
from runyard.governance.windows import Windows
from runyard.observability import metrics

if TYPE_CHECKING:
    from runyard.context import RunContext

T = TypeVar("T")
WAIT_NOTICE_S = 1.0


class Limit:
    """One declared limit: any of a concurrency cap, windows and a breaker."""

    def __init__(
        self,
        name: str,
        concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.name = name
        self.concurrency, self.rpm, self.tpm, self.breaker = concurrency, rpm, tpm, breaker
        self._semaphore = FairSemaphore(concurrency) if concurrency else None
        self._windows = Windows(name, rpm, tpm) if rpm or tpm else None
        self._breaker = BreakerState(name, breaker) if breaker else None

    @property
    def in_flight(self) -> int:
        return self._semaphore.in_flight if self._semaphore else 0

    @asynccontextmanager
    async def acquire(self, ctx: RunContext, tokens: int = 0) -> AsyncIterator[None]:
        """Hold one admission for the block; its outcome feeds the breaker."""
        breaker = self._breaker
        if breaker is not None:
            breaker.admit()
        try:
            await self._admit(ctx, tokens)
        except BaseException:
            if breaker is not None:
                breaker.abandoned()
            raise
        try:
            yield
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.abandoned()
            raise
        except Exception:
            if breaker is not None:
                breaker.failed()
            raise
        else:
            if breaker is not None:
                breaker.succeeded()
        finally:
            self._release(ctx)

    async def call(
        self, ctx: RunContext, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any, retries: int, tokens: int
    ) -> T:
        """``fn(*args, **kwargs)`` under this limit, tried up to ``retries`` more times."""
        attempts = AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            wait=retry.wait,
            retry=retry_if_exception(retry.retryable),
            reraise=True,
        )
        async for attempt in attempts:
            with attempt:
                async with self.acquire(ctx, tokens):
                    return await fn(*args, **kwargs)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _admit(self, ctx: RunContext, tokens: int) -> None:
        """Wait for the windows and a permit, saying so after a second."""
        if self._windows is None and self._semaphore is None:
            return
        started = time.perf_counter()
        admission = asyncio.ensure_future(self._wait_for_room(ctx.owner, tokens))
        try:
            done, _ = await asyncio.wait({admission}, timeout=WAIT_NOTICE_S)
            if not done:
                queued = self._semaphore.queued if self._semaphore else 0
                await ctx.emit("limit.wait", {"limit": self.name, "queued_behind": max(0, queued - 1)})
            await admission
        except BaseException:
            if admission.done() and not admission.cancelled() and admission.exception() is None:
                self._release(ctx)  # admitted just as we were cancelled: give it back
            else:
                admission.cancel()
            raise
        metrics.LIMIT_WAIT_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.LIMIT_IN_FLIGHT.labels(self.name).set(self.in_flight)

    async def _wait_for_room(self, owner: str, tokens: int) -> None:
        if self._windows is not None:
            await self._windows.take(tokens)
        if self._semaphore is not None:
            await self._semaphore.acquire(owner)

    def _release(self, ctx: RunContext) -> None:
        if self._semaphore is not None:
            self._semaphore.release(ctx.owner)
            metrics.LIMIT_IN_FLIGHT.labels(self.name).set(self._semaphore.in_flight)


class LimitRegistry:
    """The limits an app declared, by name."""

    def __init__(self) -> None:
        self._limits: dict[str, Limit] = {}

    def declare(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        for what, value in (("concurrency", concurrency), ("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"{what} must be >= 1")
        self._limits[name] = Limit(name, concurrency, rpm, tpm, breaker)

    def get(self, name: str) -> Limit:
        try:
            return self._limits[name]
        except KeyError:
            raise ConfigurationError(f"limit {name!r} is not declared: call app.limit({name!r}, ...)") from None
