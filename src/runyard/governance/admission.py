"""Who may create runs, and how often: ``RUNYARD_RATE_LIMIT`` per owner.

The rate is a moving window of the ``limits`` library, kept in this process
(``local://``); a caller over it gets 429 ``rate_limited`` with ``Retry-After``.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from runyard.errors import ConfigurationError, RunyardError


class RateLimited(RunyardError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class CreationRate:
    """At most ``rate`` (e.g. ``"30/minute"``) run creations per owner."""

    def __init__(self, rate: str) -> None:
        try:
            self._item: RateLimitItem = parse(rate)
        except ValueError as exc:
            raise ConfigurationError(f"RUNYARD_RATE_LIMIT {rate!r} is not a rate such as 30/minute: {exc}") from None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def admit(self, owner: str) -> None:
        """Count one creation for ``owner``, or raise ``RateLimited``."""
        if await self._limiter.hit(self._item, "runs", owner):
            return
        reset = (await self._limiter.get_window_stats(self._item, "runs", owner)).reset_time
        raise RateLimited(f"at most {self._item} run creations per owner", reset - time.time())
