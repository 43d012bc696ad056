"""``memory://``: the whole store in this process's dictionaries.

Public testing API (like procrastinate's in-memory connector): fast, exact, and
gone with the process. It is the reference for the contract's semantics.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Collection, Sequence

from runyard.errors import QuotaExceeded
from runyard.models import (
    UNFINISHED,
    Cron,
    Event,
    Message,
    Multitask,
    Run,
    RunStatus,
    Session,
    SessionEvent,
    StepRecord,
    now,
)
from runyard.store._listing import run_matches
from runyard.store._numbering import RunState, cancel_group, cancellations, claim_group, number, recorded_steps
from runyard.store._rows import apply_update
from runyard.store.base import (
    DEFAULT_MAX_RUN_BYTES,
    Admission,
    AppendGroup,
    AppendResult,
    Cancelled,
    Claimed,
    Entered,
    LeaseRenewal,
    RunQuery,
    SessionEntry,
    Store,
)
from runyard.store.items import Item
from runyard.store.journal import Replay
from runyard.store.memory_crons import MemoryCrons
from runyard.store.memory_directory import MemorySessionDirectory
from runyard.store.memory_items import ItemKey, MemoryItems
from runyard.store.memory_outbox import MemoryOutbox
from runyard.store.memory_session_streams import MemorySessionStreams
from runyard.store.memory_stats import MemoryStats
from runyard.store.memory_workers import MemoryWorkers


class MemoryStore(
    MemoryItems,
    MemoryCrons,
    MemorySessionDirectory,
    MemorySessionStreams,
    MemoryWorkers,
    MemoryOutbox,
    MemoryStats,
    Store,
):
    """Everything in dictionaries; every method is atomic because none awaits."""

    def __init__(
        self,
        url: str = "memory://",
        max_run_bytes: int | None = DEFAULT_MAX_RUN_BYTES,
        lease_s: float | None = None,  # unused: no lock outlives a call here
    ) -> None:
        self.url = url
        self.max_run_bytes = max_run_bytes
        self._sessions: dict[str, Session] = {}
        self._memory: dict[str, list[Message]] = {}
        self._runs: dict[str, Run] = {}
        self._order: list[str] = []  # run ids in creation order
        self._events: dict[str, list[Event]] = {}
        self._stored_bytes: dict[str, int] = {}  # run id -> what its events weigh (``event_size``)
        self._steps: dict[str, dict[tuple[str, int], StepRecord]] = {}  # run id -> its recorded steps
        self._marks: dict[str, int] = {}  # run id -> the last ``pos`` in its log
        self._unfinished: dict[str, None] = {}  # queued, running and waiting run ids, in creation order
        self._cancel_requested: set[str] = set()
        self._served: dict[str, float] = {}  # owner -> when a run of theirs was last claimed
        self._created: dict[str, int] = {}  # owner -> runs created while a quota was set
        self._keys: dict[tuple[str, str], tuple[str, str, float]] = {}  # (owner, key) -> fingerprint, run id, when
        self._workers: dict[str, tuple[frozenset[str], float]] = {}  # worker id -> pipelines served, last seen
        self._items: dict[ItemKey, Item] = {}  # the long-term store (``memory_items``)
        self._crons: dict[str, Cron] = {}  # issue 13: crons
        self._session_logs: dict[str, list[SessionEvent]] = {}  # session key -> its stream, by cursor
        self._appended = 0  # events appended ever: the cursor of the latest one in its session's stream
        self._outbox = {}  # run id -> its webhook delivery owed, when due (``MemoryOutbox``)

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def migrate(self) -> int:
        return 1

    # -- sessions and memory ---------------------------------------------------

    async def create_session(self, session: Session) -> None:
        self._sessions[session.session_id] = copy.copy(session)

    async def get_session(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        return copy.copy(session) if session else None

    async def touch_session(self, session_id: str, at: float) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_activity = max(session.last_activity, at)

    async def delete_session(self, session_id: str, at: float) -> list[Cancelled]:
        session = self._sessions.get(session_id)
        if session is not None:
            session.deleted = True
        self._memory.pop(session_id, None)
        return await self._cancel_unfinished(session_id, at)

    async def _cancel_unfinished(self, session_id: str, at: float) -> list[Cancelled]:
        runs = [
            (run.run_id, run.status, run.pipeline, run.owner, run.attempt)
            for run in await self.unfinished_runs(session_id)
        ]
        results = await self.append([cancel_group(run[0], at) for run in runs])
        return cancellations(session_id, runs, results)

    async def forget_idle_sessions(self, idle_before: float) -> int:
        busy = {run.session_id for run in self._runs.values() if run.status in UNFINISHED}
        idle = [
            s.session_id
            for s in self._sessions.values()
            if s.last_activity < idle_before and s.session_id not in busy  # busy sessions are never idle
        ]
        forgotten = 0
        for session_id in idle:
            if self._memory.pop(session_id, None) is not None:
                forgotten += 1
        return forgotten

    async def history(self, session_id: str) -> list[Message]:
        return [copy.deepcopy(m) for m in self._memory.get(session_id, [])]

    async def append_message(self, session_id: str, message: Message, keep: int) -> None:
        messages = self._memory.setdefault(session_id, [])
        messages.append(copy.deepcopy(message))
        del messages[: max(len(messages) - keep, 0)]

    # -- runs ------------------------------------------------------------------

    async def create_run(self, run: Run, new_session: Session | None = None, admission: Admission | None = None) -> Run:
        if admission is not None:
            first = await self._admit(run, admission)
            if first is not None:
                return first
        if new_session is not None:
            await self.create_session(new_session)
        self._insert(run)
        return copy.deepcopy(run)

    async def enter_session(self, run: Run, entry: SessionEntry, admission: Admission | None = None) -> Entered:
        # nothing here awaits for real: the checks and the writes are one step
        if admission is not None and admission.idempotency_key is not None:
            seen = await self.idempotent_run(run.owner, admission.idempotency_key, admission.since)
            if seen is not None:
                return Entered(admission.repeat_of(*seen))
        session = self._sessions.get(run.session_id)
        unfinished = await self.unfinished_runs(run.session_id)
        entry.check(session, run, busy_with=unfinished[0].run_id if unfinished else None)
        if admission is not None:
            await self._admit(run, admission)
        interrupt = unfinished and entry.multitask is Multitask.INTERRUPT
        cancelled = await self._cancel_unfinished(run.session_id, run.created_at) if interrupt else []
        self._insert(run)
        await self.touch_session(run.session_id, run.created_at)
        return Entered(copy.deepcopy(run), cancelled)

    async def _admit(self, run: Run, admission: Admission) -> Run | None:
        """The first run of a repeated key, or None once ``run`` is admitted (and counted)."""
        key = admission.idempotency_key
        if key is not None:
            seen = await self.idempotent_run(run.owner, key, admission.since)
            if seen is not None:
                return admission.repeat_of(*seen)
        if admission.quota is not None:
            if self._created.get(run.owner, 0) >= admission.quota:
                raise QuotaExceeded(f"owner {run.owner!r} has created all {admission.quota} runs of its quota")
            self._created[run.owner] = self._created.get(run.owner, 0) + 1
        if key is not None:
            self._keys[(run.owner, key)] = (admission.fingerprint, run.run_id, run.created_at)
        return None

    async def idempotent_run(self, owner: str, key: str, since: float) -> tuple[str, Run] | None:
        seen = self._keys.get((owner, key))
        if seen is None or seen[2] < since or seen[1] not in self._runs:
            return None
        return seen[0], copy.deepcopy(self._runs[seen[1]])

    async def forget_idempotency_keys(self, before: float) -> int:
        old = [seen for seen, (_, _, at) in self._keys.items() if at < before]
        for seen in old:
            del self._keys[seen]
        return len(old)

    def _insert(self, run: Run) -> None:
        self._runs[run.run_id] = copy.deepcopy(run)
        self._order.append(run.run_id)
        self._events[run.run_id] = []
        if run.status in UNFINISHED:
            self._unfinished[run.run_id] = None

    async def get_run(self, run_id: str) -> Run | None:
        run = self._runs.get(run_id)
        return copy.deepcopy(run) if run else None

    async def list_runs(self, query: RunQuery) -> list[Run]:
        found: list[Run] = []
        if query.limit <= 0:
            return found
        skipping = query.before is not None
        for run_id in reversed(self._order):
            if skipping:
                skipping = run_id != query.before
                continue
            run = self._runs.get(run_id)
            if run is None or not run_matches(run, query):
                continue
            found.append(copy.deepcopy(run))
            if len(found) >= query.limit:
                break
        return found

    async def count_queued(self) -> int:
        at = now()  # a run scheduled for later is not waiting for a worker yet
        return sum(
            1 for run_id in self._unfinished if (run := self._runs[run_id]).status is RunStatus.QUEUED and run.due(at)
        )

    async def unfinished_runs(self, session_id: str) -> list[Run]:
        return [
            copy.deepcopy(run)
            for run in (self._runs.get(r) for r in self._order)
            if run is not None and run.session_id == session_id and run.status in UNFINISHED
        ]

    async def expired_leases(self, at: float) -> list[Run]:
        return [
            copy.deepcopy(run)
            for run in self._runs.values()
            if run.status is RunStatus.RUNNING and run.lease_expires_at is not None and run.lease_expires_at < at
        ]

    async def claim(
        self, worker_id: str, limit: int, at: float, lease_until: float, *, pipelines: Collection[str]
    ) -> list[Claimed]:
        heads: dict[str, Run] = {}  # session id -> its oldest unfinished run
        running: Counter[str] = Counter()  # owner -> runs running
        for run_id in self._unfinished:
            run = self._runs[run_id]
            heads.setdefault(run.session_id, run)
            if run.status is RunStatus.RUNNING:
                running[run.owner] += 1
        serves = frozenset(pipelines)
        ready = [
            run
            for run in heads.values()
            if run.status is RunStatus.QUEUED and run.pipeline in serves and run.due(at)  # after_s: not before
        ]
        waiting: Counter[str] = Counter()
        turns = []
        for age, run in enumerate(ready):  # oldest first
            waiting[run.owner] += 1
            served = self._served.get(run.owner, 0.0)
            turns.append((running[run.owner] + waiting[run.owner], served, age, run))
        chosen = [turn[-1] for turn in sorted(turns, key=lambda turn: turn[:3])[: max(limit, 0)]]
        for run in chosen:
            self._served[run.owner] = at
        results = await self.append([claim_group(r.run_id, r.attempt, worker_id, at, lease_until) for r in chosen])
        return [
            Claimed(copy.deepcopy(self._runs[run.run_id]), result[0], run.run_id in self._cancel_requested)
            for run, result in zip(chosen, results, strict=True)
            if isinstance(result, list)
        ]

    async def request_cancel(self, run_id: str) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.status is RunStatus.RUNNING:
            self._cancel_requested.add(run_id)

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> LeaseRenewal:
        renewal = LeaseRenewal()
        for run_id in run_ids:
            run = self._runs.get(run_id)
            if run is None or run.status is not RunStatus.RUNNING or run.worker_id != worker_id:
                renewal.lost.add(run_id)
                continue
            run.lease_expires_at = until
            if run_id in self._cancel_requested:
                renewal.cancel.add(run_id)
        return renewal

    async def sweep_runs(self, finished_before: float) -> int:
        old = [
            r.run_id
            for r in self._runs.values()
            if r.status.finished and r.finished_at is not None and r.finished_at < finished_before
        ]
        for run_id in old:
            del self._runs[run_id]
            del self._events[run_id]
            self._stored_bytes.pop(run_id, None)
            self._steps.pop(run_id, None)
            self._marks.pop(run_id, None)
            self._unfinished.pop(run_id, None)
        if old:
            gone = set(old)
            self._order = [r for r in self._order if r not in gone]
        return len(old)

    # -- events ----------------------------------------------------------------

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        states = {
            run_id: RunState.of(run, self._stored_bytes.get(run_id, 0))
            for run_id in {group.run_id for group in groups}
            if (run := self._runs.get(run_id)) is not None
        }
        results, events = number(groups, states, self.max_run_bytes)
        for event in events:
            self._events[event.run_id].append(event)
            self._appended += 1
            assert event.session is not None
            self._session_logs.setdefault(event.session, []).append(SessionEvent(self._appended, event))
        for group, result in zip(groups, results, strict=True):
            marks = [draft.pos for draft in group.drafts if draft.pos is not None]
            if marks and isinstance(result, list):
                self._marks[group.run_id] = marks[-1]
        for run_id, step in recorded_steps(groups, results):
            self._steps.setdefault(run_id, {}).setdefault((step.name, step.n), step)
        self._queue_deliveries(states)  # in the same step as the statuses: nothing awaits between
        for run_id, state in states.items():
            run = self._runs[run_id]
            run.last_seq = state.last_seq
            self._stored_bytes[run_id] = state.stored_bytes
            for update in state.updates:
                apply_update(run, update)
            if run.status.finished:
                self._unfinished.pop(run_id, None)
                self._cancel_requested.discard(run_id)
        return results

    # -- journal ---------------------------------------------------------------

    async def replay(self, run_id: str) -> Replay:
        return Replay(dict(self._steps.get(run_id, {})), self._marks.get(run_id, 0))

    async def due_waits(self, at: float, limit: int) -> list[Run]:
        due = [
            (until, run)
            for run_id in self._unfinished
            if (run := self._runs[run_id]).status is RunStatus.WAITING
            and (wait := run.waiting) is not None
            and (until := wait.until) is not None
            and until <= at
        ]
        due.sort(key=lambda pair: pair[0])
        return [copy.deepcopy(run) for _, run in due[: max(limit, 0)]]

    async def read_events(self, run_id: str, after: int, limit: int) -> list[Event]:
        log = self._events.get(run_id, [])
        # seq n sits at index n - 1: the log is gap-free by construction
        return log[max(after, 0) : max(after, 0) + limit]
