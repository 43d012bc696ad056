"""What the ``redis://`` parts of a limit share: clients whose calls are
bounded by our own timeout, the errors that mean "Redis did not answer",
the backoff (``runyard.retrying``) while it does not, and logging an outage once rather than
at every retry.

Why our own timeout: with ``socket_timeout`` set, redis-py writes each command
through ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation
that arrives just as the write completes (the call then returns normally in a
cancelled task). A waiter whose cancellation is lost would take a permit that
nobody gives back, so the clients have no socket timeout and every call runs
inside ``asyncio.timeout(TIMEOUT_S)`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Protocol

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from runyard.retrying import Backoff

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

log = logging.getLogger("runyard.governance")

TIMEOUT_S = 1.0  # connecting, and one call from sending to its answer
MAX_CONNECTIONS = 50  # per client: calls beyond wait for one of these
# RedisError covers connection refused and reset; OSError what the socket raises
# around them, and TimeoutError (one) when TIMEOUT_S passes.
REDIS_ERRORS = (RedisError, OSError)
# After a failed command, wait 20 ms (with jitter), doubling up to 1 s.
BACKOFF = Backoff(first_s=0.02, max_s=1.0)


class Shared(Protocol):
    """What the parts of a limit share, owned by the backend (``RedisLimits``)."""

    client: Redis  # every part's scripts run on it
    prefix: str  # {prefix}limits:
    lease_s: float
    idle_ms: int  # a limit's keys expire after this long unused
    process: str  # this process's id in Redis
    inbox_prefix: str  # a process's wake-up inbox is this + its id
    wakers: dict[str, asyncio.Event]  # waiting member -> its wake-up, set by the inbox reader

    def has_work(self) -> None:
        """A semaphore has waiters: the keeper renews them."""

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in the background; close() waits for it."""


def connect(redis_url: str, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client for ``redis_url`` (no key prefix in it) whose calls are bounded by ``run``.

    Its pool blocks a call until a connection is free, rather than failing it:
    200 calls waiting at once share ``max_connections`` connections."""
    # One immediate retry: a pooled connection that Redis closed (a restart) fails
    # once, then reconnects. Longer retries are each part's own, with backoff.
    pool = BlockingConnectionPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=None,  # the wait for a connection is inside run()'s timeout
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
    )
    pool.connection_kwargs["socket_timeout"] = None  # even if the URL sets one: see above
    return Redis.from_pool(pool)


async def run(script: AsyncScript, keys: Sequence[str], args: Sequence[Any], timeout_s: float = TIMEOUT_S) -> Any:
    """One call of ``script``, given up after ``timeout_s`` (``TimeoutError``)."""
    async with asyncio.timeout(timeout_s):
        return await script(keys=keys, args=args)


def lua(name: str) -> str:
    """The text of the script ``lua/{name}.lua`` shipped beside this module (read once, at import)."""
    return files("runyard.governance").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def server_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class Outage:
    """Says once that Redis fails for ``what``, and once that it answers again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._since: float | None = None

    def failed(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            log.warning("%s: Redis failed (%s)", self.what, exc)

    def recovered(self) -> None:
        if self._since is not None:
            log.warning("%s: Redis answers again after %.1fs", self.what, time.monotonic() - self._since)
            self._since = None
