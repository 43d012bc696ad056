"""The PostgreSQL store's crons (issue 13: scheduled runs): a due time is claimed
by a conditional update of the cron's row and its run created in the same
transaction; of processes racing for it, the others' updates find the row moved
on (READ COMMITTED re-reads it once the first commits) and write nothing."""

from __future__ import annotations

from runyard.models import Cron, Multitask
from runyard.store._rows import CRON_COLUMNS, CRON_FIELDS, cron_from_row, cron_row
from runyard.store.base import SessionEntry
from runyard.store.crons import CronFiring, CronStore
from runyard.store.postgres.admissions import enter
from runyard.store.postgres.batches import INSERT_GROUP, creation
from runyard.store.postgres.connection import Connection, PostgresConnection

INSERT_CRON = (
    f"INSERT INTO crons ({CRON_COLUMNS}) VALUES ({', '.join(f'${i}' for i in range(1, len(CRON_FIELDS) + 1))})"
)
UPDATE_CRON = (
    "UPDATE crons SET schedule = $2, timezone = $3, input = $4, enabled = $5, next_run_at = $6, updated_at = $7"
    " WHERE cron_id = $1 AND next_run_at IS NOT DISTINCT FROM $8 RETURNING 1"
)
CLAIM_DUE = (
    "UPDATE crons SET next_run_at = $3, last_run_id = coalesce($4, last_run_id),"
    " last_run_at = coalesce($5, last_run_at) WHERE cron_id = $1 AND enabled AND next_run_at = $2 RETURNING 1"
)


async def _fire(conn: Connection, firing: CronFiring) -> bool:
    run = firing.run
    claimed = await conn.fetchval(
        CLAIM_DUE,
        firing.cron_id,
        firing.due,
        firing.next_at,
        None if run is None else run.run_id,
        None if run is None else run.created_at,
    )
    if claimed is None or run is None:
        return claimed is not None
    if firing.new_session is not None:
        await conn.execute(INSERT_GROUP, *creation([firing.new_session], [run]))
    else:  # raises SessionNotFound: the transaction rolls the claim back too
        await enter(conn, run, SessionEntry(Multitask.ENQUEUE, firing.expired_before), None)
    return True


class PostgresCrons(PostgresConnection, CronStore):
    """``CronStore`` on PostgreSQL."""

    async def create_cron(self, cron: Cron) -> None:
        await self._execute(INSERT_CRON, *cron_row(cron))

    async def get_cron(self, cron_id: str) -> Cron | None:
        row = await self._db().fetchrow(f"SELECT {CRON_COLUMNS} FROM crons WHERE cron_id = $1", cron_id)
        return None if row is None else cron_from_row(row)

    async def list_crons(self, owner: str) -> list[Cron]:
        rows = await self._db().fetch(
            f"SELECT {CRON_COLUMNS} FROM crons WHERE owner = $1 ORDER BY created_at, cron_id", owner
        )
        return [cron_from_row(row) for row in rows]

    async def update_cron(self, cron: Cron, expect_next: float | None) -> bool:
        row = cron_row(cron)
        found = await self._db().fetchval(
            UPDATE_CRON,
            cron.cron_id,
            cron.schedule,
            cron.timezone,
            row[3],
            cron.enabled,
            cron.next_run_at,
            cron.updated_at,
            expect_next,
        )
        return found is not None

    async def delete_cron(self, cron_id: str) -> bool:
        found = await self._db().fetchval("DELETE FROM crons WHERE cron_id = $1 RETURNING 1", cron_id)
        return found is not None

    async def due_crons(self, at: float, limit: int) -> list[Cron]:
        rows = await self._db().fetch(
            f"SELECT {CRON_COLUMNS} FROM crons WHERE enabled AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2",
            at,
            max(limit, 0),
        )
        return [cron_from_row(row) for row in rows]

    async def fire_cron(self, firing: CronFiring) -> bool:
        return await self._transact(lambda conn: _fire(conn, firing))
