"""The store's part of the operations console: each pipeline's health over a
recent window (``GET /v1/stats/pipelines``), computed where the runs are.

A run counts in the window it finished in: its status, its duration (start to
finish: queueing aside) and the tokens of its ``usage`` events. Each backend
reads the runs through its index on ``finished_at``."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runyard.models import RunStatus
from runyard.pricing import Tokens

PERCENTILES = (0.5, 0.95)
FAILED = frozenset({RunStatus.FAILED.value, RunStatus.TIMED_OUT.value})


@dataclass(slots=True)
class PipelineStats:
    """One pipeline's runs that finished in the window."""

    pipeline: str
    runs: int = 0
    succeeded: int = 0
    failed: int = 0  # failed or timed out
    cancelled: int = 0
    p50_s: float | None = None
    p95_s: float | None = None
    tokens: dict[str, Tokens] = field(default_factory=dict)  # by model ("" when a usage event names none)

    def count(self, status: str, runs: int) -> None:
        self.runs += runs
        if status == RunStatus.SUCCEEDED.value:
            self.succeeded += runs
        elif status in FAILED:
            self.failed += runs
        elif status == RunStatus.CANCELLED.value:
            self.cancelled += runs

    def add_tokens(self, model: str, tokens: Tokens) -> None:
        self.tokens[model] = self.tokens.get(model, Tokens()) + tokens


def nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    """The value at ``fraction`` of ``ordered`` by the nearest-rank rule (PostgreSQL's percentile_disc)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def with_durations(stats: PipelineStats, durations: Iterable[float]) -> PipelineStats:
    ordered = sorted(durations)
    stats.p50_s, stats.p95_s = (nearest_rank(ordered, p) for p in PERCENTILES)
    return stats


class RunStats(Protocol):
    """Aggregates over recent runs."""

    @abstractmethod
    async def pipeline_stats(self, owner: str | None, since: float) -> list[PipelineStats]:
        """Per pipeline, ``owner``'s runs (None: every owner's) that finished at or after ``since``.

        Pipelines without any are left out; the list is ordered by pipeline name."""
