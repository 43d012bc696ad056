"""Who may create runs, and how often: ``RUNYARD_RATE_LIMIT`` per owner.

The rate is a moving window of the ``limits`` library, kept in this process
with ``local://`` and in Redis with ``redis://`` (the broker's URL and prefix),
so the API processes of a fleet share one count per owner. A caller over it
gets 429 ``rate_limited`` with ``Retry-After``. While Redis cannot be reached,
creations are let through (and logged): an outage of the counter should not
stop every owner from working; quotas, which must be exact, live in the store.
"""

from __future__ import annotations

import logging
import math
import time
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from runyard.errors import ConfigurationError, RunyardError

try:
    from redis.exceptions import RedisError
except ImportError:  # without the redis extra there is no Redis to fail

    class RedisError(Exception):  # type: ignore[no-redef]
        """Stands in for redis-py's error when it is not installed."""


log = logging.getLogger("runyard.admission")


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

    def __init__(self, rate: str, broker_url: str = "local://") -> None:
        try:
            self._item: RateLimitItem = parse(rate)
        except ValueError as exc:
            raise ConfigurationError(f"RUNYARD_RATE_LIMIT {rate!r} is not a rate such as 30/minute: {exc}") from None
        self._limiter = MovingWindowRateLimiter(_storage(broker_url))

    async def admit(self, owner: str) -> None:
        """Count one creation for ``owner``, or raise ``RateLimited``."""
        try:
            if await self._limiter.hit(self._item, "runs", owner):
                return
            reset = (await self._limiter.get_window_stats(self._item, "runs", owner)).reset_time
        except (ConnectionError, OSError, RedisError) as exc:
            log.warning("the creation rate could not be counted (%s); letting the creation through", exc)
            return
        raise RateLimited(f"at most {self._item} run creations per owner", reset - time.time())


def _storage(broker_url: str) -> Storage:
    if urlsplit(broker_url).scheme != "redis":
        return MemoryStorage()
    from runyard.broker.redis_wire import split_url

    url, prefix = split_url(broker_url)
    return RedisStorage(url, implementation="redispy", key_prefix=f"{prefix}rate")
