"""The memory store's crons (issue 13: scheduled runs): the reference for ``CronStore``."""

from __future__ import annotations

import copy

from runyard.models import Cron, Multitask
from runyard.store.base import Admissions, SessionEntry
from runyard.store.crons import CronFiring, CronStore


class MemoryCrons(Admissions, CronStore):
    """Crons in a dictionary; every method is atomic because none awaits for real."""

    _crons: dict[str, Cron]  # cron id -> the cron, in creation order

    async def create_cron(self, cron: Cron) -> None:
        self._crons[cron.cron_id] = copy.deepcopy(cron)

    async def get_cron(self, cron_id: str) -> Cron | None:
        cron = self._crons.get(cron_id)
        return copy.deepcopy(cron) if cron else None

    async def list_crons(self, owner: str) -> list[Cron]:
        return [copy.deepcopy(cron) for cron in self._crons.values() if cron.owner == owner]

    async def update_cron(self, cron: Cron, expect_next: float | None) -> bool:
        stored = self._crons.get(cron.cron_id)
        if stored is None or stored.next_run_at != expect_next:
            return False
        for name in ("schedule", "timezone", "input", "enabled", "next_run_at", "updated_at"):
            setattr(stored, name, copy.deepcopy(getattr(cron, name)))
        return True

    async def delete_cron(self, cron_id: str) -> bool:
        return self._crons.pop(cron_id, None) is not None

    async def due_crons(self, at: float, limit: int) -> list[Cron]:
        due = [
            cron
            for cron in self._crons.values()
            if cron.enabled and cron.next_run_at is not None and cron.next_run_at <= at
        ]
        due.sort(key=lambda cron: cron.next_run_at or 0.0)
        return [copy.deepcopy(cron) for cron in due[: max(limit, 0)]]

    async def fire_cron(self, firing: CronFiring) -> bool:
        cron = self._crons.get(firing.cron_id)
        if cron is None or not cron.enabled or cron.next_run_at != firing.due:
            return False
        run = firing.run
        if run is not None and firing.new_session is not None:
            await self.create_run(run, firing.new_session)
        elif run is not None:  # raises before writing anything when the session is gone
            await self.enter_session(run, SessionEntry(Multitask.ENQUEUE, firing.expired_before))
        cron.next_run_at = firing.next_at
        if run is not None:
            cron.last_run_id, cron.last_run_at = run.run_id, run.created_at
        return True
