"""Durable execution of one run: steps recorded once, replays that append
nothing twice, and runs that wait (for an answer, for a time) without a worker.

An execution runs the pipeline from its start, every time: after a worker was
lost, after a drain handed the run back, after an answer or a sleep. What makes
that cheap and exact is the journal of the run, in the store:

- every ``ctx.step(name, fn)`` that completed is recorded with its JSON result
  under ``(name, n)`` (``n`` counts that name's steps in the run, from 1), in the
  same write as its ``step`` event; a later execution gets the recorded result
  without calling ``fn``;
- every event the pipeline emits has a **position**: its index in the sequence
  of events the pipeline emits, counted from its start. A recorded step being
  replayed emits nothing, so its record keeps the position right after it, and
  the replay jumps there. Each stored pipeline event carries its position + 1
  (``EventDraft.pos``), so the last one in the log, the **mark**, tells a new
  execution how far the log already goes: an event at a position below the mark
  was stored by an earlier execution and is skipped, one at or past it is new.

A pipeline that is deterministic outside its steps therefore leaves every
event once, whatever the number of executions. The one exception is a step cut
off mid-way (its worker died while ``fn`` ran, or it raised): it is not
recorded, yet the mark lies past its start, since a step's first event is its
own ``step`` ``started`` (a positioned event, stored like the pipeline's). Its
events stay in the log; the journal appends a ``step`` ``restarted`` marker
that lowers the mark to the step's start, and from there appends everything
anew.

``ctx.ask`` and ``ctx.sleep`` are steps too (named ``:ask`` and ``:sleep``): the
first time, they write the run's ``waiting`` state and unwind the pipeline
(``Suspended``); the answer (``POST /v1/runs/{id}/input``) or the end of the
sleep queues the run again, and the replay returns the recorded value at once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel

from runyard.events.log import EventLog
from runyard.models import ASK, SLEEP, Fence, Run, RunStatus, RunUpdate, StepRecord, Wait, new_id, now, rfc3339
from runyard.observability.tracing import TRACED_EVENTS, RunSpan, step_span
from runyard.servable import check_depth
from runyard.store.journal import Replay
from runyard.validation import json_schema_of

RUNNING = frozenset({RunStatus.RUNNING})
MAX_STEP_NAME = 128


class Suspended(BaseException):
    """Unwinds a pipeline whose run now waits (``ctx.ask``, ``ctx.sleep``): the
    wait is stored, the execution ends without writing anything more. A
    ``BaseException``, so that a pipeline's ``except Exception`` lets it pass."""

    def __init__(self, wait: Wait) -> None:
        super().__init__(f"the run waits ({wait.kind} {wait.id})")
        self.wait = wait


class StepResultNotJSON(TypeError):
    """A step's ``fn`` returned a value that is not JSON: nothing is recorded."""


class RunJournal:
    """One execution's view of its run's journal: the recorded steps, the mark,
    and the position the pipeline has reached. Used by the run's ``RunContext``
    only, from the run's own task."""

    def __init__(
        self,
        run: Run,
        log: EventLog,
        replay: Replay,
        fence: Fence | None,
        started: float,
        traced: RunSpan | None = None,
    ) -> None:
        self._run_id = run.run_id
        self._traced = traced  # this execution's span (None: tracing is off)
        self._log = log
        self._fence = fence
        self._steps = replay.steps
        self._mark = replay.mark
        self._position = 0
        self._counts: Counter[str] = Counter()
        self._executed_before = run.executed_s
        self._began = started

    @property
    def replaying(self) -> bool:
        """Whether the pipeline is still where an earlier execution already went."""
        return self._position < self._mark

    def executed_s(self) -> float:
        """The run's executing time, this execution's so far included."""
        return self._executed_before + max(now() - self._began, 0.0)

    # -- events ----------------------------------------------------------------

    async def emit(self, type: str, data: Any) -> None:
        """Append a pipeline's event, unless an earlier execution stored it."""
        position = self._position
        self._position = position + 1
        if position < self._mark:
            return
        if self._traced is not None and type in TRACED_EVENTS:  # new events only: a replay's were counted
            self._traced.event(type, data)
        await self._log.append(self._run_id, type, data, self._fence, pos=position + 1)

    # -- steps -----------------------------------------------------------------

    async def step(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``fn(*args, **kwargs)``'s JSON result, recorded once; the record's on replay."""
        _check_step_name(name)
        n = self._next(name)
        recorded = self._steps.get((name, n))
        if recorded is not None:
            with step_span(name, n, replayed=True):  # in the trace all the same, taking no time
                self._position = recorded.pos
                return recorded.value()
        with step_span(name, n, replayed=False):
            return await self._call_step(name, n, fn, args, kwargs)

    async def _call_step(
        self, name: str, n: int, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._position < self._mark:
            await self._restart(name, n)
        await self._started(name, n)
        result = await _call(fn, args, kwargs)
        encoded = _encode(name, n, result)
        record = StepRecord(name, n, encoded, self._position, now())
        event = {"name": name, "n": n, "status": "done"}
        await self._log.append_group(self._run_id, [("step", event)], fence=self._fence, step=record)
        self._steps[(name, n)] = record
        return orjson.loads(encoded)  # what a replay returns: the same value, every time

    async def _started(self, name: str, n: int) -> None:
        """The step's ``started`` event, a positioned one (past the mark, after any
        restart), stored before ``fn`` is called: should its worker die during the
        call, the next execution finds the mark past the step and marks it
        restarted. Awaited, so that the write's transaction is over before ``fn``
        begins: a worker stalled in ``fn`` (a GC pause, SIGSTOP) then holds no row
        lock that the run's recovery by another worker would wait for."""
        self._position += 1
        event = {"name": name, "n": n, "status": "started"}
        await self._log.append_group(self._run_id, [("step", event)], fence=self._fence, pos=self._position)

    async def _restart(self, name: str, n: int) -> None:
        """An earlier execution started this step and did not record it: its
        events stay, a marker follows them, and everything from here is new."""
        event = {"name": name, "n": n, "status": "restarted"}
        await self._log.append_group(self._run_id, [("step", event)], fence=self._fence, pos=self._position)
        self._mark = self._position

    def _next(self, name: str) -> int:
        self._counts[name] += 1
        return self._counts[name]

    # -- waiting ---------------------------------------------------------------

    async def ask(self, request: Any, schema: type[BaseModel] | dict[str, Any] | None, timeout_s: float | None) -> Any:
        """The answer to ``request``: recorded (a replay), or asked now (``Suspended``)."""
        n = self._next(f":{ASK}")
        recorded = self._steps.get((f":{ASK}", n))
        if recorded is not None:
            self._position = recorded.pos
            value = recorded.value()
            return schema.model_validate(value) if isinstance(schema, type) else value
        check_depth(request, "an ask's request")
        _check_json(request, "an ask's request")
        if timeout_s is not None and not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"an ask's timeout_s must be a positive number of seconds, not {timeout_s!r}")
        json_schema = json_schema_of(schema) if schema is not None else None
        until = now() + timeout_s if timeout_s is not None else None
        wait = Wait(ASK, new_id("ask"), n, self._position, request, json_schema, until)
        requested = {"ask_id": wait.id, "request": request, "schema": json_schema}
        await self._suspend(wait, [("input.requested", requested), ("status", {"status": "waiting"})])

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed since this sleep first began,
        waiting without a worker (``Suspended``) until then."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"ctx.sleep needs a non-negative number of seconds, not {seconds!r}")
        n = self._next(f":{SLEEP}")
        recorded = self._steps.get((f":{SLEEP}", n))
        step: StepRecord | None = None
        if recorded is not None:
            self._position = recorded.pos
            until = float(recorded.value()["until"])
            if now() >= until:
                return
        elif seconds == 0:
            return  # nothing to wait for: no record, no wait, the same on every execution
        else:
            until = now() + seconds
            step = StepRecord(f":{SLEEP}", n, orjson.dumps({"until": until}), self._position, now())
        wait = Wait(SLEEP, new_id("sleep"), n, self._position, until=until)
        await self._suspend(wait, [("status", {"status": "waiting", "until": rfc3339(until)})], step)

    async def _suspend(self, wait: Wait, items: list[tuple[str, Any]], step: StepRecord | None = None) -> None:
        """Store the wait (the run leaves its worker), then unwind the pipeline."""
        update = RunUpdate(
            status=RunStatus.WAITING,
            expect=RUNNING,
            waiting=wait,
            clear_lease=True,
            executed_s=self.executed_s(),
        )
        await self._log.append_group(self._run_id, items, update, fence=self._fence, step=step)
        raise Suspended(wait)


async def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Await an async ``fn``; run a sync one in a thread (it must not block the loop)."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):  # noqa: B004
        return await fn(*args, **kwargs)
    result = await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
    if inspect.isawaitable(result):  # a plain function that returned a coroutine
        return await result
    return result


def _encode(name: str, n: int, result: Any) -> bytes:
    """The step's result as JSON (a pydantic model dumped), or ``StepResultNotJSON``."""
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    try:
        check_depth(result, f"the result of step {name!r}")
        return orjson.dumps(result)
    except (TypeError, ValueError) as exc:
        raise StepResultNotJSON(f"step {name!r} (n={n}) returned a value that is not JSON: {exc}") from None


def _check_json(value: Any, what: str) -> None:
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise TypeError(f"{what} is not JSON: {exc}") from None


def _check_step_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_STEP_NAME or name.startswith(":"):
        raise ValueError(f"a step's name is 1 to {MAX_STEP_NAME} characters not starting with ':', not {name!r}")
