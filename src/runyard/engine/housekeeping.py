"""The deployment's housekeeping, done by every worker: recovery of the runs
whose worker died (their lease expired) and the sweep of what expired."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Container

from runyard.models import IDEMPOTENCY_TTL_S, Run, now
from runyard.settings import Settings
from runyard.store.base import WorkerStore

log = logging.getLogger("runyard.engine")


class Housekeeper:
    """Told by the engine which runs are its own (``running``: alive here, never
    recovered), how to hand back an orphaned run (``hand_back``, given the time
    its lease expired by) and what of its own to forget each tick."""

    def __init__(
        self,
        settings: Settings,
        store: WorkerStore,
        *,
        running: Container[str],
        hand_back: Callable[[Run, float], Awaitable[None]],
        on_tick: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._running = running
        self._hand_back = hand_back
        self._on_tick = on_tick
        self.sweeper: asyncio.Task[None] | None = None  # the sweep under way, started by the housekeeper

    async def run(self) -> None:
        """Recover runs whose worker died, and sweep what expired. Apart from the
        renewals, so that a slow sweep never delays a renewal past a lease."""
        settings = self._settings
        tick = min(settings.lease_s / 3, settings.sweep_interval_s, 5.0)
        last_sweep = 0.0
        while True:
            try:
                await self._recover_expired_leases()
                self._on_tick()
                sweeping = self.sweeper is not None and not self.sweeper.done()
                if now() - last_sweep >= settings.sweep_interval_s and not sweeping:
                    last_sweep = now()
                    # a task of its own: a long sweep (many short writes) never delays recovery
                    self.sweeper = asyncio.create_task(self._sweep(), name="runyard-sweeper")
            except Exception:
                log.exception("housekeeping pass failed; retrying")
            await asyncio.sleep(tick)

    async def _recover_expired_leases(self) -> None:
        at = now()
        for run in await self._store.expired_leases(at):
            if run.run_id in self._running:
                continue  # ours and alive: the loop stalled past the lease; renewal follows
            log.warning("run %s lost its worker %s; recovering (attempt %d)", run.run_id, run.worker_id, run.attempt)
            await self._hand_back(run, at)

    async def _sweep(self) -> None:
        settings = self._settings
        try:
            swept = await self._store.sweep_runs(now() - settings.retention_s)
            forgotten = await self._store.forget_idle_sessions(now() - settings.session_ttl_s)
            await self._store.forget_idempotency_keys(now() - IDEMPOTENCY_TTL_S)
            expired = await self._store.sweep_items(now())  # invisible already: this frees their space
        except Exception:
            log.exception("sweep failed; retrying at the next interval")
            return
        if swept or forgotten or expired:
            log.info("swept %d expired runs and %d expired items, forgot %d idle sessions", swept, expired, forgotten)
