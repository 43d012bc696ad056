"""The contract of a limit's circuit breaker: after ``failures`` consecutive
failures, calls fail fast with ``BreakerOpen`` for ``reset_s``; then one probe
is let through, whose outcome closes the breaker or opens it again.

Backends: ``local.py`` (``LocalBreaker``, this process) and
``redis_breaker.py`` (``RedisBreaker``, one breaker for the whole deployment,
exactly one probe across it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from runyard.errors import RunyardError


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


@dataclass(frozen=True, slots=True)
class Ticket:
    """What ``admit`` let through: a plain call, or the half-open breaker's probe."""

    probe: bool = False
    token: str = ""
    failures: int = 0  # failures counted when the call was admitted


class BreakerState(Protocol):
    """The breaker of one limit."""

    async def admit(self) -> Ticket:
        """Let a call through, or raise ``BreakerOpen``; after ``reset_s`` one probe passes."""
        ...

    async def succeeded(self, ticket: Ticket) -> None:
        """The call succeeded: the count of failures starts again; a probe closes the breaker."""
        ...

    async def failed(self, ticket: Ticket) -> None:
        """The call failed: one more failure; a failed probe opens the breaker again."""
        ...

    def abandoned(self, ticket: Ticket) -> None:
        """The call was cancelled: it says nothing about the API, but a probe ends. Never waits."""
        ...
