"""One rule for waiting before trying again what failed: a wait that doubles
with each failure in a row, from ``first_s`` up to ``max_s``, each scaled by a
random factor (``spread``) so that processes do not retry in step.

Every retry loop of the runtime uses it: a limit's calls to Redis (fail
closed: wait for Redis rather than admit unseen), the broker's reconnection and
its pause in publishing, the event writer riding out a store outage, the
client's resumption of a stream. ``retry`` runs a call under it (with
tenacity); a loop that does more between attempts than calling asks ``delay``.
Loops that tick at a fixed period (lease renewals, polls) are not retries.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, stop_never

T = TypeVar("T")

_MAX_DOUBLINGS = 64  # 2.0 ** 1024 overflows; every ceiling is reached long before


@dataclass(frozen=True, slots=True)
class Backoff:
    """The wait after ``failures`` failures in a row: ``first_s`` doubling up to
    ``max_s``, times a random factor in ``spread`` (``(1, 1)``: no jitter)."""

    first_s: float
    max_s: float
    spread: tuple[float, float] = (0.5, 1.0)  # shortened by up to half: never longer than max_s

    def delay(self, failures: int) -> float:
        base = min(self.max_s, self.first_s * 2.0 ** min(max(failures, 1) - 1, _MAX_DOUBLINGS))
        low, high = self.spread
        return base if low == high == 1 else base * random.uniform(low, high)

    def wait(self, state: RetryCallState) -> float:
        """As a tenacity ``wait``: the delay after the attempt that just failed."""
        return self.delay(state.attempt_number)


async def retry(
    call: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    failed: Callable[[BaseException], object] | None = None,
    give_up_after_s: float | None = None,
) -> T:
    """``await call()`` until it returns, waiting ``backoff`` after each failure
    that is one of ``on`` (anything else is raised at once). ``failed`` hears of
    each such failure. After ``give_up_after_s``, the last failure is raised."""

    def heard(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if failed is not None and exc is not None:
            failed(exc)

    attempts = AsyncRetrying(
        wait=backoff.wait,
        retry=retry_if_exception_type(on),
        stop=stop_never if give_up_after_s is None else stop_after_delay(give_up_after_s),
        after=heard,  # every failure that is retried or, past give_up_after_s, raised
        reraise=True,
    )
    async for attempt in attempts:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity returns the result or raises")
