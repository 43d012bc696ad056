"""Appending events: persist, then publish, with group commit.

Appends from every run of the process go to one writer task. The writer takes
everything pending, writes it in one store transaction, then publishes it and
wakes the appenders. Under light load a batch is a single event and waits for
nothing but its own commit (no timer); under heavy load, appends that arrive
during a commit share the next one, so throughput grows with concurrency.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any

from runyard.broker.base import Broker
from runyard.models import Event, EventDraft, RunUpdate, dumps, now
from runyard.observability import metrics
from runyard.store.base import AppendGroup, AppendResult, Store

log = logging.getLogger("runyard.events")

MAX_BATCH = 4096  # groups per transaction: bounds a single commit's latency

IN_FLIGHT = 64  # events one run may have queued but not yet committed

_Done = asyncio.Future[list[Event]]
_Pending = tuple[AppendGroup, _Done]


class EventLog:
    """The only way events enter the store; each is published after its commit."""

    def __init__(self, store: Store, broker: Broker) -> None:
        self._store = store
        self._broker = broker
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight: dict[str, int] = {}  # run id -> its events queued, not yet committed
        self._failed: dict[str, BaseException] = {}  # run id -> why its unawaited events were lost

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

    async def append(self, run_id: str, type: str, data: Any) -> None:
        """Queue one event for persistence; it is published only once persisted.

        A run may have up to ``IN_FLIGHT`` events not yet committed; its next
        append then waits for the commit, which bounds memory and lets one fast
        pipeline fill whole batches instead of paying a commit per event. A
        failure to persist surfaces at the run's next append (or its end).
        """
        failure = self._failed.pop(run_id, None)
        if failure is not None:
            raise failure
        done = self._enqueue(run_id, [(type, data)], None)
        if self._in_flight.get(run_id, 0) >= IN_FLIGHT:
            await done
        else:
            done.add_done_callback(functools.partial(self._remember_failure, run_id))

    async def append_group(
        self, run_id: str, items: list[tuple[str, Any]], update: RunUpdate | None = None
    ) -> list[Event]:
        """Persist events of one run atomically with ``update``, after every event
        the run queued before; ``StatusConflict`` if the update's expectation does
        not hold (then nothing of this group is written)."""
        failure = self._failed.pop(run_id, None)
        if failure is not None and update is None:
            raise failure
        return await self._enqueue(run_id, items, update)

    def _enqueue(self, run_id: str, items: list[tuple[str, Any]], update: RunUpdate | None) -> _Done:
        if self._writer is None or self._writer.done() or self._closing:
            raise RuntimeError("the event log is not running")
        ts = now()
        drafts = [EventDraft(run_id, type, dumps(data), ts) for type, data in items]
        done: _Done = asyncio.get_running_loop().create_future()
        self._pending.append((AppendGroup(run_id, drafts, update), done))
        self._in_flight[run_id] = self._in_flight.get(run_id, 0) + 1
        self._wakeup.set()
        return done

    def _remember_failure(self, run_id: str, done: _Done) -> None:
        exc = None if done.cancelled() else done.exception()
        if exc is not None:
            self._failed[run_id] = exc

    async def _write_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                await self._write_batch()
            if self._closing:
                return

    async def _write_batch(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        started = time.perf_counter()
        try:
            results: Sequence[AppendResult | Exception] = await self._store.append([group for group, _ in batch])
        except Exception as exc:
            log.exception("event batch of %d groups could not be persisted", len(batch))
            results = [exc] * len(batch)
        else:
            metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - started)
        published: list[Event] = []
        for (group, done), result in zip(batch, results, strict=True):
            self._settle(group.run_id)
            if isinstance(result, BaseException):
                if not done.done():
                    done.set_exception(result)
                continue
            published.extend(result)
            if not done.done():
                done.set_result(result)
        if published:
            metrics.count_events(published)
            try:
                await self._broker.publish(published)
            except Exception:
                # Persisted events are safe; subscribers find them in the store.
                log.exception("publishing %d events failed", len(published))

    def _settle(self, run_id: str) -> None:
        left = self._in_flight[run_id] - 1
        if left:
            self._in_flight[run_id] = left
        else:
            del self._in_flight[run_id]
