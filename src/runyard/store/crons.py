"""The store's part of scheduled runs (issue 13): crons, and the firing of a due
time, which claims it and creates its run in one transaction (``runyard.crons``
decides when and what; the store makes each due time fire once, whichever of
several processes tries)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Protocol

from runyard.models import Cron, Run, Session


@dataclass(frozen=True, slots=True)
class CronFiring:
    """One due time of a cron, claimed by moving the cron's ``next_run_at`` from
    ``due`` to ``next_at``; with ``run``, the run that time makes, created in the
    same transaction: in ``new_session``, or else entering the run's existing
    session (queued behind its unfinished runs; the session must be live: not
    deleted, and not idle since before ``expired_before``)."""

    cron_id: str
    due: float
    next_at: float
    run: Run | None = None
    new_session: Session | None = None
    expired_before: float = 0.0


class CronStore(Protocol):
    """Crons: their records, and the firing of a due time."""

    @abstractmethod
    async def create_cron(self, cron: Cron) -> None:
        """Insert a new cron."""

    @abstractmethod
    async def get_cron(self, cron_id: str) -> Cron | None:
        """The cron, or None."""

    @abstractmethod
    async def list_crons(self, owner: str) -> list[Cron]:
        """The owner's crons, oldest first."""

    @abstractmethod
    async def update_cron(self, cron: Cron, expect_next: float | None) -> bool:
        """Store the cron's changeable fields if its next_run_at is still ``expect_next``; whether it did.

        Those fields: schedule, timezone, input, enabled, next_run_at, updated_at.
        The condition keeps a change read before a firing from setting back the
        due time that firing claimed (which would fire it twice)."""

    @abstractmethod
    async def delete_cron(self, cron_id: str) -> bool:
        """Delete the cron; False when there was none."""

    @abstractmethod
    async def due_crons(self, at: float, limit: int) -> list[Cron]:
        """Up to ``limit`` enabled crons whose ``next_run_at`` is at or before ``at``, soonest first."""

    @abstractmethod
    async def fire_cron(self, firing: CronFiring) -> bool:
        """Claim the due time and create its run (if any), in one transaction.

        False, with nothing written, unless the cron is enabled and its
        ``next_run_at`` is still ``firing.due``: of processes firing the same due
        time, exactly one succeeds. The run records itself as the cron's last
        run. A run that may not enter its session raises ``SessionNotFound``, with
        nothing written (the due time stays unclaimed)."""
