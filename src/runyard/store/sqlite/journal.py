"""The SQLite store's journal: recorded steps, replay marks and due waits, read
on a reader connection (steps are written by ``append_batch``, with their events)."""

from __future__ import annotations

import sqlite3

from runyard.models import Run
from runyard.store._rows import run_from_row, step_from_row
from runyard.store.journal import Journal, Replay
from runyard.store.sqlite.connection import SQLiteConnection
from runyard.store.sqlite.schema import DUE_WAITS, REPLAY


def _replay(db: sqlite3.Connection, run_id: str) -> Replay:
    replay = Replay()
    for mark, *step in db.execute(REPLAY, (run_id,)):
        replay.mark = mark
        if step[0] is not None:  # the LEFT JOIN's row of a run without steps
            record = step_from_row(step)
            replay.steps[(record.name, record.n)] = record
    return replay


class SQLiteJournal(SQLiteConnection, Journal):
    """``Journal`` on SQLite."""

    async def replay(self, run_id: str) -> Replay:
        return await self._query(lambda db: _replay(db, run_id))

    async def due_waits(self, at: float, limit: int) -> list[Run]:
        rows = await self._read(DUE_WAITS, (at, max(limit, 0)))  # a negative LIMIT would mean "no limit"
        return [run_from_row(row) for row in rows]
