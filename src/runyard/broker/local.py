"""``local://``: fan-out within this process only (the single-process default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.broker.base import Broker

if TYPE_CHECKING:
    from runyard.events.hub import Hub
    from runyard.models import Event


class LocalBroker(Broker):
    """Publishing is a direct, synchronous hand-over to this process's hub, which
    gets every event (and ignores runs without subscribers): nothing to watch."""

    def __init__(self, url: str = "local://") -> None:
        self.url = url
        self._hub: Hub | None = None

    async def open(self, hub: Hub) -> None:
        # not registered as the hub's broker: the hub gets every event anyway, so
        # a channel need not wait for (nor spawn a task for) a watch
        self._hub = hub

    async def close(self) -> None:
        self._hub = None

    async def ping(self) -> None:
        pass

    async def publish(self, events: list[Event]) -> None:
        if self._hub is not None:
            self._hub.deliver(events)

    async def watch(self, run_id: str) -> None:
        pass

    def unwatch(self, run_id: str) -> None:
        pass
