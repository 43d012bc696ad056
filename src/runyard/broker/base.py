"""The broker contract: moves notifications between the processes of a deployment.

The store is the source of truth; a broker only makes things happen sooner.
Anything it loses is recovered from the store (a stream polls it after every
heartbeat of silence), so a broker may be lossy but never wrong.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runyard.events.hub import Hub
    from runyard.models import Event


class Broker(ABC):
    """Live fan-out of persisted events to every process's hub."""

    @abstractmethod
    async def open(self, hub: Hub) -> None:
        """Connect, and deliver other processes' events to ``hub`` from now on."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering and disconnect."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    @abstractmethod
    async def publish(self, events: list[Event]) -> None:
        """Fan out events that are already persisted (each run's in ``seq`` order)."""
