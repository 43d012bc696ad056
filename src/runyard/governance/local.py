"""The in-process permits of a limit's concurrency cap: a semaphore whose
waiters are served fairly across owners (``runyard.fairness``), so one owner's
burst of 100 calls does not starve another owner's single call."""

from __future__ import annotations

import asyncio

from runyard.fairness import FairLines


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
