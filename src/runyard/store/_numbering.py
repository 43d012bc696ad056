"""The contract's rules for an ``append`` batch, shared by every backend: a group
for a missing run, or whose update expects another status, is refused whole
with ``StatusConflict`` (``LeaseLost`` when its fence no longer holds), or with
``RunTooLarge`` when its events would take the run's stored bytes past the cap;
the others' events are numbered from the run's ``last_seq`` without gaps, their
bytes added to its ``stored_bytes``, and their updates apply in order (a later
group's update wins). Backends only load the runs' states and write the outcome.
A claim is such a group too (``claim_group``). A group may carry a step's
record (``AppendGroup.step``): backends insert it with the group's events, so a
step is recorded exactly when its ``step`` event is (``recorded_steps``).

The cap exempts groups that carry a run update: those are the runtime's own
status changes (a claim, a hand-back, the end with its ``error``/``status``/``end``
events), a few small events per attempt. Exempting them, rather than reserving
room under the cap, means a run refused for its size still records how it ended
whatever its output or error weighs, and the cap needs no guess at their size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.errors import RunTooLarge
from runyard.models import (
    UNFINISHED,
    Event,
    EventDraft,
    LeaseLost,
    Run,
    RunStatus,
    RunUpdate,
    StatusConflict,
    StepRecord,
    Wait,
    dumps,
    session_channel,
)
from runyard.outcome import Outcome
from runyard.store._rows import apply_update
from runyard.store.base import AppendGroup, AppendResult, Cancelled, Claimed


@dataclass(slots=True)
class RunState:
    """What numbering needs of a run; ``key`` is the backend's own handle on it."""

    status: RunStatus
    last_seq: int
    key: Any = None
    worker_id: str | None = None
    attempt: int = 1
    lease_expires_at: float | None = None
    stored_bytes: int = 0  # what its events weigh (``event_size``), every attempt counted
    waiting: Wait | None = None
    webhook: str | None = None  # the run's webhook URL: its end queues a delivery (``finished_webhooks``)
    ended: bool = False  # the batch finished it
    appended: bool = False  # the batch numbered events of it
    updates: list[RunUpdate] = field(default_factory=list)  # the batch's accepted updates, in order
    session: str | None = None  # the run's ``session_channel``, which its events carry to the session's followers

    @classmethod
    def of(cls, run: Run, stored_bytes: int) -> RunState:
        """The state of ``run`` as read (a store that holds whole runs: memory, a claim)."""
        return cls(
            run.status,
            run.last_seq,
            None,
            run.worker_id,
            run.attempt,
            run.lease_expires_at,
            stored_bytes,
            run.waiting,
            run.webhook,
            session=session_channel(run.owner, run.session_id),
        )


# What an event weighs besides its data and type: its seq, time and keys, so that a
# run of empty events is bounded by the cap too.
EVENT_OVERHEAD = 32


def event_size(draft: EventDraft) -> int:
    """The bytes an event counts for against ``RUNYARD_MAX_RUN_BYTES``."""
    return len(draft.data) + len(draft.type) + EVENT_OVERHEAD


def number(
    groups: Sequence[AppendGroup], runs: Mapping[str, RunState], max_run_bytes: int | None = None
) -> tuple[list[AppendResult], list[Event]]:
    """Each group's result, and every new event in batch order; ``runs`` is updated.
    ``max_run_bytes``: the cap on a run's stored bytes (None: no cap)."""
    results: list[AppendResult] = []
    numbered: list[Event] = []
    for group in groups:
        run_id, update, drafts, fence = group.run_id, group.update, group.drafts, group.fence
        run = runs.get(run_id)
        if run is None:
            results.append(StatusConflict(run_id, None))
            continue
        if fence is not None and not (  # the fence holds: the run runs, for that worker's attempt
            run.status is RunStatus.RUNNING and run.worker_id == fence.worker_id and run.attempt == fence.attempt
        ):
            results.append(LeaseLost(run_id, run.status))
            continue
        if update is not None and not _expected(run, update):
            results.append(StatusConflict(run_id, run.status))
            continue
        # Most groups are one event a pipeline emitted: no generator, enumerate
        # or second list for them (numbering one took 4.0 -> 2.3 µs; 1,000 groups of 100 runs)
        single = len(drafts) == 1
        if single:
            draft = drafts[0]
            size = len(draft.data) + len(draft.type) + EVENT_OVERHEAD  # event_size, inlined
        else:
            size = sum(event_size(draft) for draft in drafts)
        if group.step is not None:
            size += len(group.step.result)
        if update is None and max_run_bytes is not None and run.stored_bytes + size > max_run_bytes:
            results.append(RunTooLarge(run_id, max_run_bytes))
            continue
        run.stored_bytes += size
        first = run.last_seq + 1
        session = run.session
        if single:
            event = Event(run_id, first, draft.type, draft.data, draft.ts, session)
            events = [event]
            numbered.append(event)
            run.last_seq = first
            run.appended = True
        else:
            events = [Event(run_id, first + i, d.type, d.data, d.ts, session) for i, d in enumerate(drafts)]
            numbered.extend(events)
            run.last_seq += len(events)
            run.appended = run.appended or bool(events)
        if update is not None:
            was_finished = run.status.finished
            run.updates.append(update)
            apply_update(run, update, only=NUMBERED)  # what later groups of the batch must see
            run.ended = run.ended or (run.status.finished and not was_finished)
        results.append(events)
    return results, numbered


def _expected(run: RunState, update: RunUpdate) -> bool:
    if update.expect is not None and run.status not in update.expect:
        return False
    if update.expect_wait is not None and (run.waiting is None or run.waiting.id != update.expect_wait):
        return False
    if update.lease_expired_by is not None:
        return run.lease_expires_at is not None and run.lease_expires_at < update.lease_expired_by
    return True


# The fields of a run's state that numbering follows (``_rows.update_fields`` sets them).
NUMBERED = frozenset({"status", "attempt", "worker_id", "lease_expires_at", "waiting"})


def recorded_steps(groups: Sequence[AppendGroup], results: Sequence[AppendResult]) -> list[tuple[str, StepRecord]]:
    """The ``(run id, step)`` records of the groups that were written: a backend
    inserts them in the batch's transaction (a step recorded twice keeps its
    first record: ``INSERT ... ON CONFLICT DO NOTHING``)."""
    return [
        (group.run_id, group.step)
        for group, result in zip(groups, results, strict=True)
        if group.step is not None and isinstance(result, list)
    ]


def finished_webhooks(runs: Mapping[str, RunState]) -> list[tuple[str, str]]:
    """The ``(run id, webhook URL)`` of the runs with a webhook that this batch
    finished: a backend inserts their outbox rows (``runyard.webhooks``) in the
    batch's transaction, so a run is never finished without its delivery queued.
    Every terminal status passes here (the engine's end, a store cancel, a
    session's deletion, an ask's timeout), and a run finishes only once."""
    return [(run_id, run.webhook) for run_id, run in runs.items() if run.ended and run.webhook is not None]


# A claim of this many runs (candidates, on PostgreSQL) at most looks among the
# oldest queued runs for new owners' first runs before walking every owner with
# queued runs (SQLite's FRESH_CLAIMABLE, PostgreSQL's FRESH). A larger one, as a
# worker's claim of all its free slots in a ramp, is rarely filled by them and
# then pays both reads: on the fleet's ramp (scaleout.py pg-2a2w steady, 3
# pairs, FRESH then inside the walk's statement) p99 over all ticks 112-203 ms
# against 119-135, PostgreSQL's CPU up to 22 % more.
FRESH_CLAIMS_UP_TO = 100


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


def claimed_by(run: Run, group: AppendGroup, result: AppendResult, cancel_requested: bool = False) -> Claimed | None:
    """``run`` (changed in place) as ``group``, its ``claim_group``, claimed it,
    or None when the claim's append was refused."""
    if not isinstance(result, list) or group.update is None:
        return None
    apply_update(run, group.update)
    run.last_seq = result[0].seq
    return Claimed(run, result[0], cancel_requested)


def end_group(run_id: str, outcome: Outcome, expect: frozenset[RunStatus], at: float) -> AppendGroup:
    """The append that ends a run with ``outcome``: its events and row, as the
    engine writes them for the runs it executes."""
    drafts = [EventDraft(run_id, type, dumps(data), at) for type, data in outcome.events()]
    return AppendGroup(run_id, drafts, outcome.update(expect, at))


def cancel_group(run_id: str, at: float) -> AppendGroup:
    """The append that cancels an unfinished run in the store (an interrupt, a
    session's deletion): ``cancelled`` with its ``status`` and ``end`` events, no
    lease (so its worker's fenced writes are refused from then on), no wait."""
    return end_group(run_id, Outcome.cancelled(), UNFINISHED, at)


CancelCandidate = tuple[str, RunStatus, str, str, int]  # run id, status before, pipeline, owner, attempt


def cancellations(session_id: str, runs: Sequence[CancelCandidate], results: Sequence[AppendResult]) -> list[Cancelled]:
    """What ``cancel_group`` appends did, for the session's runs they were for."""
    return [
        Cancelled(run_id, status is RunStatus.RUNNING, result, pipeline, session_id, owner, attempt)
        for (run_id, status, pipeline, owner, attempt), result in zip(runs, results, strict=True)
        if isinstance(result, list)
    ]
