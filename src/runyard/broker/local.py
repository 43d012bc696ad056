"""``local://``: fan-out within this process only (the single-process default)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runyard.broker.base import Broker, SignalHandler

if TYPE_CHECKING:
    from runyard.events.hub import Hub, Watcher
    from runyard.models import Event


class LocalBroker(Broker):
    """Publishing is a direct, synchronous hand-over to this process's hub, which
    gets every event (and ignores runs without subscribers): nothing to watch."""

    def __init__(self, url: str = "local://") -> None:
        self.url = url
        self._hub: Hub | None = None
        self._on_signal: SignalHandler | None = None

    @property
    def watcher(self) -> Watcher | None:
        # the hub gets every event anyway: a channel need not wait for (nor spawn a task for) a watch
        return None

    async def open(self, hub: Hub, on_signal: SignalHandler | None = None) -> None:
        self._hub = hub
        self._on_signal = on_signal

    async def close(self) -> None:
        self._hub = None
        self._on_signal = None

    async def signal(self, kind: str, run_id: str = "") -> None:
        if self._on_signal is not None:
            self._on_signal(kind, run_id)

    async def ping(self) -> None:
        pass

    async def publish(self, events: list[Event]) -> None:
        if self._hub is not None:
            self._hub.deliver(events)

    async def watch(self, run_id: str) -> None:
        pass

    def unwatch(self, run_id: str) -> None:
        pass
