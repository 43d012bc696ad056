"""The memory store's pipeline health (``stats.RunStats``)."""

from __future__ import annotations

from collections import defaultdict

import orjson

from runyard.models import Event, Run
from runyard.pricing import Tokens, token_count, usage_model
from runyard.store.stats import PipelineStats, RunStats, with_durations


class MemoryStats(RunStats):
    """Aggregates over the memory store's runs."""

    _runs: dict[str, Run]
    _events: dict[str, list[Event]]

    async def pipeline_stats(self, owner: str | None, since: float) -> list[PipelineStats]:
        stats: dict[str, PipelineStats] = {}
        durations: dict[str, list[float]] = defaultdict(list)
        for run in self._runs.values():
            if run.finished_at is None or run.finished_at < since or (owner is not None and run.owner != owner):
                continue
            pipeline = stats.setdefault(run.pipeline, PipelineStats(run.pipeline))
            pipeline.count(run.status.value, 1)
            if run.started_at is not None:
                durations[run.pipeline].append(run.finished_at - run.started_at)
            for event in self._events.get(run.run_id, ()):
                if event.type == "usage" and isinstance(data := orjson.loads(event.data), dict):
                    used = Tokens(token_count(data.get("input_tokens")), token_count(data.get("output_tokens")))
                    pipeline.add_tokens(usage_model(data), used)
        return [with_durations(stats[name], durations[name]) for name in sorted(stats)]
