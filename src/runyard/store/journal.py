"""The journal of durable work, as the store keeps it: recorded steps and the
runs whose wait is over (``runyard.journal`` reads it at each execution)."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

from runyard.models import Run, StepRecord


@dataclass(slots=True)
class Replay:
    """What a run's next execution replays: its recorded steps (asks' answers
    and sleeps included) by ``(name, n)``, and ``mark``, the last ``pos`` in its
    log (0 for none): the events a pipeline emits before that position are
    already stored and are not appended again (``runyard.journal``)."""

    steps: dict[tuple[str, int], StepRecord] = field(default_factory=dict)
    mark: int = 0


class Journal(Protocol):
    """What durable execution reads back: recorded steps and the runs whose wait
    is over. Steps are written with their ``step`` event (``AppendGroup.step``),
    waits by a run's update (``RunUpdate.waiting``)."""

    @abstractmethod
    async def replay(self, run_id: str) -> Replay:
        """The run's recorded steps and its log's replay mark."""

    @abstractmethod
    async def due_waits(self, at: float, limit: int) -> list[Run]:
        """Up to ``limit`` waiting runs whose wait is due at ``at``, soonest first.

        Due: its ``until`` is at or before ``at`` (a sleep that ended, a question
        that timed out)."""


async def replay_of(journal: Journal, run: Run) -> Replay:
    """What ``run``, just claimed, replays. A run whose log holds nothing but the
    claim's own ``status`` event (seq 1) has never executed: it has no step and no
    event to replay, so the read is skipped (one store round trip per run start,
    beside the reads of the stream that follows it)."""
    if run.last_seq <= 1:
        return Replay()
    return await journal.replay(run.run_id)
