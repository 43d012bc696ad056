"""Appending events: persist, then publish, with group commit.

Appends from every run of the process go to one writer task. The writer takes
everything pending, writes it in one store transaction, then publishes it and
wakes the appenders. Under light load a batch is a single event and waits for
nothing but its own commit; under heavy load, appends that arrive during a
commit (or in the loop turn after the last one) share the next, so throughput
grows with concurrency.

A group carrying a run's update (its end, or its hand-back) is written in a
later transaction than the run's earlier events, so that their fate is known
first: a run some of whose events could not be persisted for good never ends
``succeeded`` (``EventsLost``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from runyard.broker.base import Broker
from runyard.errors import StoreUnavailable
from runyard.models import (
    Event,
    EventDraft,
    Fence,
    LeaseLost,
    RunStatus,
    RunUpdate,
    StatusConflict,
    StepRecord,
    dumps,
    now,
)
from runyard.observability import metrics
from runyard.retrying import Backoff
from runyard.store.base import AppendGroup, AppendResult, EventStore

log = logging.getLogger("runyard.events")

MAX_BATCH = 4096  # groups per transaction: bounds a single commit's latency
# Under sustained load (the previous batch ended less than BUSY_S ago) the writer
# lets the appends of one more loop turn join the batch before it writes. It
# used to wait 2 ms (server CPU -13 % when each live event woke its stream's
# task); since live events are written at their delivery (events/stream.py,
# Writer) the wait saved no CPU and held every run's first events back during
# a ramp (bench/streams.py steady, 6 rounds alternated: first event p50 791 ->
# 648 ms, p99 over all ticks 256 -> 194 ms, CPU per event 70.4 -> 71.1 µs). An
# event after a quiet spell is written at once, and so is one when the last
# batches held fewer than GATHER_RUNS runs: a lone run awaiting each write in
# turn (a pipeline's durable steps) gains nothing from waiting.
BUSY_S = 0.010
GATHER_RUNS = 4

IN_FLIGHT = 64  # events one run may have queued but not yet committed...
# ...and all runs together, before the writer takes them. Without it 100 runs
# emitting as fast as they can queued 6,400 events (a third of a second of
# writing) ahead of every new one; with it, in bench/streams.py's burst, median
# latency 204-253 -> 34-91 ms and peak RSS 150 -> 106 MiB at the same events/s
# and CPU per event (3 rounds alternated). A lone run still fills 64-event batches.
# Under saturation an event waits behind about this many (Little's law): 1,024
# held the burst's p99 at 3.5-3.8x the ceiling's; 768 at 1.7-2.8x in five pairs,
# for 2 % fewer events/s (still 1.12-1.33x the ceiling's); 512 cost 15 % of them.
QUEUED = 768
# A store that loses its connection (a PostgreSQL restart) is waited for this
# long, retrying after 50 ms, doubling up to 1 s, before batches fail.
RIDE_OUT_S = 60.0
RETRY = Backoff(first_s=0.05, max_s=1.0, spread=(1.0, 1.0))  # one writer per process: nothing to jitter

EVENTS_LOST = "events_lost"


class EventsLost(Exception):
    """Events of a run could not be persisted for good: the run must not end
    ``succeeded``. ``code`` is the failure code the run ends with: the cause's
    ``run_error_code`` when the store gave its refusal one (a per-run cap's
    ``too_large``), else ``events_lost``."""

    def __init__(self, run_id: str, count: int, types: Counter[str], cause: BaseException) -> None:
        listed = ", ".join(f"{type} x{n}" for type, n in types.most_common())
        super().__init__(f"{count} events of run {run_id} could not be stored ({listed}): {cause}")
        self.run_id = run_id
        self.count = count
        self.types = Counter(types)  # as of this error: the run's loss may grow
        code = getattr(cause, "run_error_code", None)
        self.code = code if isinstance(code, str) else EVENTS_LOST


@dataclass(slots=True)
class _Loss:
    """What a run lost so far, until its attempt ends."""

    count: int = 0
    types: Counter[str] = field(default_factory=Counter)
    error: EventsLost | None = None


def _surely_lost(failure: BaseException) -> bool:
    """Whether a failed group's events are lost for good: not when they were
    refused on purpose (a condition, a fence), nor when the commit may have
    happened (the run's log then likely holds them)."""
    in_doubt = isinstance(failure, StoreUnavailable) and failure.in_doubt
    return not (in_doubt or isinstance(failure, StatusConflict))


_Done = asyncio.Future[list[Event]]
_Pending = tuple[AppendGroup, _Done | None]  # no future when nobody waits for the commit


class EventLog:
    """The only way events enter the store; each is published after its commit."""

    def __init__(
        self, store: EventStore, broker: Broker, on_lease_lost: Callable[[str, Fence], None] | None = None
    ) -> None:
        self._store = store
        self._broker = broker
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight: dict[str, int] = {}  # run id -> its events queued, not yet committed
        self._failed: dict[str, BaseException] = {}  # run id -> why its unawaited events were refused
        self._lost: dict[str, _Loss] = {}  # run id -> its events that could not be stored, until its attempt ends
        self._pending_updates = 0  # groups carrying an update in _pending
        self._on_lease_lost = on_lease_lost  # told of every write refused by its fence: (run id, fence)
        self._outage_since: float | None = None  # when the store became unavailable, while it is
        self._outage_retries = 0

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_forever(), name="runyard-event-writer")

    async def stop(self) -> None:
        """Write what is pending, then stop the writer."""
        writer = self._writer
        if writer is None:
            return
        self._closing = True
        self._wakeup.set()
        await writer
        self._writer = None

    async def append(
        self, run_id: str, type: str, data: Any, fence: Fence | None = None, pos: int | None = None
    ) -> None:
        """Queue one event for persistence; it is published only once persisted.
        ``pos``: its replay position + 1, for an event a pipeline emitted
        (``EventDraft.pos``).

        A run may have up to ``IN_FLIGHT`` events not yet committed, and all
        runs ``QUEUED`` not yet taken by the writer; the next append then waits
        for its commit, which bounds memory and latency and lets one fast
        pipeline fill whole batches instead of paying a commit per event. A
        failure to persist surfaces at the run's next append (or its end):
        ``EventsLost``, then at every later append of the attempt.
        """
        failure = self._failed.pop(run_id, None)
        if failure is not None:
            raise failure
        if self._lost:
            self._raise_if_lost(run_id)
        # Most appends are not awaited: they get no future at all (one per event
        # was a measurable share of the hot path).
        wait = self._in_flight.get(run_id, 0) >= IN_FLIGHT or len(self._pending) >= QUEUED
        done = self._enqueue(run_id, [(type, data)], None, fence, wait, pos=pos)
        if done is not None:
            await done

    async def append_group(
        self,
        run_id: str,
        items: list[tuple[str, Any]],
        update: RunUpdate | None = None,
        fence: Fence | None = None,
        *,
        step: StepRecord | None = None,
        pos: int | None = None,
    ) -> list[Event]:
        """Persist events of one run atomically with ``update`` (and ``step``'s
        record), after every event the run queued before; ``StatusConflict`` if
        the update's expectation (or ``LeaseLost`` if the fence) does not hold:
        then nothing of this group is written. ``pos`` goes to the group's last
        event (a step's ``restarted`` marker: ``EventDraft.pos``).
        An update to ``succeeded`` of a run that lost events is refused with
        ``EventsLost``; any other update ends the attempt and forgets the loss."""
        failure = self._failed.pop(run_id, None)
        if update is None:
            if failure is not None:
                raise failure
            self._raise_if_lost(run_id)
        done = self._enqueue(run_id, items, update, fence, wait=True, step=step, pos=pos)
        assert done is not None
        return await done

    async def publish(self, events: list[Event]) -> None:
        """Publish persisted events (also those a claim wrote)."""
        metrics.count_events(events)
        try:
            await self._broker.publish(events)
        except Exception:
            # Persisted events are safe; subscribers find them in the store.
            log.exception("publishing %d events failed", len(events))

    def _enqueue(
        self,
        run_id: str,
        items: list[tuple[str, Any]],
        update: RunUpdate | None,
        fence: Fence | None,
        wait: bool,
        *,
        step: StepRecord | None = None,
        pos: int | None = None,
    ) -> _Done | None:
        if self._writer is None or self._writer.done() or self._closing:
            raise RuntimeError("the event log is not running")
        ts = now()
        drafts = [EventDraft(run_id, type, dumps(data), ts) for type, data in items]
        if pos is not None:
            drafts[-1].pos = pos
        done: _Done | None = asyncio.get_running_loop().create_future() if wait else None
        self._pending.append((AppendGroup(run_id, drafts, update, fence, step), done))
        if update is not None:
            self._pending_updates += 1
        self._in_flight[run_id] = self._in_flight.get(run_id, 0) + 1
        self._wakeup.set()
        return done

    async def _write_forever(self) -> None:
        last_batch_end = 0.0
        runs_written = 0  # the most runs one batch of the last round held
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            busy = time.monotonic() - last_batch_end < BUSY_S and runs_written >= GATHER_RUNS
            if busy and not self._closing:
                await asyncio.sleep(0)
            runs_written = 0
            while self._pending:
                runs_written = max(runs_written, await self._write_batch())
            last_batch_end = time.monotonic()
            if self._closing:
                return

    def _raise_if_lost(self, run_id: str) -> None:
        loss = self._lost.get(run_id)
        if loss is not None and loss.error is not None:
            raise loss.error

    def _take_batch(self) -> list[_Pending]:
        """The next groups to write, in order, up to MAX_BATCH; a group carrying
        an update waits for the next batch (with its run's later groups) when
        its run has events earlier in this one, so that their fate is known
        before the run's status changes. It costs a run's end one more commit
        at most, once per run."""
        head, rest = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if not self._pending_updates:
            self._pending = rest
            return head
        batch: list[_Pending] = []
        later: list[_Pending] = []
        seen: set[str] = set()
        held: set[str] = set()
        for item in head:
            group = item[0]
            if group.run_id in held or (group.update is not None and group.run_id in seen):
                held.add(group.run_id)
                later.append(item)
            else:
                seen.add(group.run_id)
                batch.append(item)
                self._pending_updates -= group.update is not None
        self._pending = later + rest
        return batch

    def _refuse_success_after_loss(self, batch: list[_Pending]) -> list[_Pending]:
        """The batch without updates to ``succeeded`` of runs that lost events
        (each refused with ``EventsLost``); any other update of such a run ends
        its attempt, and the loss is forgotten."""
        kept: list[_Pending] = []
        for group, done in batch:
            loss = self._lost.get(group.run_id) if group.update is not None else None
            if loss is None or loss.error is None:
                kept.append((group, done))
                continue
            del self._lost[group.run_id]
            if group.update is not None and group.update.status is RunStatus.SUCCEEDED:
                self._settle(group.run_id)
                if done is not None and not done.done():
                    done.set_exception(loss.error)
                continue
            kept.append((group, done))
        return kept

    async def _write_batch(self) -> int:
        """Write the next batch; how many runs it held."""
        batch = self._take_batch()
        if self._lost:
            batch = self._refuse_success_after_loss(batch)
            if not batch:
                return 0
        runs = len({group.run_id for group, _ in batch})
        started = time.perf_counter()
        try:
            results: Sequence[AppendResult | Exception] = await self._store.append([group for group, _ in batch])
        except StoreUnavailable as exc:
            if not exc.in_doubt and self._ride_out(exc):
                self._pending[:0] = batch  # nothing was written: the same batch, first, once the store is back
                self._pending_updates += sum(group.update is not None for group, _ in batch)
                await asyncio.sleep(RETRY.delay(self._outage_retries))
                return runs
            log.exception("event batch of %d groups could not be persisted", len(batch))
            results = [exc] * len(batch)
        except Exception as exc:
            log.exception("event batch of %d groups could not be persisted", len(batch))
            results = [exc] * len(batch)
        else:
            metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - started)
            if self._outage_since is not None:
                log.warning("the store answers again after %.1fs", time.monotonic() - self._outage_since)
                self._outage_since, self._outage_retries = None, 0
        published: list[Event] = []
        losses: dict[str, BaseException] = {}
        for (group, done), result in zip(batch, results, strict=True):
            self._settle(group.run_id)
            if isinstance(result, BaseException):
                if isinstance(result, LeaseLost):
                    self._lost.pop(group.run_id, None)  # the run is another attempt's now
                    if self._on_lease_lost is not None and group.fence is not None:
                        self._on_lease_lost(group.run_id, group.fence)
                elif group.update is None and _surely_lost(result):
                    losses.setdefault(group.run_id, result)
                    result = self._record_loss(group, result)
                if done is None:
                    self._failed[group.run_id] = result  # raised at the run's next append
                elif not done.done():
                    done.set_exception(result)
                continue
            published.extend(result)
            if done is not None and not done.done():
                done.set_result(result)
        for run_id, cause in losses.items():
            loss = self._lost[run_id]
            log.error(
                "run %s: %d events could not be stored (%s); it cannot end succeeded",
                run_id,
                loss.count,
                ", ".join(loss.types),
                extra={"run_id": run_id, "lost_events": loss.count, "lost_types": dict(loss.types)},
                exc_info=cause,
            )
        if published:
            await self.publish(published)
        return runs

    def _record_loss(self, group: AppendGroup, cause: BaseException) -> EventsLost:
        """Count ``group``'s events as lost for good; the error its run now gets."""
        loss = self._lost.setdefault(group.run_id, _Loss())
        loss.count += len(group.drafts)
        loss.types.update(draft.type for draft in group.drafts)
        loss.error = EventsLost(group.run_id, loss.count, loss.types, cause)
        return loss.error

    def _ride_out(self, exc: StoreUnavailable) -> bool:
        """Whether to wait for the store rather than fail the batch: yes for up to
        RIDE_OUT_S of an outage (a restart), so that runs carry on with no event
        lost; their appenders wait meanwhile, at most IN_FLIGHT events each."""
        if self._outage_since is None:
            log.warning("the store is unavailable (%s); holding events for up to %gs", exc, RIDE_OUT_S)
            self._outage_since = time.monotonic()
        self._outage_retries += 1
        return time.monotonic() - self._outage_since < RIDE_OUT_S

    def _settle(self, run_id: str) -> None:
        left = self._in_flight[run_id] - 1
        if left:
            self._in_flight[run_id] = left
        else:
            del self._in_flight[run_id]
