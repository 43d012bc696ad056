"""The contract of a limit's concurrency cap (``concurrency=N``): a semaphore
whose waiters are served fairly across owners, and the permits it hands out.

Backends: ``local.py`` (``FairSemaphore``, this process) and
``redis_semaphore.py`` (``RedisSemaphore``, every process of a deployment).

A shared permit is a lease: its holder renews it, and when it cannot prove
in time that it still holds it, the permit is *lost*. ``guard`` then cancels
the block using it, which raises ``PermitLost``: the cap holds even if that
ends a call in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from runyard.errors import RunyardError


class PermitLost(RunyardError):
    """The call's concurrency permit could not be renewed before its lease
    ended, so the call was stopped to keep the cap; ``ctx.call`` retries it."""

    code = "permit_lost"
    status = 503


class Permit:
    """One permit held, given back with ``Semaphore.release``."""

    __slots__ = ("_on_lost", "id", "lost", "owner")

    def __init__(self, owner: str, id: str = "") -> None:
        self.owner = owner
        self.id = id
        self.lost = False
        self._on_lost: Callable[[], None] | None = None  # while a block uses the permit (``guard``)

    def lose(self) -> None:
        """The semaphore can no longer vouch for this permit (its lease ran out)."""
        if self.lost:
            return
        self.lost = True
        if self._on_lost is not None:
            self._on_lost()

    @contextmanager
    def on_loss(self, stop: Callable[[], None]) -> Iterator[None]:
        """Call ``stop`` if the permit is lost while the block runs (one block at a time)."""
        self._on_lost = stop
        try:
            yield
        finally:
            self._on_lost = None


class Semaphore(Protocol):
    """``capacity`` permits, their waiters served fairly across owners."""

    capacity: int

    @property
    def in_flight(self) -> int:
        """Permits this process holds."""
        ...

    @property
    def queued(self) -> int:
        """Calls waiting for a permit (deployment-wide where the backend knows it)."""
        ...

    async def acquire(self, owner: str) -> Permit:
        """Wait for a permit, fairly across owners; cancellation leaves the line at once."""
        ...

    def release(self, permit: Permit) -> None:
        """Give a permit back; never waits."""
        ...


@contextmanager
def guard(permit: Permit | None) -> Iterator[None]:
    """Run the block while ``permit`` is held: when the permit is lost the block
    is cancelled (as ``asyncio.timeout`` does it) and ``PermitLost`` raised."""
    if permit is None:
        yield
        return
    if permit.lost:
        raise PermitLost("the concurrency permit was lost before the call began")
    task = asyncio.current_task()
    assert task is not None, "limits are used from a task"
    cancelling = task.cancelling()
    cancelled = False

    def stop() -> None:
        nonlocal cancelled
        cancelled = True
        task.cancel(msg="runyard: concurrency permit lost")

    with permit.on_loss(stop):
        try:
            yield
        except BaseException as exc:
            if cancelled and task.uncancel() <= cancelling and isinstance(exc, asyncio.CancelledError):
                raise PermitLost("the concurrency permit's lease could not be renewed; the call was stopped") from None
            raise
        else:
            if cancelled:
                task.uncancel()  # the block swallowed our cancellation and finished: its result stands
