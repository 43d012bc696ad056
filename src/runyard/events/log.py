"""Appending events: persist, then publish, with group commit.

Appends from every run of the process go to one writer task. The writer takes
everything pending, writes it in one store transaction, then publishes it and
wakes the appenders. Under light load a batch is a single event and waits for
nothing but its own commit (no timer); under heavy load, appends that arrive
during a commit share the next one, so throughput grows with concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from runyard.broker.base import Broker
from runyard.models import Event, EventDraft, RunUpdate, StatusConflict, dumps, now
from runyard.observability import metrics
from runyard.store.base import AppendGroup, Store

log = logging.getLogger("runyard.events")

MAX_BATCH = 4096  # groups per transaction: bounds a single commit's latency

_Pending = tuple[AppendGroup, "asyncio.Future[list[Event]]"]


class EventLog:
    """The only way events enter the store; each is published after its commit."""

    def __init__(self, store: Store, broker: Broker) -> None:
        self._store = store
        self._broker = broker
        self._pending: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

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

    async def append(self, run_id: str, type: str, data: Any) -> int:
        """Persist one event and return its ``seq``."""
        events = await self.append_group(run_id, [(type, data)])
        return events[0].seq

    async def append_group(
        self, run_id: str, items: list[tuple[str, Any]], update: RunUpdate | None = None
    ) -> list[Event]:
        """Persist events of one run atomically with ``update``; ``StatusConflict``
        if the update's expectation does not hold (then nothing is written)."""
        if self._writer is None or self._writer.done() or self._closing:
            raise RuntimeError("the event log is not running")
        ts = now()
        drafts = [EventDraft(run_id, type, dumps(data), ts) for type, data in items]
        done: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._pending.append((AppendGroup(run_id, drafts, update), done))
        self._wakeup.set()
        return await done

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
            results = await self._store.append([group for group, _ in batch])
        except Exception as exc:
            log.exception("event batch of %d groups could not be persisted", len(batch))
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        metrics.STORE_WRITE_SECONDS.observe(time.perf_counter() - started)
        published: list[Event] = []
        for (_, done), result in zip(batch, results, strict=True):
            if isinstance(result, StatusConflict):
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
