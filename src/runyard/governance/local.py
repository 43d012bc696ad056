"""``local://`` limits, held within this process: a semaphore whose waiters are
served fairly across owners (``runyard.fairness``), so one owner's burst of 100
calls does not starve another owner's single call; moving windows of requests
and tokens; a breaker.

All of it changes only between awaits, on the event loop: no locks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from runyard.fairness import FairLines
from runyard.governance.breaker import Breaker, BreakerOpen, Ticket
from runyard.governance.semaphore import Permit
from runyard.governance.windows import WINDOW_S, check_fits
from runyard.observability import metrics

MIN_SLEEP_S = 0.01


class FairSemaphore:
    """``capacity`` permits; waiters are served fairly across owners."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._waiters: FairLines[asyncio.Future[None]] = FairLines()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, owner: str) -> Permit:
        if self.in_flight < self.capacity and not self._waiters:
            self.in_flight += 1
            self._waiters.take(owner)
            return Permit(owner)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.push(owner, waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(Permit(owner))  # granted while being cancelled: hand it on
            else:
                self._waiters.remove(owner, waiter)
            raise
        return Permit(owner)

    def release(self, permit: Permit) -> None:
        self.in_flight -= 1
        self._waiters.done(permit.owner)
        while (turn := self._waiters.pop()) is not None:
            next_owner, waiter = turn
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
                return
            self._waiters.done(next_owner)  # cancelled meanwhile: its turn passes


class MovingWindow:
    """What was taken in the last ``WINDOW_S`` seconds, as (time, amount) entries.

    Written here rather than taken from the ``limits`` library: its memory
    storage keeps one entry per unit, so a call of 1,200 tokens against a
    90,000 tpm window appended 1,200 entries and scanned them all (measured:
    3 ms a call, growing with the window's fill); this keeps one per call."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def room_in(self, amount: int, at: float) -> float:
        """Seconds until ``amount`` fits (0: it fits now)."""
        self._expire(at)
        excess = self._used + amount - self.capacity
        if excess <= 0:
            return 0.0
        freed = 0
        for taken_at, taken in self._entries:  # oldest first: the order in which room comes back
            freed += taken
            if freed >= excess:
                return taken_at + WINDOW_S - at
        return WINDOW_S  # unreachable for an amount that fits the capacity at all

    def take(self, amount: int, at: float) -> None:
        self._entries.append((at, amount))
        self._used += amount

    def _expire(self, at: float) -> None:
        entries = self._entries
        while entries and entries[0][0] <= at - WINDOW_S:
            self._used -= entries.popleft()[1]


class MemoryWindows:
    """``rpm`` and ``tpm`` as moving windows of the last minute, in memory."""

    def __init__(self, name: str, rpm: int | None, tpm: int | None) -> None:
        self.name = name
        self._requests = MovingWindow(rpm) if rpm else None
        self._tokens = MovingWindow(tpm) if tpm else None

    async def take(self, tokens: int) -> None:
        wanted = self._wanted(tokens)
        while True:
            at = time.monotonic()
            wait = max(window.room_in(amount, at) for window, amount in wanted)
            if wait <= 0:
                # nothing awaits between the check and the take: no other call of
                # this process can take the room meanwhile
                for window, amount in wanted:
                    window.take(amount, at)
                return
            await asyncio.sleep(max(wait, MIN_SLEEP_S))

    def _wanted(self, tokens: int) -> list[tuple[MovingWindow, int]]:
        wanted: list[tuple[MovingWindow, int]] = []
        if self._requests is not None:
            wanted.append((self._requests, 1))
        if self._tokens is not None and tokens > 0:
            check_fits(self.name, tokens, self._tokens.capacity)
            wanted.append((self._tokens, tokens))
        return wanted


class LocalBreaker:
    """The breaker of one limit, in this process."""

    def __init__(self, name: str, policy: Breaker) -> None:
        self.name = name
        self.policy = policy
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    async def admit(self) -> Ticket:
        if self._opened_at is None:
            return Ticket()
        waited = time.monotonic() - self._opened_at
        if waited < self.policy.reset_s or self._probing:
            raise BreakerOpen(f"the {self.name} breaker is open ({self.policy.reset_s - waited:.1f} s until a probe)")
        self._probing = True
        return Ticket(probe=True)

    async def succeeded(self, ticket: Ticket) -> None:
        self._failures, self._opened_at, self._probing = 0, None, False
        metrics.BREAKER_OPEN.labels(self.name).set(0)

    async def failed(self, ticket: Ticket) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.policy.failures:
            self._opened_at, self._probing = time.monotonic(), False
            metrics.BREAKER_OPEN.labels(self.name).set(1)

    def abandoned(self, ticket: Ticket) -> None:
        if ticket.probe:
            self._probing = False


class LocalLimits:
    """The ``local://`` backend: every limit's state in this process."""

    def __init__(self, url: str = "local://", **options: Any) -> None:
        self.url = url  # options (a shared backend's lease) mean nothing here

    def semaphore(self, name: str, capacity: int) -> FairSemaphore:
        return FairSemaphore(capacity)

    def windows(self, name: str, rpm: int | None, tpm: int | None) -> MemoryWindows:
        return MemoryWindows(name, rpm, tpm)

    def breaker(self, name: str, policy: Breaker) -> LocalBreaker:
        return LocalBreaker(name, policy)

    def caps(self, name: str, capacity: int) -> None:
        return None  # the caller's count in this process is the deployment's

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None
