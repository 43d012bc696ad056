"""The PostgreSQL store's admissions: runs created under quotas, idempotency keys and
session entry, decided under row locks in the creation's transaction."""

from __future__ import annotations

from typing import Any

from runyard.errors import QuotaExceeded
from runyard.models import Multitask, Run, Session
from runyard.store._rows import SESSION_COLUMNS, run_from_row, session_from_row
from runyard.store.base import Admission, Admissions, Entered, SessionEntry
from runyard.store.postgres.batches import INSERT_GROUP, creation
from runyard.store.postgres.connection import Connection, PostgresConnection
from runyard.store.postgres.creations import GroupCommit
from runyard.store.postgres.schema import IDEMPOTENT_RUN, UNFINISHED
from runyard.store.postgres.sessions import cancel_unfinished


async def enter(conn: Connection, run: Run, entry: SessionEntry, admission: Admission | None) -> Entered:
    """``enter_session`` inside the caller's transaction. The session's row lock
    comes first: creations in one session, and its deletion, take turns, each
    seeing what the one before committed (every statement of READ COMMITTED
    reads anew). Then the key's and the quota's rows, as ``create_run`` takes
    them, then the runs' rows, as ``append`` does: one order, no deadlock."""
    found = await conn.fetchrow(
        f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = $1 FOR UPDATE", run.session_id
    )
    if admission is not None:
        first = await _admit(conn, run, admission)  # rolled back with the rest if a check below fails
        if first is not None:
            return Entered(first)
    busy = await conn.fetchval(
        f"SELECT run_id FROM runs WHERE session_id = $1 AND {UNFINISHED} ORDER BY created_seq LIMIT 1",
        run.session_id,
    )
    entry.check(None if found is None else session_from_row(found), run, busy)
    cancelled = []
    if busy is not None and entry.multitask is Multitask.INTERRUPT:
        cancelled = await cancel_unfinished(conn, run.session_id, run.created_at)
    await conn.execute(INSERT_GROUP, *creation([], [run]))
    await conn.execute(
        "UPDATE sessions SET last_activity = greatest(last_activity, $2) WHERE session_id = $1",
        run.session_id,
        run.created_at,
    )
    return Entered(run, cancelled)


async def _admit(conn: Connection, run: Run, admission: Admission) -> Run | None:
    """Inside the creation's transaction: the first run of a repeated key, or None
    once ``run`` is admitted (and counted). Racing creations with one key meet at
    its row (the second waits for the first to commit, then finds its run), and
    racing creations of one owner at its quota row, so exactly N are admitted."""
    key = admission.idempotency_key
    if key is not None:
        claimed = await conn.fetchval(
            "INSERT INTO idempotency_keys (owner, key, fingerprint, run_id, created_at) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (owner, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, run_id = EXCLUDED.run_id,"
            " created_at = EXCLUDED.created_at WHERE idempotency_keys.created_at < $6 RETURNING 1",
            run.owner,
            key,
            admission.fingerprint,
            run.run_id,
            run.created_at,
            admission.since,
        )
        if claimed is None:
            # a statement of its own: its snapshot sees the run of a racing creation that just committed
            row = await conn.fetchrow(IDEMPOTENT_RUN, run.owner, key, 0.0)
            if row is not None:
                return admission.repeat_of(row["fingerprint"], run_from_row(row))
            await conn.execute(  # the first run was swept: the key is as good as new
                "UPDATE idempotency_keys SET fingerprint = $3, run_id = $4, created_at = $5"
                " WHERE owner = $1 AND key = $2",
                run.owner,
                key,
                admission.fingerprint,
                run.run_id,
                run.created_at,
            )
    if admission.quota is not None:
        counted = await conn.fetchval(
            "INSERT INTO owner_quota (owner, runs_created) VALUES ($1, 1) ON CONFLICT (owner) DO UPDATE"
            " SET runs_created = owner_quota.runs_created + 1 WHERE owner_quota.runs_created < $2 RETURNING 1",
            run.owner,
            admission.quota,
        )
        if counted is None or admission.quota < 1:
            raise QuotaExceeded(f"owner {run.owner!r} has created all {admission.quota} runs of its quota")
    return None


class PostgresAdmissions(PostgresConnection, Admissions):
    """``Admissions`` on PostgreSQL."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._creations = GroupCommit(self._transact, self._execute)

    async def create_run(self, run: Run, new_session: Session | None = None, admission: Admission | None = None) -> Run:
        if admission is None or admission.idempotency_key is None:  # written with the creations of the moment
            await self._creations.create(run, new_session, None if admission is None else admission.quota)
            return run

        async def work(conn: Connection) -> Run:
            first = await _admit(conn, run, admission)
            if first is not None:
                return first
            await conn.execute(INSERT_GROUP, *creation([] if new_session is None else [new_session], [run]))
            return run

        return await self._transact(work)

    async def enter_session(self, run: Run, entry: SessionEntry, admission: Admission | None = None) -> Entered:
        return await self._transact(lambda conn: enter(conn, run, entry, admission))

    async def idempotent_run(self, owner: str, key: str, since: float) -> tuple[str, Run] | None:
        row = await self._db().fetchrow(IDEMPOTENT_RUN, owner, key, since)
        return None if row is None else (row["fingerprint"], run_from_row(row))
