"""The SQLite store's runs: reading them, and the queue (claims, leases, cancel flags, workers)."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from runyard.models import Run, now
from runyard.store._listing import folded
from runyard.store._numbering import FRESH_CLAIMS_UP_TO, claim_group, claimed_by
from runyard.store._rows import json_list, run_from_row
from runyard.store.base import WORKER_FORGOTTEN_S, Claimed, LeaseRenewal, RunQuery, RunQueue, RunRecords
from runyard.store.sqlite.connection import RunStates, SQLiteConnection
from runyard.store.sqlite.events import append_batch
from runyard.store.sqlite.schema import (
    CLAIMABLE,
    DUE,
    FRESH_CLAIMABLE,
    FRESH_SCAN,
    IN_JSON,
    RUN_COLUMNS,
    UNSERVED,
)

# what a run search looks in (``_listing.searched_text``); SQLite's lower() folds ASCII only, as folded() does
SEARCHED = (
    "lower(run_id || ' ' || session_id || ' ' || owner || ' ' || coalesce(input, 'null') || ' ' || coalesce(error, ''))"
)


def _claim(
    db: sqlite3.Connection, worker_id: str, limit: int, at: float, until: float, served: str, known: RunStates
) -> list[Claimed]:
    """Claim in the writer thread: being the only writer, select-then-update cannot race."""
    rows = _claimable(db, served, at, max(limit, 0))
    runs = [run_from_row(row) for row in rows]
    groups = [claim_group(run.run_id, run.attempt, worker_id, at, until) for run in runs]
    claims = [
        claimed_by(run, group, result, cancel_requested=bool(row[-1]))
        for run, group, result, row in zip(runs, groups, append_batch(db, groups, known), rows, strict=True)
    ]
    return [claim for claim in claims if claim is not None]


def _claimable(db: sqlite3.Connection, served: str, at: float, limit: int) -> list[Any]:
    """The rows of the runs a claim of ``limit`` takes, fairest first: new owners'
    first runs when they fill the claim (``FRESH_CLAIMABLE``), else the walk."""
    if limit == 0:
        return []
    if limit <= FRESH_CLAIMS_UP_TO:
        rows = db.execute(FRESH_CLAIMABLE, (served, at, limit, limit * FRESH_SCAN)).fetchall()
        if len(rows) == limit:
            return rows
    return db.execute(CLAIMABLE, (served, at, limit)).fetchall()


class SQLiteRuns(SQLiteConnection, RunRecords, RunQueue):
    """``RunRecords`` and ``RunQueue`` on SQLite."""

    # A claim is one write of the writer's batch, and the events running runs
    # append wait for that batch: large claims held them 50-120 ms in a ramp of
    # 1,000 streams (``bench/streams.py`` steady, p99 over all ticks 62-95 ms;
    # 29-31 ms with claims of 32, 62-67 with claims of 64).
    claim_at_most = 32

    async def get_run(self, run_id: str) -> Run | None:
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?"
        rows = await self._glance(lambda db: db.execute(sql, (run_id,)).fetchall())
        return run_from_row(rows[0]) if rows else None

    async def list_runs(self, query: RunQuery) -> list[Run]:
        where = ["1"]
        parameters: list[Any] = []
        if query.owner is not None:
            where.append("owner = ?")
            parameters.append(query.owner)
        if query.session_id is not None:
            where.append("session_id = ?")
            parameters.append(query.session_id)
        if query.statuses:
            where.append(f"status {IN_JSON}")
            parameters.append(json_list(s.value for s in query.statuses))
        if query.before is not None:
            # an unknown cursor compares with NULL: nothing is older than it
            where.append("created_seq < (SELECT created_seq FROM runs WHERE run_id = ?)")
            parameters.append(query.before)
        if query.since is not None:
            where.append("created_at >= ?")
            parameters.append(query.since)
        if query.until is not None:
            where.append("created_at < ?")
            parameters.append(query.until)
        if query.text is not None:
            where.append(f"instr({SEARCHED}, ?) > 0")
            parameters.append(folded(query.text))
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} ORDER BY created_seq DESC LIMIT ?",
            (*parameters, max(query.limit, 0)),
        )
        return [run_from_row(row) for row in rows]

    async def count_queued(self) -> int:
        rows = await self._read(f"SELECT count(*) FROM runs WHERE status = 'queued' AND {DUE}", (now(),))
        return int(rows[0][0])

    async def expired_leases(self, at: float) -> list[Run]:
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_expires_at < ? ORDER BY created_seq",
            (at,),
        )
        return [run_from_row(row) for row in rows]

    async def claim(
        self, worker_id: str, limit: int, at: float, lease_until: float, *, pipelines: Collection[str]
    ) -> list[Claimed]:
        served = json_list(pipelines)
        return await self._write_claim(
            lambda db: _claim(db, worker_id, limit, at, lease_until, served, self._run_states)
        )

    async def request_cancel(self, run_id: str) -> None:
        await self._execute("UPDATE runs SET cancel_requested = 1 WHERE run_id = ? AND status = 'running'", (run_id,))

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> LeaseRenewal:
        def work(db: sqlite3.Connection) -> LeaseRenewal:
            rows = db.execute(
                f"UPDATE runs SET lease_expires_at = ? WHERE run_id {IN_JSON} AND status = 'running' AND worker_id = ?"
                " RETURNING run_id, cancel_requested",
                (until, json_list(run_ids), worker_id),
            ).fetchall()
            for run_id, _ in rows:
                if run_id in self._run_states:  # the numbering's view of the lease, for recovery
                    self._run_states[run_id].lease_expires_at = until
            kept = {run_id for run_id, _ in rows}
            return LeaseRenewal(lost=set(run_ids) - kept, cancel={run_id for run_id, flag in rows if flag})

        return await self._write(work) if run_ids else LeaseRenewal()

    async def worker_seen(self, worker_id: str, pipelines: Collection[str], at: float) -> None:
        served = json_list(sorted(pipelines))

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO workers (worker_id, pipelines, last_seen) VALUES (?, ?, ?)",
                (worker_id, served, at),
            )
            db.execute("DELETE FROM workers WHERE last_seen < ?", (at - WORKER_FORGOTTEN_S,))

        await self._write(work)

    async def forget_worker(self, worker_id: str) -> None:
        await self._execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    async def unserved_pipelines(self, seen_since: float) -> dict[str, int]:
        return {pipeline: count for pipeline, count in await self._read(UNSERVED, (now(), seen_since))}
