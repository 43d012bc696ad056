"""The contract's rules for an ``append`` batch, shared by every backend: a group
for a missing run, or whose update expects another status, is refused whole
with ``StatusConflict`` (``LeaseLost`` when its fence no longer holds); the
others' events are numbered from the run's ``last_seq`` without gaps, and their
updates apply in order (a later group's update wins). Backends only load the
runs' states and write the outcome. A claim is such a group too (``claim_group``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.models import (
    UNFINISHED,
    Event,
    EventDraft,
    Fence,
    LeaseLost,
    RunError,
    RunStatus,
    RunUpdate,
    StatusConflict,
    dumps,
)
from runyard.store.base import AppendGroup, AppendResult, Cancelled


@dataclass(slots=True)
class RunState:
    """What numbering needs of a run; ``key`` is the backend's own handle on it."""

    status: RunStatus
    last_seq: int
    key: Any = None
    worker_id: str | None = None
    attempt: int = 1
    lease_expires_at: float | None = None
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
        if group.fence is not None and not _held(run, group.fence):
            results.append(LeaseLost(run_id, run.status))
            continue
        if update is not None and not _expected(run, update):
            results.append(StatusConflict(run_id, run.status))
            continue
        first = run.last_seq + 1
        events = [Event(run_id, first + i, draft.type, draft.data, draft.ts) for i, draft in enumerate(group.drafts)]
        run.last_seq += len(events)
        run.appended = run.appended or bool(events)
        if update is not None:
            run.updates.append(update)
            _apply(run, update)
        numbered.extend(events)
        results.append(events)
    return results, numbered


def _held(run: RunState, fence: Fence) -> bool:
    return run.status is RunStatus.RUNNING and run.worker_id == fence.worker_id and run.attempt == fence.attempt


def _expected(run: RunState, update: RunUpdate) -> bool:
    if update.expect is not None and run.status not in update.expect:
        return False
    if update.lease_expired_by is not None:
        return run.lease_expires_at is not None and run.lease_expires_at < update.lease_expired_by
    return True


def _apply(run: RunState, update: RunUpdate) -> None:
    """What later groups of the batch must see of ``update`` (as ``apply_update`` writes it)."""
    run.status = update.status or run.status
    if update.attempt is not None:
        run.attempt = update.attempt
    if update.clear_lease:
        run.worker_id = run.lease_expires_at = None
    if update.worker_id is not None:
        run.worker_id = update.worker_id
    if update.lease_expires_at is not None:
        run.lease_expires_at = update.lease_expires_at


def claim_group(run_id: str, attempt: int, worker_id: str, at: float, lease_until: float) -> AppendGroup:
    """The append that claims a queued run: its ``running`` status event and lease."""
    status = dumps({"status": "running", "attempt": attempt})
    update = RunUpdate(
        status=RunStatus.RUNNING,
        expect=frozenset({RunStatus.QUEUED}),
        started_at=at,
        worker_id=worker_id,
        lease_expires_at=lease_until,
    )
    return AppendGroup(run_id, [EventDraft(run_id, "status", status, at)], update)


# The run's end when the store itself cancels it (an interrupt, a session's
# deletion): the same error, events and row as ``Outcome.cancelled()`` writes.
CANCELLED = RunError("cancelled", "the run was cancelled")


def cancel_group(run_id: str, at: float) -> AppendGroup:
    """The append that cancels a queued or running run in the store: its
    ``status`` and ``end`` events, ``cancelled``, no lease (so its worker's fenced
    writes are refused from then on)."""
    error = CANCELLED.to_dict()
    update = RunUpdate(
        status=RunStatus.CANCELLED,
        expect=UNFINISHED,
        error=CANCELLED,
        finished_at=at,
        clear_lease=True,
    )
    drafts = [
        EventDraft(run_id, "status", dumps({"status": "cancelled"}), at),
        EventDraft(run_id, "end", dumps({"status": "cancelled", "error": error}), at),
    ]
    return AppendGroup(run_id, drafts, update)


CancelCandidate = tuple[str, RunStatus, str, str, int]  # run id, status before, pipeline, owner, attempt


def cancellations(session_id: str, runs: Sequence[CancelCandidate], results: Sequence[AppendResult]) -> list[Cancelled]:
    """What ``cancel_group`` appends did, for the session's runs they were for."""
    return [
        Cancelled(run_id, status is RunStatus.RUNNING, result, pipeline, session_id, owner, attempt)
        for (run_id, status, pipeline, owner, attempt), result in zip(runs, results, strict=True)
        if isinstance(result, list)
    ]
