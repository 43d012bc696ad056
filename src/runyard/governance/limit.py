"""A limit on an external API, as ``app.limit(...)`` declares it and pipelines
use it: ``async with ctx.limit(name, tokens=)`` and ``await ctx.call(name, fn)``.

Admission goes breaker (fail fast while open), then windows (``rpm``, ``tpm``),
then a fair concurrency permit. A run that waits more than a second is told
so with a ``limit.wait`` event. ``call`` adds retries with backoff and jitter
that honour ``Retry-After``; cancellation stops a wait or a retry at once and
gives back what was held.

Where the state lives is the registry's backend (``backend.py``): this
process until ``LimitRegistry.open("redis://...")`` shares it between every
process of the deployment, and again after ``close()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from runyard.errors import ConfigurationError
from runyard.governance import retry
from runyard.governance.backend import Caps, LimitBackend, backend_from_url
from runyard.governance.breaker import Breaker, BreakerState
from runyard.governance.local import LocalLimits
from runyard.governance.semaphore import Permit, PermitLost, Semaphore, guard
from runyard.governance.windows import Windows
from runyard.observability import metrics
from runyard.observability.tracing import LimitSpan, limit_span


class Caller(Protocol):
    """Who waits for a limit: a run (``RunContext``) queues as its owner and tells
    its stream when it has waited long."""

    @property
    def owner(self) -> str: ...

    async def emit(self, type: str, data: Any = None) -> None: ...


T = TypeVar("T")
WAIT_NOTICE_S = 1.0


@dataclass(frozen=True, slots=True)
class _Parts:
    """A limit's state on one backend; a call keeps the parts it began with."""

    semaphore: Semaphore | None
    windows: Windows | None
    breaker: BreakerState | None


class Limit:
    """One declared limit: any of a concurrency cap, windows and a breaker."""

    def __init__(
        self,
        name: str,
        concurrency: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        breaker: Breaker | None = None,
        backend: LimitBackend | None = None,
    ) -> None:
        self.name = name
        self.concurrency, self.rpm, self.tpm, self.breaker = concurrency, rpm, tpm, breaker
        self._local = self._build(backend or LocalLimits())
        self._parts = self._local

    def bind(self, backend: LimitBackend | None) -> None:
        """Keep the state on ``backend`` from now on; None: back to this process's own."""
        self._parts = self._local if backend is None else self._build(backend)

    def _build(self, backend: LimitBackend) -> _Parts:
        name = self.name
        return _Parts(
            backend.semaphore(name, self.concurrency) if self.concurrency else None,
            backend.windows(name, self.rpm, self.tpm) if self.rpm or self.tpm else None,
            backend.breaker(name, self.breaker) if self.breaker else None,
        )

    @property
    def in_flight(self) -> int:
        """Calls of this process holding a permit."""
        return self._parts.semaphore.in_flight if self._parts.semaphore else 0

    @property
    def queued(self) -> int:
        """Calls waiting for a permit: in this process's lines on ``local://``; on
        ``redis://`` the larger of this process's waiters (counted from the moment
        they ask, before Redis has them in line) and the deployment's, as Redis last said."""
        return self._parts.semaphore.queued if self._parts.semaphore else 0

    @asynccontextmanager
    async def acquire(self, ctx: Caller, tokens: int = 0) -> AsyncIterator[None]:
        """Hold one admission for the block; its outcome feeds the breaker. A
        shared permit lost mid-call (its lease could not be renewed) stops the
        block with ``PermitLost``."""
        with limit_span(self.name, call=False) as traced:
            async with self._hold(ctx, tokens, traced):
                yield

    @asynccontextmanager
    async def _hold(self, ctx: Caller, tokens: int, traced: LimitSpan | None) -> AsyncIterator[None]:
        parts = self._parts
        breaker = parts.breaker
        ticket = await breaker.admit() if breaker is not None else None
        try:
            permit = await self._admit(parts, ctx, tokens, traced)
        except BaseException:
            if breaker is not None and ticket is not None:
                breaker.abandoned(ticket)
            raise
        try:
            with guard(permit):
                yield
        except BaseException as exc:
            self._release(parts, permit)
            if breaker is not None and ticket is not None:
                if isinstance(exc, Exception) and not isinstance(exc, PermitLost):
                    await breaker.failed(ticket)
                else:
                    breaker.abandoned(ticket)  # cancelled or stopped: nothing learnt about the API
            raise
        self._release(parts, permit)
        if breaker is not None and ticket is not None:
            await breaker.succeeded(ticket)

    async def call(
        self, ctx: Caller, fn: Callable[..., Awaitable[T]], args: Any, kwargs: Any, retries: int, tokens: int
    ) -> T:
        """``fn(*args, **kwargs)`` under this limit, tried up to ``retries`` more times."""
        attempts = AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            wait=retry.wait,
            retry=retry_if_exception(retry.retryable),
            reraise=True,
        )
        with limit_span(self.name, call=True) as traced:  # one span for the call, however many attempts
            async for attempt in attempts:
                with attempt:
                    if traced is not None:
                        traced.attempts += 1
                    async with self._hold(ctx, tokens, traced):
                        return await fn(*args, **kwargs)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _admit(self, parts: _Parts, ctx: Caller, tokens: int, traced: LimitSpan | None) -> Permit | None:
        """Wait for the windows and a permit, saying so after a second."""
        if parts.windows is None and parts.semaphore is None:
            return None
        started = time.perf_counter()
        admission = asyncio.ensure_future(self._wait_for_room(parts, ctx.owner, tokens))
        try:
            done, _ = await asyncio.wait({admission}, timeout=WAIT_NOTICE_S)
            if not done:
                queued = parts.semaphore.queued if parts.semaphore else 0
                await ctx.emit("limit.wait", {"limit": self.name, "queued_behind": max(0, queued - 1)})
            permit = await admission
        except BaseException:
            if admission.done() and not admission.cancelled() and admission.exception() is None:
                self._release(parts, admission.result())  # admitted just as we were cancelled: give it back
            else:
                admission.cancel()
            raise
        waited = time.perf_counter() - started
        metrics.LIMIT_WAIT_SECONDS.labels(self.name).observe(waited)
        if traced is not None:
            traced.wait_ms += waited * 1000
        if parts.semaphore is not None:
            metrics.LIMIT_IN_FLIGHT.labels(self.name).set(parts.semaphore.in_flight)
        return permit

    async def _wait_for_room(self, parts: _Parts, owner: str, tokens: int) -> Permit | None:
        if parts.windows is not None:
            await parts.windows.take(tokens)
        if parts.semaphore is not None:
            return await parts.semaphore.acquire(owner)
        return None

    def _release(self, parts: _Parts, permit: Permit | None) -> None:
        if parts.semaphore is not None and permit is not None:
            parts.semaphore.release(permit)
            metrics.LIMIT_IN_FLIGHT.labels(self.name).set(parts.semaphore.in_flight)


class LimitRegistry:
    """The limits an app declared, by name, and the backend keeping their state."""

    def __init__(self) -> None:
        self._limits: dict[str, Limit] = {}
        self._url = "local://"
        self._shared: LimitBackend | None = None  # while open on a shared backend

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
        limit = Limit(name, concurrency, rpm, tpm, breaker)
        limit.bind(self._shared)
        self._limits[name] = limit

    def get(self, name: str) -> Limit:
        try:
            return self._limits[name]
        except KeyError:
            raise ConfigurationError(f"limit {name!r} is not declared: call app.limit({name!r}, ...)") from None

    def caps(self, name: str, capacity: int) -> Caps | None:
        """The deployment-wide cap ``name`` while the limits are shared (``open``), else None."""
        return None if self._shared is None else self._shared.caps(name, capacity)

    async def open(self, broker_url: str, *, lease_s: float = 10.0) -> None:
        """Keep the limits' state where the broker ``broker_url`` (``RUNYARD_BROKER``)
        says: ``redis://...`` shares it with every process on that Redis and
        ``?prefix=``; ``local://`` keeps it in this process. Opening again on the
        same URL does nothing. ``lease_s``: how long a shared permit outlives a
        process that died holding it (a served app passes ``RUNYARD_LIMIT_LEASE_S``;
        10 s, the setting's default, for a registry used on its own)."""
        if broker_url == self._url:
            return
        if self._shared is not None:
            raise RuntimeError(f"the limits are already shared through {self._url}; close() first")
        backend = backend_from_url(broker_url, lease_s=lease_s)  # ConfigurationError for an unknown scheme
        if urlsplit(broker_url).scheme == "local":
            return  # the limits stay exactly as they are: in this process
        await backend.open()
        self._shared, self._url = backend, broker_url
        for limit in self._limits.values():
            limit.bind(backend)

    async def close(self) -> None:
        """Stop sharing: give back what this process holds, and keep the limits
        in this process again. Calls under way keep the parts they began with."""
        backend, self._shared, self._url = self._shared, None, "local://"
        if backend is None:
            return
        for limit in self._limits.values():
            limit.bind(None)
        await backend.close()
