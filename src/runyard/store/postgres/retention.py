"""The PostgreSQL store's retention: sweeps in bounded deletes (``_sweep``), and forgetting."""

from __future__ import annotations

import asyncio

from runyard.store._sweep import CHUNK_BYTES, CHUNK_EVENTS, SWEEP_RUNS, pack
from runyard.store.base import Retention
from runyard.store.postgres.connection import PostgresConnection
from runyard.store.postgres.schema import (
    DELETE_EVENT_CHUNK,
    DELETE_RUNS,
    DELETE_STEP_CHUNK,
    EVENT_WEIGHTS,
    EXPIRED_RUNS,
    STEP_WEIGHTS,
    UNFINISHED,
)


class PostgresRetention(PostgresConnection, Retention):
    """``Retention`` on PostgreSQL."""

    async def sweep_runs(self, finished_before: float) -> int:
        """In bounded deletes (``_sweep``), each a transaction of its own: no single
        transaction writes a whole run's events to the WAL or holds its rows for long.
        Processes sweeping at once only find less to delete."""
        swept = 0
        while True:
            rows = await self._db().fetch(EXPIRED_RUNS, finished_before, SWEEP_RUNS)
            if not rows:
                return swept
            run_ids = [row[0] for row in rows]
            weights = await self._weights(run_ids)
            small, large = pack([(r, *weights.get(r, (0, 0))) for r in run_ids], CHUNK_EVENTS, CHUNK_BYTES)
            for group in small:  # several small runs, events, steps and all, in one transaction
                swept += await asyncio.shield(self._db().fetchval(DELETE_RUNS, group))
            for run_id in large:  # a large one chunk by chunk
                for chunk in (DELETE_EVENT_CHUNK, DELETE_STEP_CHUNK):
                    while await asyncio.shield(self._db().fetchval(chunk, run_id, CHUNK_EVENTS, CHUNK_BYTES)):
                        pass
                swept += await asyncio.shield(self._db().fetchval(DELETE_RUNS, [run_id]))

    async def _weights(self, run_ids: list[str]) -> dict[str, tuple[int, int]]:
        """Each run's events and steps: how many, and their bytes."""
        weights: dict[str, tuple[int, int]] = {}
        for sql in (EVENT_WEIGHTS, STEP_WEIGHTS):
            for run_id, count, size in await self._db().fetch(sql, run_ids):
                before = weights.get(run_id, (0, 0))
                weights[run_id] = (before[0] + count, before[1] + size)
        return weights

    async def forget_idle_sessions(self, idle_before: float) -> int:
        # a session with an unfinished run (queued, running or waiting) is busy, never idle
        forgotten: int = await asyncio.shield(
            self._db().fetchval(
                "WITH gone AS (DELETE FROM messages m USING sessions s"
                " WHERE m.session_id = s.session_id AND s.last_activity < $1 AND NOT EXISTS"
                f" (SELECT 1 FROM runs r WHERE r.session_id = s.session_id AND r.{UNFINISHED})"
                " RETURNING m.session_id) SELECT count(DISTINCT session_id) FROM gone",
                idle_before,
            )
        )
        return forgotten

    async def forget_idempotency_keys(self, before: float) -> int:
        rows = await asyncio.shield(
            self._db().fetch("DELETE FROM idempotency_keys WHERE created_at < $1 RETURNING 1", before)
        )
        return len(rows)
