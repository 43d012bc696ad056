"""The SQLite store's crons (issue 13: scheduled runs): a due time is claimed and
its run created in the writer thread, the only writer, in one savepoint."""

from __future__ import annotations

import sqlite3

from runyard.models import Cron, Multitask
from runyard.store._rows import CRON_COLUMNS, CRON_FIELDS, cron_from_row, cron_row, run_row, session_row
from runyard.store.base import SessionEntry
from runyard.store.crons import CronFiring, CronStore
from runyard.store.sqlite.admissions import enter
from runyard.store.sqlite.connection import RunStates, SQLiteConnection
from runyard.store.sqlite.schema import INSERT_RUN, INSERT_SESSION

INSERT_CRON = f"INSERT INTO crons ({CRON_COLUMNS}) VALUES ({', '.join('?' * len(CRON_FIELDS))})"
UPDATE_CRON = (
    "UPDATE crons SET schedule = ?, timezone = ?, input = ?, enabled = ?, next_run_at = ?, updated_at = ?"
    " WHERE cron_id = ? AND next_run_at IS ?"
)
# the claim of a due time: only the first process to move next_run_at on from it succeeds
CLAIM_DUE = (
    "UPDATE crons SET next_run_at = ?, last_run_id = coalesce(?, last_run_id), last_run_at = coalesce(?, last_run_at)"
    " WHERE cron_id = ? AND enabled = 1 AND next_run_at = ?"
)


def _fire(db: sqlite3.Connection, firing: CronFiring, known: RunStates) -> bool:
    run = firing.run
    claimed = db.execute(
        CLAIM_DUE,
        (
            firing.next_at,
            None if run is None else run.run_id,
            None if run is None else run.created_at,
            firing.cron_id,
            firing.due,
        ),
    ).rowcount
    if claimed != 1 or run is None:
        return claimed == 1
    if firing.new_session is not None:
        db.execute(INSERT_SESSION, session_row(firing.new_session))
        db.execute(INSERT_RUN, run_row(run, last_seq=False))
    else:  # raises SessionNotFound: the savepoint rolls the claim back too
        enter(db, run, SessionEntry(Multitask.ENQUEUE, firing.expired_before), None, known)
    return True


class SQLiteCrons(SQLiteConnection, CronStore):
    """``CronStore`` on SQLite."""

    async def create_cron(self, cron: Cron) -> None:
        await self._execute(INSERT_CRON, cron_row(cron))

    async def get_cron(self, cron_id: str) -> Cron | None:
        rows = await self._read(f"SELECT {CRON_COLUMNS} FROM crons WHERE cron_id = ?", (cron_id,))
        return cron_from_row(rows[0]) if rows else None

    async def list_crons(self, owner: str) -> list[Cron]:
        rows = await self._read(
            f"SELECT {CRON_COLUMNS} FROM crons WHERE owner = ? ORDER BY created_at, cron_id", (owner,)
        )
        return [cron_from_row(row) for row in rows]

    async def update_cron(self, cron: Cron, expect_next: float | None) -> bool:
        row = cron_row(cron)
        values = (*(cron.schedule, cron.timezone, row[3], cron.enabled), cron.next_run_at, cron.updated_at)
        parameters = (*values, cron.cron_id, expect_next)
        return await self._write(lambda db: db.execute(UPDATE_CRON, parameters).rowcount == 1)

    async def delete_cron(self, cron_id: str) -> bool:
        return await self._write(lambda db: db.execute("DELETE FROM crons WHERE cron_id = ?", (cron_id,)).rowcount == 1)

    async def due_crons(self, at: float, limit: int) -> list[Cron]:
        rows = await self._read(
            f"SELECT {CRON_COLUMNS} FROM crons WHERE enabled = 1 AND next_run_at <= ? ORDER BY next_run_at LIMIT ?",
            (at, max(limit, 0)),
        )
        return [cron_from_row(row) for row in rows]

    async def fire_cron(self, firing: CronFiring) -> bool:
        return await self._write(lambda db: _fire(db, firing, self._run_states))
