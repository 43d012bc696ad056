"""The PostgreSQL store's journal: recorded steps, replay marks and due waits
(steps are written by ``append_batch``, in the transaction of their events)."""

from __future__ import annotations

from runyard.models import Run
from runyard.store._rows import step_from_row
from runyard.store.journal import Journal, Replay
from runyard.store.postgres.connection import PostgresConnection
from runyard.store.postgres.schema import DUE_WAITS, REPLAY


class PostgresJournal(PostgresConnection, Journal):
    """``Journal`` on PostgreSQL."""

    async def replay(self, run_id: str) -> Replay:
        replay = Replay()
        for mark, *step in await self._db().fetch(REPLAY, run_id):
            replay.mark = mark
            if step[0] is not None:  # the LEFT JOIN's row of a run without steps
                record = step_from_row(step)
                replay.steps[(record.name, record.n)] = record
        return replay

    async def due_waits(self, at: float, limit: int) -> list[Run]:
        if limit <= 0:
            return []
        return await self._runs(DUE_WAITS, at, limit)
