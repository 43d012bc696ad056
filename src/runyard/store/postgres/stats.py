"""The PostgreSQL store's pipeline health (``stats.RunStats``): two reads."""

from __future__ import annotations

from runyard.pricing import Tokens
from runyard.store.postgres.connection import PostgresConnection
from runyard.store.stats import PipelineStats, RunStats

# the runs finished since $1 (through runs_finished_at), of the owner $2 if it is not NULL
WINDOW = "finished_at >= $1 AND ($2::text IS NULL OR owner = $2)"
# percentile_disc is the nearest-rank rule of ``stats.nearest_rank``
COUNTS = f"""SELECT pipeline, status, count(*) AS runs,
    percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at - started_at) AS p50,
    percentile_disc(0.95) WITHIN GROUP (ORDER BY finished_at - started_at) AS p95
FROM runs WHERE {WINDOW} GROUP BY GROUPING SETS ((pipeline, status), (pipeline))"""
# a usage event's tokens count when they are an integer >= 0 (``pricing.token_count``)
_TOKENS = (
    "CASE WHEN jsonb_typeof(d->'{0}') = 'number' AND d->>'{0}' ~ '^[0-9]{{1,18}}$' THEN (d->>'{0}')::bigint ELSE 0 END"
)
# MATERIALIZED: each event's JSON is parsed once, not once per use of it below
USAGE = f"""WITH u AS MATERIALIZED (
    SELECT r.pipeline, convert_from(e.data, 'UTF8')::jsonb AS d
    FROM runs r JOIN events e ON e.run_id = r.run_id
    WHERE r.finished_at >= $1 AND ($2::text IS NULL OR r.owner = $2) AND e.type = 'usage'
)
SELECT pipeline, model, sum(input)::bigint, sum(output)::bigint FROM (
    SELECT pipeline, CASE WHEN jsonb_typeof(d->'model') = 'string' THEN d->>'model' ELSE '' END AS model,
        {_TOKENS.format("input_tokens")} AS input, {_TOKENS.format("output_tokens")} AS output
    FROM u WHERE jsonb_typeof(d) = 'object'
) t GROUP BY pipeline, model"""


class PostgresStats(PostgresConnection, RunStats):
    """``RunStats`` on PostgreSQL."""

    async def pipeline_stats(self, owner: str | None, since: float) -> list[PipelineStats]:
        stats: dict[str, PipelineStats] = {}
        for row in await self._db().fetch(COUNTS, since, owner):
            pipeline = stats.setdefault(row["pipeline"], PipelineStats(row["pipeline"]))
            if row["status"] is not None:
                pipeline.count(row["status"], row["runs"])
            else:  # the pipeline's row of the grouping sets: its durations over every status
                pipeline.p50_s, pipeline.p95_s = row["p50"], row["p95"]
        for row in await self._db().fetch(USAGE, since, owner):
            stats[row[0]].add_tokens(row[1], Tokens(row[2], row[3]))
        return [stats[name] for name in sorted(stats)]
