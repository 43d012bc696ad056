"""Request and token windows (``rpm``, ``tpm``) with the ``limits`` library's
moving windows: a call takes one request and ``tokens`` tokens, waiting until
both windows have room. (In memory here; the Redis broker will use the same
limiters on ``limits``' Redis storage, shared by every process.)"""

from __future__ import annotations

import asyncio
import time

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

MIN_SLEEP_S = 0.01


class Windows:
    def __init__(self, name: str, rpm: int | None, tpm: int | None) -> None:
        self.name = name
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._requests = RateLimitItemPerMinute(rpm) if rpm else None
        self._tokens = RateLimitItemPerMinute(tpm) if tpm else None

    async def take(self, tokens: int) -> None:
        """Wait until one request and ``tokens`` tokens fit, then take them."""
        while True:
            wanted = self._wanted(tokens)
            if all([await self._limiter.test(item, self.name, cost=cost) for item, cost in wanted]):
                # nothing awaits between the tests and the hits but the in-memory
                # storage, so no other call of this process can take the room meanwhile
                for item, cost in wanted:
                    await self._limiter.hit(item, self.name, cost=cost)
                return
            await asyncio.sleep(await self._time_to_room(wanted))

    def _wanted(self, tokens: int) -> list[tuple[RateLimitItem, int]]:
        wanted: list[tuple[RateLimitItem, int]] = []
        if self._requests is not None:
            wanted.append((self._requests, 1))
        if self._tokens is not None and tokens > 0:
            if tokens > self._tokens.amount:
                raise ValueError(f"{tokens} tokens can never fit in {self.name}'s tpm of {self._tokens.amount}")
            wanted.append((self._tokens, tokens))
        return wanted

    async def _time_to_room(self, wanted: list[tuple[RateLimitItem, int]]) -> float:
        resets = [(await self._limiter.get_window_stats(item, self.name)).reset_time for item, _ in wanted]
        return max(MIN_SLEEP_S, min(resets) - time.time())
