"""The PostgreSQL store's runs: reading them, and the queue (claims, leases, cancel flags, workers)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any

from runyard.models import Run, now
from runyard.store._listing import folded
from runyard.store._numbering import FRESH_CLAIMS_UP_TO, RunState, claim_group, claimed_by
from runyard.store._rows import RUN_COLUMNS, run_from_row
from runyard.store.base import WORKER_FORGOTTEN_S, Claimed, LeaseRenewal, RunQuery, RunQueue, RunRecords
from runyard.store.postgres.connection import Connection, PostgresConnection
from runyard.store.postgres.events import append_locked
from runyard.store.postgres.reads import GroupRead
from runyard.store.postgres.schema import CLAIMABLE, FRESH, LOCK_CLAIMABLE, UNSERVED

# Candidates read per claimed run: some may be taken by other workers meanwhile.
CANDIDATES_PER_CLAIM = 2
CANDIDATES_EXTRA = 8
# Until the claim's transaction ends: plans made for the claim's own size and queue
# (every session asks for that already, ``pool.server_settings``, unless its URL
# says otherwise: the walk needs it whatever the URL), and no bitmap scans.
# Without statistics on status (``schema.py``) the planner guesses an owner's
# queued runs at ~2 and read them all through a bitmap, then sorted them, where
# the ordered index stops at the first ready one: 24 ms a claim instead of 3
# with 10,000 queued (``bench/claims.py``).
CUSTOM_PLANS = (
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), set_config('enable_bitmapscan', 'off', true)"
)
# what a run search looks in (``_listing.searched_text``), ASCII letters lowered as folded() does
SEARCHED = (
    "translate(run_id || ' ' || session_id || ' ' || owner || ' ' || coalesce(input::text, 'null') || ' '"
    " || coalesce(error::text, ''), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
)


async def _claim(
    conn: Connection, worker_id: str, limit: int, at: float, until: float, served: list[str]
) -> list[Claimed]:
    """Claim inside the caller's transaction (FOR UPDATE SKIP LOCKED)."""
    wanted = limit * CANDIDATES_PER_CLAIM + CANDIDATES_EXTRA
    # The walk planned for this claim's own size and queue, not with the plan the
    # prepared statement settled on while the queue was short: with that generic
    # plan a claim of 1,000 runs out of 10,000 queued took 300-440 ms instead of
    # 120-160 (a /tmp script on the real store). The candidates' lock needs no
    # bitmap scans either: planned for its candidates, it read the whole queue
    # through one to join them (8 ms a claim at 10,000 queued instead of 5,
    # bench/claims.py).
    await conn.execute(CUSTOM_PLANS)
    candidates = await _new_owners_first(conn, wanted, served, at) if wanted <= FRESH_CLAIMS_UP_TO else None
    if candidates is None:
        candidates = [row[0] for row in await conn.fetch(CLAIMABLE, wanted, served, at)]
    if not candidates:
        return []
    rows = await conn.fetch(LOCK_CLAIMABLE, candidates, limit)
    runs = [run_from_row(row) for row in rows]
    groups = [claim_group(run.run_id, run.attempt, worker_id, at, until) for run in runs]
    # their rows are locked: numbered from what the lock read, without locking them again
    states = {run.run_id: RunState.of(run, row["stored_bytes"]) for run, row in zip(runs, rows, strict=True)}
    sessions = {run.run_id: (run.owner, run.session_id) for run in runs}
    results = await append_locked(conn, groups, states, sessions)
    claims = [
        claimed_by(run, group, result, cancel_requested=row["cancel_requested"])
        for run, group, result, row in zip(runs, groups, results, rows, strict=True)
    ]
    return [claim for claim in claims if claim is not None]


async def _new_owners_first(conn: Connection, wanted: int, served: list[str], at: float) -> list[str] | None:
    """The claim's candidates if new owners' first runs fill it (``FRESH``), else
    None. A statement of its own: a claim it fills pays a short read, not the
    walk's planning (in one statement with the walk, it cost the fleet's
    creations 6 %: 2,031-2,471 against 2,159-2,645 a second)."""
    rows = await conn.fetch(FRESH, wanted, served, at)
    return [row[0] for row in rows] if len(rows) == wanted else None


class PostgresRuns(PostgresConnection, RunRecords, RunQueue):
    """``RunRecords`` and ``RunQueue`` on PostgreSQL."""

    # A claim is a transaction of its own (six or seven round trips) and writes
    # its runs in one statement: while runs arrive faster than a worker claims,
    # fewer, larger claims leave the CPU to the rest. bench/scaleout.py's create
    # workload, 2 API + 2 workers, 2-3 rounds: 1,937-2,319 creations/s claiming at
    # once, 2,361-2,500 after 20 ms, 2,628-2,751 after 50, 2,747-2,912 after 100;
    # the steady workload's latency unchanged (bench/README.md, "A twenty-first round").
    claim_gather_s = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run_reads: GroupRead[str, Run] = GroupRead(self._read_runs)

    async def get_run(self, run_id: str) -> Run | None:
        return await self._run_reads.read(run_id)

    async def _read_runs(self, run_ids: list[str]) -> dict[str, Run]:
        rows = await self._db().fetch(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ANY($1::text[])", run_ids)
        return {row["run_id"]: run_from_row(row) for row in rows}

    async def list_runs(self, query: RunQuery) -> list[Run]:
        if query.limit <= 0:
            return []
        where: list[str] = []
        arguments: list[Any] = []

        def condition(sql: str, argument: Any) -> None:
            arguments.append(argument)
            where.append(sql.replace("?", f"${len(arguments)}"))

        if query.owner is not None:
            condition("owner = ?", query.owner)
        if query.session_id is not None:
            condition("session_id = ?", query.session_id)
        if query.statuses:
            condition("status = ANY(?::text[])", [s.value for s in query.statuses])
        if query.before is not None:
            # an unknown cursor compares with NULL: nothing is older than it
            condition("created_seq < (SELECT created_seq FROM runs WHERE run_id = ?)", query.before)
        if query.since is not None:
            condition("created_at >= ?", query.since)
        if query.until is not None:
            condition("created_at < ?", query.until)
        if query.text is not None:
            condition(f"strpos({SEARCHED}, ?) > 0", folded(query.text))
        arguments.append(query.limit)
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY created_seq DESC LIMIT ${len(arguments)}",
            *arguments,
        )

    async def count_queued(self) -> int:
        count: int = await self._db().fetchval(
            "SELECT count(*) FROM runs WHERE status = 'queued' AND (scheduled_for IS NULL OR scheduled_for <= $1)",
            now(),
        )
        return count

    async def expired_leases(self, at: float) -> list[Run]:
        return await self._runs(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' AND lease_expires_at < $1 ORDER BY created_seq",
            at,
        )

    async def claim(
        self, worker_id: str, limit: int, at: float, lease_until: float, *, pipelines: Collection[str]
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        served = list(pipelines)
        claimed = await self._transact_once(
            lambda conn: _claim(conn, worker_id, limit, at, lease_until, served),
            lambda result: result[0].event if result else None,
        )
        return claimed

    async def request_cancel(self, run_id: str) -> None:
        await self._execute("UPDATE runs SET cancel_requested = true WHERE run_id = $1 AND status = 'running'", run_id)

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> LeaseRenewal:
        if not run_ids:
            return LeaseRenewal()
        # rows locked in run id order, as append locks them: the two never deadlock
        rows = await asyncio.shield(
            self._db().fetch(
                "UPDATE runs SET lease_expires_at = $3 WHERE run_id IN (SELECT run_id FROM runs"
                " WHERE run_id = ANY($1::text[]) AND status = 'running' AND worker_id = $2 ORDER BY run_id FOR UPDATE)"
                " RETURNING run_id, cancel_requested",
                list(run_ids),
                worker_id,
                until,
            )
        )
        kept = {row[0] for row in rows}
        return LeaseRenewal(lost=set(run_ids) - kept, cancel={row[0] for row in rows if row[1]})

    async def worker_seen(self, worker_id: str, pipelines: Collection[str], at: float) -> None:
        await self._execute(
            "WITH gone AS (DELETE FROM workers WHERE last_seen < $4 AND worker_id <> $1)"
            " INSERT INTO workers (worker_id, pipelines, last_seen) VALUES ($1, $2, $3) ON CONFLICT (worker_id)"
            " DO UPDATE SET pipelines = EXCLUDED.pipelines, last_seen = EXCLUDED.last_seen",
            worker_id,
            sorted(pipelines),
            at,
            at - WORKER_FORGOTTEN_S,
        )

    async def forget_worker(self, worker_id: str) -> None:
        await self._execute("DELETE FROM workers WHERE worker_id = $1", worker_id)

    async def unserved_pipelines(self, seen_since: float) -> dict[str, int]:
        return {row[0]: row[1] for row in await self._db().fetch(UNSERVED, seen_since, now())}
