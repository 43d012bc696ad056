"""How a run leaves its execution, in the store: ended with its outcome, handed
back by a draining worker, or recovered after its worker died. Each is one
conditional append (events and row together), so a run never ends twice and a
worker that lost the run writes nothing."""

from __future__ import annotations

import contextlib
import logging

from runyard.broker.base import WAKE, Broker
from runyard.engine.execution import Execution
from runyard.events.log import EventLog, EventsLost
from runyard.models import Fence, Run, RunStatus, RunUpdate, StatusConflict, now
from runyard.observability import metrics
from runyard.observability.logs import log_run
from runyard.outcome import Outcome
from runyard.store.base import SessionStore

log = logging.getLogger("runyard.engine")

RUNNING = frozenset({RunStatus.RUNNING})


class Endings:
    """Writes a run's end, hand-back or recovery through the engine's event log."""

    def __init__(self, store: SessionStore, events: EventLog, broker: Broker) -> None:
        self._store = store
        self._events = events
        self._broker = broker

    async def end(self, execution: Execution, outcome: Outcome) -> None:
        """Record how the pipeline ended; ``failed`` instead of ``succeeded`` when
        some of the run's events could not be stored (``events_lost``)."""
        run, fence, executed_s = execution.run, execution.fence, execution.executed_s()
        with contextlib.suppress(StatusConflict):  # logged by finish
            try:
                await self.finish(run, outcome, expect=RUNNING, fence=fence, executed_s=executed_s)
            except EventsLost as lost:
                failed = Outcome.failed(lost.code, str(lost))
                await self.finish(run, failed, expect=RUNNING, fence=fence, executed_s=executed_s)

    async def finish(
        self,
        run: Run,
        outcome: Outcome,
        expect: frozenset[RunStatus],
        fence: Fence | None = None,
        lease_expired_by: float | None = None,
        executed_s: float | None = None,
    ) -> None:
        """Record the run's end; ``StatusConflict`` (logged) when it had already ended
        or, fenced, is no longer this worker's (or its lease was renewed after all)."""
        update = outcome.update(expect)
        update.lease_expired_by = lease_expired_by
        update.executed_s = executed_s
        try:
            await self._events.append_group(run.run_id, outcome.events(), update, fence=fence)
        except StatusConflict as conflict:
            log.info("run %s was already %s; %s not recorded", run.run_id, conflict.actual, outcome.status)
            raise
        metrics.RUNS_TOTAL.labels(run.pipeline, outcome.status.value).inc()
        code = outcome.error.code if outcome.error is not None else None
        log_run("ended", run, status=outcome.status.value, code=code)
        await self._store.touch_session(run.session_id, now())  # a run's end is its session's activity

    async def hand_back(self, execution: Execution) -> None:
        """A run this draining worker stopped: queued again, in the same attempt
        (a deploy uses up none of its retries), with the time it executed here
        counted; the next execution replays its recorded steps. Conditional on
        this worker still holding it."""
        run = execution.run
        update = RunUpdate(
            status=RunStatus.QUEUED,
            expect=RUNNING,
            clear_lease=True,
            executed_s=execution.executed_s(),
        )
        status = {"status": "queued", "attempt": run.attempt, "reason": "handed_back"}
        try:
            await self._events.append_group(run.run_id, [("status", status)], update, fence=execution.fence)
        except StatusConflict:
            return
        log_run("handed_back", run, next_attempt=run.attempt, reason="drain")
        await self._broker.signal(WAKE)  # another worker takes it

    async def recover(self, run: Run, *, lease_expired_by: float) -> None:
        """A run whose worker died (its lease expired before ``lease_expired_by``):
        queued again with ``attempt + 1`` if its pipeline allows retries, else
        ``failed`` with ``worker_lost``. Conditional on the lease having expired."""
        if run.attempt < run.max_attempts:
            attempt = run.attempt + 1
            update = RunUpdate(
                status=RunStatus.QUEUED,
                expect=RUNNING,
                attempt=attempt,
                clear_lease=True,
                lease_expired_by=lease_expired_by,
            )
            status = {"status": "queued", "attempt": attempt, "reason": "worker_lost"}
            try:
                await self._events.append_group(run.run_id, [("status", status)], update)
            except StatusConflict:
                return
            log_run("handed_back", run, next_attempt=attempt, reason="worker_lost")
            await self._broker.signal(WAKE)  # any worker may take it; this one if it is not draining
        else:
            lost = Outcome.failed("worker_lost", "the worker executing this run stopped before it finished")
            with contextlib.suppress(StatusConflict):
                await self.finish(run, lost, expect=RUNNING, lease_expired_by=lease_expired_by)
