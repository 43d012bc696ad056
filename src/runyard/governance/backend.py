"""Where a deployment's limits keep their state, chosen by the broker's URL:
``local://`` in this process, ``redis://`` shared by every process that is
given the same Redis (and ``?prefix=``)."""

from __future__ import annotations

from typing import Protocol

from runyard._backends import BackendTable, load_backend
from runyard.governance.breaker import Breaker, BreakerState
from runyard.governance.semaphore import Semaphore
from runyard.governance.windows import Windows

SUPPORTED_BACKENDS: BackendTable = {
    "local": ("runyard.governance.local", "LocalLimits", None),
    "redis": ("runyard.governance.redis", "RedisLimits", "redis"),
}


class CapReached(Exception):
    """A cap's key holds ``capacity`` leases already (``held`` of them, deployment-wide)."""

    def __init__(self, held: int) -> None:
        super().__init__(f"{held} held")
        self.held = held


class Caps(Protocol):
    """At most a number of leases per key, across the deployment; refused rather than waited for."""

    async def take(self, key: str) -> str:
        """A lease (its id), or ``CapReached``."""
        ...

    def release(self, lease: str) -> None:
        """Give ``lease`` back, never waiting."""
        ...


class LimitBackend(Protocol):
    """Makes the parts of each limit, and owns what they share (connections, tasks)."""

    def semaphore(self, name: str, capacity: int) -> Semaphore:
        """The concurrency cap of limit ``name``."""
        ...

    def windows(self, name: str, rpm: int | None, tpm: int | None) -> Windows:
        """The request and token windows of limit ``name``."""
        ...

    def breaker(self, name: str, policy: Breaker) -> BreakerState:
        """The circuit breaker of limit ``name``."""
        ...

    def caps(self, name: str, capacity: int) -> Caps | None:
        """The deployment-wide cap ``name``, or None where this process's own count is the only one."""
        ...

    async def open(self) -> None:
        """Start what the parts need (background tasks); never fails on an unreachable service."""
        ...

    async def close(self) -> None:
        """Stop the background tasks, give back what is held, close connections."""
        ...


def backend_from_url(url: str, *, lease_s: float) -> LimitBackend:
    """The limits backend for the broker URL ``url``, not yet opened; ``lease_s``
    is a shared permit's lease (``RUNYARD_LIMIT_LEASE_S``)."""
    backend: LimitBackend = load_backend("limits", url, SUPPORTED_BACKENDS, lease_s=lease_s)
    return backend
