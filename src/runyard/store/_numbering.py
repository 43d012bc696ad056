"""The contract's rules for an ``append`` batch, shared by every backend: a group
for a missing run, or whose update expects another status, is refused whole
with ``StatusConflict``; the others' events are numbered from the run's
``last_seq`` without gaps, and their updates apply in order (a later group's
update wins). Backends only load the runs' states and write the outcome."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.models import Event, RunStatus, RunUpdate, StatusConflict
from runyard.store.base import AppendGroup, AppendResult


@dataclass(slots=True)
class RunState:
    """What numbering needs of a run; ``key`` is the backend's own handle on it."""

    status: RunStatus
    last_seq: int
    key: Any = None
    appended: bool = False  # the batch numbered events of it
    updates: list[RunUpdate] = field(default_factory=list)  # the batch's accepted updates, in order


def number(groups: Sequence[AppendGroup], runs: Mapping[str, RunState]) -> tuple[list[AppendResult], list[Event]]:
    """Each group's result, and every new event in batch order; ``runs`` is updated."""
    results: list[AppendResult] = []
    numbered: list[Event] = []
    for group in groups:
        run_id, update = group.run_id, group.update
        run = runs.get(run_id)
        if run is None:
            results.append(StatusConflict(run_id, None))
            continue
        if update is not None and update.expect is not None and run.status not in update.expect:
            results.append(StatusConflict(run_id, run.status))
            continue
        first = run.last_seq + 1
        events = [Event(run_id, first + i, draft.type, draft.data, draft.ts) for i, draft in enumerate(group.drafts)]
        run.last_seq += len(events)
        run.appended = run.appended or bool(events)
        if update is not None:
            run.updates.append(update)
            run.status = update.status or run.status
        numbered.extend(events)
        results.append(events)
    return results, numbered
