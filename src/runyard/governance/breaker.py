"""A circuit breaker: after ``failures`` consecutive failures, calls fail fast
with ``BreakerOpen`` for ``reset_s``; then one probe is let through, whose
outcome closes the breaker or opens it again. (Process-local here; the Redis
broker will share its state between processes.)"""

from __future__ import annotations

import time
from dataclasses import dataclass

from runyard.errors import RunyardError
from runyard.observability import metrics


class BreakerOpen(RunyardError):
    """The limit's breaker is open: the call was not made."""

    code = "breaker_open"
    status = 503


@dataclass(frozen=True, slots=True)
class Breaker:
    """How a limit's breaker behaves: ``Breaker(failures=5, reset_s=60)``."""

    failures: int = 5
    reset_s: float = 60.0

    def __post_init__(self) -> None:
        if self.failures < 1 or self.reset_s <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset_s > 0")


class BreakerState:
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

    def admit(self) -> None:
        """Let a call through, or raise ``BreakerOpen``; after ``reset_s`` one probe passes."""
        if self._opened_at is None:
            return
        waited = time.monotonic() - self._opened_at
        if waited < self.policy.reset_s or self._probing:
            raise BreakerOpen(f"the {self.name} breaker is open ({self.policy.reset_s - waited:.1f} s until a probe)")
        self._probing = True

    def succeeded(self) -> None:
        self._failures, self._opened_at, self._probing = 0, None, False
        metrics.BREAKER_OPEN.labels(self.name).set(0)

    def failed(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.policy.failures:
            self._opened_at, self._probing = time.monotonic(), False
            metrics.BREAKER_OPEN.labels(self.name).set(1)

    def abandoned(self) -> None:
        """The call was cancelled: it says nothing about the API, but a probe ends."""
        self._probing = False
