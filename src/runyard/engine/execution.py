"""One claimed run executing here: its pipeline in a task of its own, within its
timeout and the cancel grace, and how it ended as an ``Outcome``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from runyard.context import RunContext
from runyard.events.log import EventLog, EventsLost
from runyard.governance.limit import LimitRegistry
from runyard.journal import RunJournal, Suspended
from runyard.longterm import LongTerm
from runyard.models import Fence, LeaseLost, Run, now
from runyard.observability.logs import log_run
from runyard.observability.tracing import RunSpan, run_span
from runyard.outcome import Outcome
from runyard.pipeline import Pipeline
from runyard.resources import Resources
from runyard.servable import check_depth
from runyard.settings import Settings
from runyard.store.base import WorkerStore
from runyard.store.journal import replay_of

log = logging.getLogger("runyard.engine")


@dataclass(slots=True, eq=False)
class Execution:
    """One run executing here, in the attempt it was claimed for."""

    run: Run
    fence: Fence
    work: asyncio.Task[Outcome | None] | None = None  # the pipeline's own code, while it runs
    started: float = field(default_factory=now)  # when this execution began: its share of ``executed_s``
    cancel_requested: bool = False
    lost: bool = False  # the lease is gone (recovered elsewhere): write nothing more
    overtime: bool = False  # the pipeline outlived its timeout by the grace: it swallowed the cancellation
    stopped: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def executed_s(self) -> float:
        """The run's executing time, this execution's included."""
        return self.run.executed_s + max(now() - self.started, 0.0)

    def stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)
        if self.work is not None:
            self.work.cancel()


class Supervisor:
    """Runs a claimed run's pipeline and says how the run ended. Told by the
    engine what to do when the run's lease is lost (``lease_lost``) and how to
    hand back a run stopped by the drain (``hand_back``)."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Mapping[str, Pipeline],
        limits: LimitRegistry,
        resources: Resources,
        store: WorkerStore,
        events: EventLog,
        *,
        lease_lost: Callable[[str], None],
        hand_back: Callable[[Execution], Awaitable[None]],
        longterm: LongTerm | None = None,
    ) -> None:
        self._settings = settings
        self._pipelines = pipelines
        self._limits = limits
        self._resources = resources
        self._store = store
        self._events = events
        self._lease_lost = lease_lost
        self._hand_back = hand_back
        self._longterm = longterm  # ``ctx.store``: the app's, with its ``store_embed``
        self.abandoned: set[asyncio.Task[Outcome | None]] = set()  # pipelines that ignored their cancellation

    async def supervise(self, execution: Execution) -> Outcome | None:
        """Run the pipeline in its own task and say how the run ended; None when
        it was handed back (this process is shutting down), its lease was lost,
        or it waits (``ctx.ask``, ``ctx.sleep``: already stored)."""
        if execution.cancel_requested:
            return Outcome.cancelled()
        run = execution.run
        work = execution.work = asyncio.create_task(self._call_pipeline(execution), name=f"pipeline-{run.run_id}")
        try:
            ended = await self._outlast(execution, work)
        finally:
            execution.work = None
        if not ended:
            self._abandon(execution, work)
        if execution.lost:
            return None
        if execution.cancel_requested:
            return Outcome.cancelled()  # also when the pipeline swallowed its cancellation
        if execution.overtime:
            return Outcome.timed_out(run.timeout_s or 0)
        if not ended or work.cancelled():  # stopped by the drain
            await self._hand_back(execution)
            return None
        return work.result()

    async def _outlast(self, execution: Execution, work: asyncio.Task[Outcome | None]) -> bool:
        """Wait for the pipeline's task to end; False when it has not within
        ``cancel_grace_s`` of being stopped (or of its timeout): it swallows its
        cancellation, and waiting longer would hold the run (and a SIGTERM)
        for ever."""
        grace = self._settings.cancel_grace_s
        timeout_s = _time_left(execution.run)
        await asyncio.wait(
            (work, execution.stopped),
            timeout=None if timeout_s is None else timeout_s + grace,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if work.done():
            return True
        if not execution.stopped.done():
            execution.overtime = True  # its own timeout's cancellation was swallowed a grace ago
            return False
        await asyncio.wait((work,), timeout=grace)
        return work.done()

    def _abandon(self, execution: Execution, work: asyncio.Task[Outcome | None]) -> None:
        """Leave a pipeline that ignores its cancellation to itself: the run is
        recorded without it, and each of its later writes is refused by the
        run's fence (the run is no longer this attempt's)."""
        log.error(
            "run %s: the pipeline %s ignored its cancellation for %g s; giving up on it",
            execution.run.run_id,
            execution.run.pipeline,
            self._settings.cancel_grace_s,
        )
        work.cancel()
        self.abandoned.add(work)
        work.add_done_callback(self.abandoned.discard)

    async def _call_pipeline(self, execution: Execution) -> Outcome | None:
        # the execution's span, current in the pipeline's task: its steps and
        # limits are its children, and every worker's spans join the run's trace
        with run_span(execution.run) as traced:
            outcome = await self._pipeline_outcome(execution, traced)
            if traced is not None:
                traced.ended(outcome)
            return outcome

    async def _pipeline_outcome(self, execution: Execution, traced: RunSpan | None) -> Outcome | None:
        run = execution.run
        pipeline = self._pipelines.get(run.pipeline)
        if pipeline is None:  # defensive: the store claims only the pipelines served here
            return Outcome.failed("pipeline_not_found", f"pipeline {run.pipeline!r} is not served here")
        replay = await replay_of(self._store, run)  # in the task: cancel and drain reach a slow read
        journal = RunJournal(run, self._events, replay, execution.fence, execution.started, traced)
        ctx = RunContext(
            run,
            self._events,
            self._store,
            self._limits,
            self._settings.history_max,
            fence=execution.fence,
            resources=self._resources,
            journal=journal,
            longterm=self._longterm,
        )
        token = ctx._activate()
        deadline = asyncio.timeout(_time_left(run))
        try:
            async with deadline:
                output = await pipeline.func(ctx, pipeline.argument(run.input))
            return Outcome.succeeded(_jsonable(output))
        except Suspended as suspended:
            wait = suspended.wait
            log_run("waiting", run, kind=wait.kind, wait_id=wait.id, executed_s=round(execution.executed_s(), 3))
            if traced is not None:
                traced.waiting(wait.kind)
            return None
        except TimeoutError as exc:
            if deadline.expired():
                return Outcome.timed_out(run.timeout_s or 0)
            return self._failure(run, exc, traced)
        except LeaseLost:
            self._lease_lost(run.run_id)
            return Outcome.failed("worker_lost", "this worker lost the run's lease")  # never written: fenced
        except EventsLost as lost:
            return Outcome.failed(lost.code, str(lost))
        except Exception as exc:
            return self._failure(run, exc, traced)
        finally:
            ctx._deactivate(token)

    def _failure(self, run: Run, exc: BaseException, traced: RunSpan | None) -> Outcome:
        # The client gets the exception's type and message, never the traceback;
        # the log and the trace get everything.
        if traced is not None:
            traced.failed(exc)
        log.error("run %s of %s failed", run.run_id, run.pipeline, exc_info=exc)
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Outcome.failed("pipeline_error", message)


def _time_left(run: Run) -> float | None:
    """What is left of the run's ``timeout_s``: it counts executing time only,
    over every execution (waiting for an answer or a time does not count)."""
    if run.timeout_s is None:
        return None
    return max(run.timeout_s - run.executed_s, 0.0)


def _jsonable(output: Any) -> Any:
    """The pipeline's return value as JSON data (pydantic models are dumped) that
    can be served (``NestedTooDeep`` otherwise: the run fails ``pipeline_error``)."""
    if isinstance(output, BaseModel):
        output = output.model_dump(mode="json")
    check_depth(output, "the pipeline's output")
    try:
        orjson.dumps(output)
    except TypeError as exc:
        raise TypeError(f"the pipeline returned a value that is not JSON: {exc}") from None
    return output
