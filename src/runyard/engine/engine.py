"""The run's life in this process: queue, execution, timeout, cancellation,
leases, recovery of orphaned runs, drain on shutdown.

Everything here runs on the event loop, so the engine's own bookkeeping
(queue, session lines, tasks) needs no lock: it is only changed between awaits.
The store is the source of truth for a run's status; every change of it is a
conditional append (status event + row update in one transaction), so a run can
never end twice or end while another party believes it is queued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from runyard.context import RunContext
from runyard.engine.outcome import Outcome
from runyard.engine.queue import SessionLines
from runyard.events.log import EventLog
from runyard.fairness import FairLines
from runyard.models import Run, RunStatus, RunUpdate, StatusConflict, now
from runyard.observability import metrics
from runyard.store.base import Store

if TYPE_CHECKING:
    from runyard.app import Runyard

log = logging.getLogger("runyard.engine")

QUEUED = frozenset({RunStatus.QUEUED})
RUNNING = frozenset({RunStatus.RUNNING})


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Engine:
    """Executes queued runs as tasks, at most ``max_concurrent_runs`` at a time."""

    def __init__(self, app: Runyard, store: Store, events: EventLog) -> None:
        self._app = app
        self._settings = app.settings
        self._store = store
        self._events = events
        self.worker_id = new_worker_id()
        self._queue: FairLines[Run] = FairLines()  # ready runs
        self._lines = SessionLines()
        self._queued: dict[str, Run] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}  # run id -> its bookkeeping
        self._work: dict[str, asyncio.Task[Outcome]] = {}  # run id -> its pipeline's code
        self._cancel_requested: set[str] = set()
        self._draining = False
        self._maintenance: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Queue again the runs a previous process left queued, then start serving."""
        for run in await self._store.runs_with_status([RunStatus.QUEUED]):
            self.submit(run)
        self._maintenance = asyncio.create_task(self._maintain(), name="runyard-maintenance")

    async def stop(self) -> None:
        """Stop starting runs, let running ones finish for up to ``drain_s``, then
        hand the rest back per the lost-worker policy: nothing is left running."""
        self._draining = True
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self._settings.drain_s)
            for work in self._work.values():
                work.cancel()  # handed back by _supervise
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- queue -----------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def active(self) -> int:
        return len(self._tasks)

    def submit(self, run: Run) -> None:
        """Queue a run that the store holds as ``queued``."""
        self._queued[run.run_id] = run
        if self._lines.add(run):
            self._queue.push(run.owner, run)
        self._dispatch()

    def _dispatch(self) -> None:
        limit = self._settings.max_concurrent_runs
        while not self._draining and len(self._tasks) < limit:
            turn = self._queue.pop()
            if turn is None:
                break
            run = turn[1]
            del self._queued[run.run_id]
            self._tasks[run.run_id] = asyncio.create_task(self._execute(run), name=f"run-{run.run_id}")
        metrics.QUEUE_DEPTH.set(len(self._queue))

    def _release_line(self, run: Run) -> None:
        """``run`` left its session's line: the next run of the session becomes ready."""
        head = self._lines.remove(run)
        if head is not None:
            self._queue.push(head.owner, head)
        self._dispatch()

    # -- cancellation ----------------------------------------------------------

    async def cancel(self, run: Run) -> None:
        """Cancel a queued or running run; a finished one is left as it is."""
        if run.run_id in self._tasks:
            self._cancel_requested.add(run.run_id)
            work = self._work.get(run.run_id)
            if work is not None:
                work.cancel()
            return
        queued = self._queued.pop(run.run_id, None)
        if queued is not None:
            self._queue.remove(queued.owner, queued)
            self._release_line(queued)
        await self._finish(run, Outcome.cancelled(), expect=QUEUED)

    # -- execution -------------------------------------------------------------

    async def _execute(self, run: Run) -> None:
        """Drive one run from queued to its end. Only the pipeline's own code runs
        in a task that cancellation and drain reach; this bookkeeping never is
        cancelled half-way through a write."""
        try:
            if not await self._mark_running(run):
                return
            metrics.RUNS_ACTIVE.labels(run.pipeline).inc()
            started = now()
            try:
                outcome = await self._supervise(run)
            finally:
                metrics.RUNS_ACTIVE.labels(run.pipeline).dec()
                metrics.RUN_DURATION.labels(run.pipeline).observe(now() - started)
            if outcome is not None:
                await self._finish(run, outcome, expect=RUNNING)
        except Exception:
            log.exception("run %s could not be driven to its end", run.run_id)
        finally:
            self._tasks.pop(run.run_id, None)
            self._cancel_requested.discard(run.run_id)
            self._queue.done(run.owner)
            self._release_line(run)

    async def _mark_running(self, run: Run) -> bool:
        started = now()
        update = RunUpdate(
            status=RunStatus.RUNNING,
            expect=QUEUED,
            started_at=started,
            worker_id=self.worker_id,
            lease_expires_at=started + self._settings.lease_s,
        )
        try:
            await self._events.append_group(
                run.run_id, [("status", {"status": "running", "attempt": run.attempt})], update
            )
        except StatusConflict:
            return False  # cancelled (or taken) while it waited
        run.status, run.started_at = RunStatus.RUNNING, started
        return True

    async def _supervise(self, run: Run) -> Outcome | None:
        """Run the pipeline in its own task and say how the run ended; None when
        it was handed back (this process is shutting down)."""
        if run.run_id in self._cancel_requested:
            return Outcome.cancelled()
        work = asyncio.create_task(self._call_pipeline(run), name=f"pipeline-{run.run_id}")
        self._work[run.run_id] = work
        try:
            outcome = await work
        except asyncio.CancelledError:
            if run.run_id not in self._cancel_requested:
                await self._hand_back(run)
                return None
            outcome = Outcome.cancelled()
        finally:
            del self._work[run.run_id]
        if run.run_id in self._cancel_requested:
            return Outcome.cancelled()  # the pipeline swallowed its cancellation
        return outcome

    async def _call_pipeline(self, run: Run) -> Outcome:
        pipeline = self._app.pipelines.get(run.pipeline)
        if pipeline is None:
            return Outcome.failed("pipeline_not_found", f"pipeline {run.pipeline!r} is not served here")
        ctx = RunContext(run, self._events, self._store, self._app.limits, self._settings.history_max)
        token = ctx._activate()
        deadline = asyncio.timeout(run.timeout_s)
        try:
            async with deadline:
                output = await pipeline.func(ctx, pipeline.argument(run.input))
            return Outcome.succeeded(_jsonable(output))
        except TimeoutError as exc:
            if deadline.expired():
                return Outcome.timed_out(run.timeout_s or 0)
            return self._failure(run, exc)
        except Exception as exc:
            return self._failure(run, exc)
        finally:
            ctx._deactivate(token)

    def _failure(self, run: Run, exc: BaseException) -> Outcome:
        # The client gets the exception's type and message, never the traceback;
        # the log gets everything.
        log.error("run %s of %s failed", run.run_id, run.pipeline, exc_info=exc)
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Outcome.failed("pipeline_error", message)

    async def _finish(self, run: Run, outcome: Outcome, expect: frozenset[RunStatus]) -> bool:
        try:
            await self._events.append_group(run.run_id, outcome.events(), outcome.update(expect))
        except StatusConflict as conflict:
            log.info("run %s was already %s; %s not recorded", run.run_id, conflict.actual, outcome.status)
            return False
        metrics.RUNS_TOTAL.labels(run.pipeline, outcome.status.value).inc()
        await self._store.touch_session(run.session_id, now())  # a run's end is its session's activity
        return True

    # -- orphaned runs ---------------------------------------------------------

    async def _hand_back(self, run: Run) -> None:
        """A run this process cannot finish (its worker died, or is shutting down):
        queued again with ``attempt + 1`` if its pipeline allows retries, else
        ``failed`` with ``worker_lost``."""
        if run.attempt < run.max_attempts:
            attempt = run.attempt + 1
            update = RunUpdate(status=RunStatus.QUEUED, expect=RUNNING, attempt=attempt, clear_lease=True)
            status = {"status": "queued", "attempt": attempt, "reason": "worker_lost"}
            try:
                await self._events.append_group(run.run_id, [("status", status)], update)
            except StatusConflict:
                return
            run.status, run.attempt = RunStatus.QUEUED, attempt
            if not self._draining:
                self.submit(run)
        else:
            lost = Outcome.failed("worker_lost", "the worker executing this run stopped before it finished")
            await self._finish(run, lost, expect=RUNNING)

    async def _recover_expired_leases(self) -> None:
        for run in await self._store.expired_leases(now()):
            if run.run_id in self._tasks:
                continue  # ours and alive: the loop stalled past the lease; renewal follows
            log.warning("run %s lost its worker %s; recovering (attempt %d)", run.run_id, run.worker_id, run.attempt)
            await self._hand_back(run)

    async def _maintain(self) -> None:
        settings = self._settings
        tick = min(settings.lease_s / 3, 5.0)
        last_sweep = 0.0
        while True:
            try:
                if self._tasks:
                    await self._store.renew_leases(self.worker_id, list(self._tasks), now() + settings.lease_s)
                await self._recover_expired_leases()
                if now() - last_sweep >= settings.sweep_interval_s:
                    last_sweep = now()
                    swept = await self._store.sweep_runs(now() - settings.retention_s)
                    forgotten = await self._store.forget_idle_sessions(now() - settings.session_ttl_s)
                    if swept or forgotten:
                        log.info("swept %d expired runs, forgot %d idle sessions", swept, forgotten)
            except Exception:
                log.exception("maintenance pass failed; retrying")
            await asyncio.sleep(tick)


def _jsonable(output: Any) -> Any:
    """The pipeline's return value as JSON data (pydantic models are dumped)."""
    if isinstance(output, BaseModel):
        return output.model_dump(mode="json")
    try:
        orjson.dumps(output)
    except TypeError as exc:
        raise TypeError(f"the pipeline returned a value that is not JSON: {exc}") from None
    return output
