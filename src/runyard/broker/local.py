"""``local://``: fan-out within this process only (the single-process default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.broker.base import Broker

if TYPE_CHECKING:
    from runyard.events.hub import Hub
    from runyard.models import Event


class LocalBroker(Broker):
    """Publishing is a direct, synchronous hand-over to this process's hub."""

    def __init__(self, url: str = "local://") -> None:
        self.url = url
        self._hub: Hub | None = None

    async def open(self, hub: Hub) -> None:
        self._hub = hub

    async def close(self) -> None:
        self._hub = None

    async def ping(self) -> None:
        pass

    async def publish(self, events: list[Event]) -> None:
        if self._hub is not None:
            self._hub.deliver(events)
