"""The run's life: claim, execution, timeout, cancellation, leases, recovery of
orphaned runs, drain on shutdown.

The store is the queue. A worker (any process whose role executes runs) claims
ready runs from it when woken (a run was queued here or elsewhere, a slot came
free) and every ``POLL_S`` in case a wake-up was lost; the store's ``claim``
applies the ordering rules (a session's runs one at a time, in order; owners
served fairly) across every worker of the deployment.

A claimed run is held under a lease, renewed by the maintenance loop, and every
write of its execution is fenced with (worker, attempt): once the run has been
recovered by another worker, a stalled holder can write nothing more, and it
stops the pipeline as soon as it learns of it (a fenced write refused, or a
renewal that finds the run gone). Every status change is a conditional append
(status event + row update in one transaction), so a run can never end twice.

The engine's own bookkeeping is only changed on the event loop, between awaits:
it needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Mapping

from runyard.broker.base import CANCEL, WAKE, Broker, WakeQueue
from runyard.engine.endings import Endings
from runyard.engine.execution import Execution, Supervisor
from runyard.engine.housekeeping import Housekeeper
from runyard.engine.timers import Timers
from runyard.events.log import EventLog
from runyard.governance.limit import LimitRegistry
from runyard.longterm import LongTerm
from runyard.models import Fence, Run, RunStatus, StatusConflict, now
from runyard.observability import metrics
from runyard.observability.logs import log_run
from runyard.outcome import Outcome
from runyard.pipeline import Pipeline
from runyard.resources import Resources
from runyard.settings import Settings
from runyard.store.base import Claimed, WorkerStore

log = logging.getLogger("runyard.engine")

NOT_STARTED = frozenset({RunStatus.QUEUED, RunStatus.WAITING})  # cancelled in the store, no worker to tell
POLL_S = 1.0  # a worker looks for queued runs at least this often, wake-ups or not
CLAIM_RETRY_S = 1.0  # after a failed claim (the store is down)
# Capped claims under way at once (bench/README.md, "A thirteenth round"): one
# claim of 32 per writer batch, not one every other batch while runs queue up.
CLAIMS_IN_FLIGHT = 2
# A round of claims that took this many runs says runs arrive faster than a
# worker claims them: it lets more gather (the store's ``claim_gather_s``).
GATHER_FROM = 32
# A worker with a free slot waits this long at most for a wake-up given to one
# worker (``Broker.wakes``) before it waits again; the poll above goes on meanwhile.
TAKE_WAKE_S = 5.0
CANCEL_MEMO_S = 10.0  # a cancel signal for a run not (yet) here is remembered this long
# A worker counts as live (serving its pipelines, for /readyz) while seen within
# this many leases: it refreshes its record every maintenance tick (lease / 3 at most)
WORKER_LIVE_LEASES = 3


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Engine:
    """Claims and executes runs, at most ``max_concurrent_runs`` at a time, when
    this process's role executes runs; cancels runs in every role."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, Pipeline],
        limits: LimitRegistry,
        resources: Resources,
        store: WorkerStore,
        broker: Broker,
        longterm: LongTerm | None = None,
    ) -> None:
        self._settings = settings
        self._pipelines = pipelines
        self._store = store
        # The engine's runs write through this log, and a write it refuses for a
        # stale fence stops the run here at once: built here, with that callback.
        self.events = self._events = EventLog(store, broker, on_lease_lost=self._fence_refused)
        self._broker = broker
        self._wakes = broker.wakes  # where wake-ups go to one worker at a time, if the broker has one
        self.worker_id = new_worker_id()
        self._running: dict[str, Execution] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every execution's bookkeeping task
        self._cancel_memo: dict[str, float] = {}  # run id -> when a cancel signal came for it
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()  # set when a run here ends: a slot is free
        self._draining = False
        self._claimer: asyncio.Task[None] | None = None
        self._taker: asyncio.Task[None] | None = None  # takes wake-ups given to one worker, while a slot is free
        self._renewer: asyncio.Task[None] | None = None  # runs until the last run here is finished or handed back
        self._housekeeper: asyncio.Task[None] | None = None  # recovery of others' runs and sweeps: stops first
        self._timer: asyncio.Task[None] | None = None  # ends due sleeps and unanswered questions
        self._endings = Endings(store, self._events, broker)
        self._supervisor = Supervisor(
            settings,
            pipelines,
            limits,
            resources,
            store,
            self._events,
            lease_lost=self._lease_lost,
            hand_back=self._endings.hand_back,
            longterm=longterm,
        )
        self._housekeeping = Housekeeper(
            settings,
            store,
            running=self._running,
            hand_back=lambda run, expired_by: self._endings.recover(run, lease_expired_by=expired_by),
            on_tick=self._forget_old_cancels,
        )
        self._timers = Timers(store, self._events, released=lambda: self._broker.signal(WAKE))

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start claiming (queued runs a previous process left are claimed at once)."""
        if not self._settings.executes_runs:
            return
        await self._store.worker_seen(self.worker_id, self.pipelines, now())
        self._claimer = asyncio.create_task(self._claim_forever(), name="runyard-claimer")
        if self._wakes is not None:
            self._taker = asyncio.create_task(self._take_wakes_forever(self._wakes), name="runyard-wake-taker")
        self._renewer = asyncio.create_task(self._renew_forever(), name="runyard-lease-renewer")
        self._housekeeper = asyncio.create_task(self._housekeeping.run(), name="runyard-housekeeper")
        self._timer = asyncio.create_task(self._timers.run(), name="runyard-timers")
        self.wake()

    async def stop(self) -> None:
        """Stop claiming, let running runs finish for up to ``drain_s``, then stop
        the rest and hand them back per the lost-worker policy (a pipeline that
        ignores its cancellation is waited for ``cancel_grace_s`` at most):
        nothing is left running. Leases are renewed until the last run here is
        finished or handed back, so a drain longer than a lease never lets
        another worker execute a run this one still executes."""
        self._draining = True
        self.wake()
        await _cancel(self._taker)
        if self._claimer is not None:
            await self._claimer  # ends after its current claim: a claimed run is never dropped
            await self._leave()  # a draining worker claims nothing: its pipelines may have no worker now
        await _cancel(self._housekeeper)
        await _cancel(self._housekeeping.sweeper)
        await _cancel(self._timer)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._settings.drain_s)
            for execution in self._running.values():
                execution.stop()  # handed back by _supervise
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await _cancel(self._renewer)
        if self._supervisor.abandoned:
            log.error(
                "%d pipelines ignored their cancellation; their runs were recorded and their writes are refused",
                len(self._supervisor.abandoned),
            )

    async def _leave(self) -> None:
        try:
            await self._store.forget_worker(self.worker_id)
        except Exception:  # the record goes stale by itself after WORKER_LIVE_LEASES leases
            log.warning("could not remove worker %s from the store", self.worker_id, exc_info=True)

    @property
    def pipelines(self) -> list[str]:
        """The pipelines this process serves: the only runs it claims."""
        return list(self._pipelines)

    @property
    def active(self) -> int:
        """Runs executing in this process."""
        return len(self._running)

    # -- signals ---------------------------------------------------------------

    def wake(self) -> None:
        """Look for ready runs now."""
        self._wakeup.set()

    async def _take_wakes_forever(self, wakes: WakeQueue) -> None:
        """While a slot is free, wait for a wake-up given to one worker for a
        pipeline served here; taken, it is this worker's to claim for."""
        while not self._draining:
            if len(self._running) >= self._settings.max_concurrent_runs:
                self._room.clear()
                await self._room.wait()
            elif await wakes.take(self.pipelines, TAKE_WAKE_S):
                self.wake()

    def on_signal(self, kind: str, run_id: str) -> None:
        """A broker signal, from this process or another."""
        if kind == WAKE:
            self.wake()
        elif kind == CANCEL:
            self._cancel_here(run_id)

    def _cancel_here(self, run_id: str) -> None:
        execution = self._running.get(run_id)
        if execution is None:
            # not here, or claimed here a moment ago and its claim not yet seen
            self._cancel_memo[run_id] = now()
            return
        execution.cancel_requested = True
        execution.stop()

    def _fence_refused(self, run_id: str, fence: Fence) -> None:
        execution = self._running.get(run_id)
        if execution is not None and execution.fence == fence:  # not a write of an earlier, abandoned attempt
            self._lease_lost(run_id)

    def _lease_lost(self, run_id: str) -> None:
        execution = self._running.get(run_id)
        if execution is not None and not execution.lost:
            if execution.cancel_requested:  # cancelled in the store (an interrupt, a deleted session)
                log.info("run %s: cancelled; stopping it here", run_id)
            else:
                log.warning("run %s: lease lost (recovered elsewhere); stopping it here", run_id)
            execution.lost = True
            execution.stop()

    # -- cancellation (any role) -----------------------------------------------

    async def cancel(self, run: Run) -> None:
        """Cancel a queued or waiting run here, in the store; ask the worker of a
        running one to stop it (a broker signal, and a flag it reads when renewing
        its lease). A finished run is left as it is."""
        try:
            await self._endings.finish(run, Outcome.cancelled(), expect=NOT_STARTED)
        except StatusConflict as conflict:
            if conflict.actual is RunStatus.RUNNING:
                await self._store.request_cancel(run.run_id)
                await self._broker.signal(CANCEL, run.run_id)
            return
        await self._broker.signal(WAKE)  # the session's next run may be ready

    # -- claiming --------------------------------------------------------------

    async def _claim_forever(self) -> None:
        while not self._draining:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                if await self._claim_ready() >= GATHER_FROM and self._store.claim_gather_s:
                    await asyncio.sleep(self._store.claim_gather_s)
            except Exception:
                log.exception("claiming runs failed; retrying")
                await asyncio.sleep(CLAIM_RETRY_S)

    async def _claim_ready(self) -> int:
        """Claim until a claim comes back short of what it asked (nothing more is
        ready) or no slot is free; how many runs were taken. Claims capped by the
        store (``claim_at_most``) go ``CLAIMS_IN_FLIGHT`` at a time, so that the next
        one waits in the writer's queue while the last is written, not for its answer."""
        asking: dict[asyncio.Future[list[Claimed]], int] = {}  # claims under way, what each asked for
        taken = 0
        short = False
        full = False  # the last claim answered took all it asked for: more may be ready
        try:
            while True:
                while not (short or self._draining) and len(asking) < CLAIMS_IN_FLIGHT:
                    free = self._settings.max_concurrent_runs - len(self._running) - sum(asking.values())
                    if free <= 0:
                        break
                    at, asked = now(), self._claim_size(free)
                    claim = self._store.claim(
                        self.worker_id, asked, at, at + self._settings.lease_s, pipelines=self.pipelines
                    )
                    asking[asyncio.ensure_future(claim)] = asked
                if not asking:
                    if full and not (short or self._draining) and self._wakes is not None:
                        # out of slots with runs still ready: another worker's turn
                        await self._wakes.put(self.pipelines)
                    return taken
                done, _ = await asyncio.wait(asking, return_when=asyncio.FIRST_COMPLETED)
                for answered in done:
                    asked = asking.pop(answered)
                    claimed = answered.result()
                    metrics.CLAIMS_TOTAL.labels("took" if claimed else "empty").inc()
                    full = len(claimed) == asked
                    short = short or not full
                    taken += len(claimed)
                    await self._started(claimed)
        finally:
            # a failed claim (or a cancelled loop) leaves none it made unstarted
            for answered in asyncio.as_completed(asking):
                with contextlib.suppress(Exception):
                    await self._started(await answered)

    async def _started(self, claimed: list[Claimed]) -> None:
        for item in claimed:
            self._start(item)
        if claimed:
            await self._events.publish([item.event for item in claimed])

    def _claim_size(self, free: int) -> int:
        """How many runs the next claim asks for: every free slot, or, while runs
        run here, at most the store's ``claim_at_most`` (their appends wait for a
        claim's write), more claims following while they come back full. With
        nothing running one claim takes all: a burst of runs started in claims of
        32 ran with twice the latency (``bench/README.md``, "A ninth round")."""
        most = self._store.claim_at_most
        return free if most is None or not self._running else min(free, most)

    def _start(self, claimed: Claimed) -> None:
        run = claimed.run
        execution = Execution(run, Fence(self.worker_id, run.attempt))
        stale = self._running.get(run.run_id)
        if stale is not None:  # an earlier attempt of ours whose lease was lost while the loop stalled
            self._lease_lost(run.run_id)
        if claimed.cancel_requested or self._cancel_memo.pop(run.run_id, None) is not None:
            execution.cancel_requested = True
        self._running[run.run_id] = execution
        log_run("started", run, worker_id=self.worker_id)
        task = asyncio.create_task(self._execute(execution, stale), name=f"run-{run.run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- execution -------------------------------------------------------------

    async def _execute(self, execution: Execution, stale: Execution | None) -> None:
        """Drive one claimed run to its end. Only the pipeline's own code runs in a
        task that cancellation and drain reach; this bookkeeping never is
        cancelled half-way through a write."""
        run = execution.run
        try:
            if stale is not None and stale.work is not None:
                await asyncio.gather(stale.work, return_exceptions=True)
            metrics.RUNS_ACTIVE.labels(run.pipeline).inc()
            started = now()
            try:
                outcome = await self._supervisor.supervise(execution)
            finally:
                metrics.RUNS_ACTIVE.labels(run.pipeline).dec()
                metrics.RUN_DURATION.labels(run.pipeline).observe(now() - started)
            if outcome is not None:
                await self._endings.end(execution, outcome)
        except Exception:
            log.exception("run %s could not be driven to its end", run.run_id)
        finally:
            if self._running.get(run.run_id) is execution:
                del self._running[run.run_id]
            self._room.set()
            if self._wakes is None:
                self.wake()  # a slot is free, and the session's next run may be ready
            else:
                # The session's next run may be ready: a wake-up for the worker
                # waiting longest. This one claiming it at once gave a worker
                # with more runs ending more new runs, and two workers of the
                # same runs 1 : 2 (bench/README.md, "A twentieth round").
                self._wakes.ask(None)

    async def _renew_leases(self) -> None:
        if not self._running:
            return
        renewal = await self._store.renew_leases(self.worker_id, list(self._running), now() + self._settings.lease_s)
        for run_id in renewal.lost:
            execution = self._running.get(run_id)
            if execution is not None and execution.work is not None:
                self._lease_lost(run_id)
        for run_id in renewal.cancel:
            self._cancel_here(run_id)

    async def _renew_forever(self) -> None:
        """Renew this worker's leases every third of a lease (at least every 5 s):
        two renewals may fail before one is lost. Draining included."""
        tick = min(self._settings.lease_s / 3, 5.0)
        while True:
            try:
                if not self._draining:
                    await self._store.worker_seen(self.worker_id, self.pipelines, now())
                await self._renew_leases()
            except Exception:
                log.exception("renewing leases failed; retrying")
            await asyncio.sleep(tick)

    def _forget_old_cancels(self) -> None:
        cutoff = now() - CANCEL_MEMO_S
        for run_id in [run_id for run_id, at in self._cancel_memo.items() if at < cutoff]:
            del self._cancel_memo[run_id]


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
