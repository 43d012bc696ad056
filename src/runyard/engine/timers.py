"""Ends the waits that time ends: a ``ctx.sleep`` that is over queues its run
again, a ``ctx.ask`` unanswered past its ``timeout_s`` ends its run ``timed_out``.

Every worker looks every ``TICK_S`` (one indexed query of the store: waiting
runs whose ``until`` has passed), so a sleep ends within a tick of its time
whichever worker is alive, across restarts of every process. Workers racing
for the same run are settled by the store: each change is conditional on the
run still waiting for that very wait (``RunUpdate.expect_wait``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from runyard.events.log import EventLog
from runyard.models import ASK, Run, RunStatus, RunUpdate, StatusConflict, Wait, now
from runyard.observability import metrics
from runyard.observability.logs import log_run
from runyard.outcome import Outcome
from runyard.store.journal import Journal

log = logging.getLogger("runyard.engine")

TICK_S = 0.25  # how late a sleep may end (plus a claim)
BATCH = 100  # due waits ended per query
WAITING = frozenset({RunStatus.WAITING})


class Timers:
    """Ends due waits; ``released`` is told when runs were queued again."""

    def __init__(self, store: Journal, events: EventLog, released: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._events = events
        self._released = released

    async def run(self) -> None:
        while True:
            try:
                while await self.end_due_waits() >= BATCH:
                    pass
            except Exception:
                log.exception("ending due waits failed; retrying")
            await asyncio.sleep(TICK_S)

    async def end_due_waits(self) -> int:
        """End the waits that are due now; how many were due."""
        due = await self._store.due_waits(now(), BATCH)
        queued = 0
        for run in due:
            wait = run.waiting
            if wait is None:
                continue
            try:
                if wait.kind == ASK:
                    await self._time_out(run, wait)
                else:
                    await self._wake(run, wait)
                    queued += 1
            except StatusConflict:
                pass  # answered, cancelled, or ended by another worker first
        if queued:
            await self._released()
        return len(due)

    async def _wake(self, run: Run, wait: Wait) -> None:
        update = RunUpdate(status=RunStatus.QUEUED, expect=WAITING, expect_wait=wait.id, clear_waiting=True)
        status = {"status": "queued", "attempt": run.attempt, "reason": "slept"}
        await self._events.append_group(run.run_id, [("status", status)], update)
        log_run("resumed", run, by="sleep", wait_id=wait.id)

    async def _time_out(self, run: Run, wait: Wait) -> None:
        outcome = Outcome.unanswered(wait.id)
        update = outcome.update(WAITING)
        update.expect_wait = wait.id
        await self._events.append_group(run.run_id, outcome.events(), update)
        metrics.RUNS_TOTAL.labels(run.pipeline, outcome.status.value).inc()
        log_run("ended", run, status=outcome.status.value, code="timed_out", wait_id=wait.id)
