"""The broker contract: moves notifications between the processes of a deployment.

The store is the source of truth; a broker only makes things happen sooner.
Anything it loses is recovered from the store (a stream polls it after every
heartbeat of silence), so a broker may be lossy but never wrong.

A broker delivers to its hub the events of the runs the hub watches (the runs
with subscribers in this process); it may deliver others too, which the hub
ignores. ``watch`` returns once delivery holds, so a stream that reads the
store after it misses nothing in between.

It also carries signals between processes: ``wake`` (a run was queued: workers
claim) and ``cancel`` (a run's worker stops it). Signals are lossy too: workers
poll the store for queued runs and read cancel requests when they renew leases.
A broker may carry the wake-up of a newly queued run (``queued``) to two
workers only, through its ``wakes``: a fleet's creations then cost two claims
each, not one per worker.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from runyard.events.hub import Hub, Watcher
    from runyard.models import Event


WAKE = "wake"
CANCEL = "cancel"
SignalHandler = Callable[[str, str], None]  # (kind, run id or "")


class WakeQueue(Protocol):
    """Wake-ups that each wake one worker: taken by one of the workers waiting
    for the pipeline they were given for (a queued run gives more than one)."""

    async def take(self, pipelines: Sequence[str], timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a wake-up given for one of ``pipelines`` or
        for any worker, and take it (no other worker gets it). False if none came,
        or if the broker cannot be reached (then once the time is out)."""

    async def put(self, pipelines: Sequence[str] | None) -> None:
        """One wake-up for each of ``pipelines`` (None: one any worker takes), now; never raises."""

    def ask(self, pipeline: str | None) -> None:
        """Wake-ups for a run of ``pipeline`` queued (None: for any worker, once),
        soon: those asked for while some are on their way are folded into one more."""


class Broker(ABC):
    """Live fan-out of persisted events, and signals, to every process."""

    # Where a worker with a free slot waits for the wake-ups ``queued`` gives (each
    # taken by one worker); None where every wake-up reaches every worker (a ``wake`` signal).
    wakes: WakeQueue | None = None

    @property
    def watcher(self) -> Watcher | None:
        """What a hub must tell which runs have subscribers in its process (given
        to ``Hub(...)``); None for a broker that delivers every run's events anyway."""
        return self

    @abstractmethod
    async def open(self, hub: Hub, on_signal: SignalHandler | None = None) -> None:
        """Connect, and deliver the events of the runs ``hub`` watches (a hub built
        with this broker's ``watcher``) to it from
        now on, and every process's signals (this one's included) to ``on_signal``."""

    @abstractmethod
    async def close(self) -> None:
        """Stop delivering and disconnect."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    @abstractmethod
    async def publish(self, events: list[Event]) -> None:
        """Fan out events that are already persisted (each run's in ``seq`` order)."""

    @abstractmethod
    async def watch(self, run_id: str) -> None:
        """Deliver this run's events to the hub from now on; returns once that holds (or the broker is down)."""

    @abstractmethod
    def unwatch(self, run_id: str) -> None:
        """Stop delivering this run's events to the hub (possibly a little later)."""

    @abstractmethod
    async def signal(self, kind: str, run_id: str = "") -> None:
        """Send a signal to every process (this one first); never raises for a lost one."""

    async def queued(self, pipeline: str) -> None:
        """A run of ``pipeline`` was queued (or is ready again): wake a worker that
        serves it. Here: every process, with a ``wake`` signal."""
        await self.signal(WAKE)
