"""The SQLite store's pipeline health (``stats.RunStats``): three reads."""

from __future__ import annotations

import sqlite3
from itertools import groupby
from typing import Any

from runyard.pricing import Tokens
from runyard.store.sqlite.connection import SQLiteConnection
from runyard.store.sqlite.schema import events_of
from runyard.store.stats import PipelineStats, RunStats, with_durations

# the runs finished since the first parameter (through runs_finished_at), of the owner if one is given
WINDOW = "finished_at >= ? AND (? IS NULL OR owner = ?)"
COUNTS = f"SELECT pipeline, status, count(*) FROM runs WHERE {WINDOW} GROUP BY pipeline, status"
DURATIONS = (
    f"SELECT pipeline, finished_at - started_at FROM runs WHERE {WINDOW} AND started_at IS NOT NULL ORDER BY 1, 2"
)
# a usage event's tokens count when they are an integer >= 0 (``pricing.token_count``)
_TOKENS = "CASE WHEN json_type(d, '$.{0}') = 'integer' THEN max(json_extract(d, '$.{0}'), 0) ELSE 0 END"
USAGE = f"""SELECT pipeline, model, sum(input), sum(output) FROM (
    SELECT pipeline, CASE WHEN json_type(d, '$.model') = 'text' THEN json_extract(d, '$.model') ELSE '' END AS model,
        {_TOKENS.format("input_tokens")} AS input, {_TOKENS.format("output_tokens")} AS output
    FROM (
        SELECT r.pipeline, CAST(e.data AS TEXT) AS d
        FROM runs r CROSS JOIN events e  -- CROSS: the runs first, then each one's events, bucket by bucket
            ON {events_of("r", "e")}
        WHERE r.finished_at >= ? AND (? IS NULL OR r.owner = ?) AND e.type = 'usage'
    ) WHERE json_valid(d) AND json_type(d) = 'object'
) GROUP BY pipeline, model"""


def _stats(db: sqlite3.Connection, window: tuple[Any, ...]) -> list[PipelineStats]:
    stats: dict[str, PipelineStats] = {}
    for pipeline, status, runs in db.execute(COUNTS, window):
        stats.setdefault(pipeline, PipelineStats(pipeline)).count(status, runs)
    for pipeline, rows in groupby(db.execute(DURATIONS, window), key=lambda row: row[0]):
        with_durations(stats[pipeline], (row[1] for row in rows))
    for pipeline, model, used_in, used_out in db.execute(USAGE, window):
        stats[pipeline].add_tokens(model, Tokens(used_in, used_out))
    return [stats[name] for name in sorted(stats)]


class SQLiteStats(SQLiteConnection, RunStats):
    """``RunStats`` on SQLite."""

    async def pipeline_stats(self, owner: str | None, since: float) -> list[PipelineStats]:
        window = (since, owner, owner)
        return await self._query(lambda db: _stats(db, window))
