"""The event log across a store outage: a write that surely did not happen is
retried until the store answers again, so a PostgreSQL restart loses and
repeats nothing; a write that may have happened is never retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from runyard.broker.local import LocalBroker
from runyard.errors import StoreUnavailable
from runyard.events import EventLog
from runyard.models import Run, RunStatus
from runyard.store.base import AppendGroup, AppendResult
from runyard.store.memory import MemoryStore


class FlakyStore(MemoryStore):
    """A memory store whose next ``failures`` appends lose their connection."""

    def __init__(self, failures: int, *, in_doubt: bool = False) -> None:
        super().__init__()
        self.failures = failures
        self.in_doubt = in_doubt
        self.attempts = 0

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("connection lost", in_doubt=self.in_doubt)
        return await super().append(groups)


async def log_on(store: FlakyStore) -> EventLog:
    await store.create_run(Run("run_1", "ses_1", "o", "ticker", RunStatus.RUNNING, None, 0.0))
    log = EventLog(store, LocalBroker())
    await log.start()
    return log


async def test_events_wait_out_a_store_outage_and_are_written_once_in_order() -> None:
    store = FlakyStore(failures=5)
    log = await log_on(store)
    for i in range(10):
        await log.append("run_1", "tick", {"i": i})
    written = await log.append_group("run_1", [("tick", {"i": 10})])
    await log.stop()
    assert store.attempts > 5
    events = await store.read_events("run_1", 0, 100)
    assert [e.seq for e in events] == list(range(1, 12))
    assert written == events[-1:]


async def test_a_write_that_may_have_committed_is_not_retried() -> None:
    store = FlakyStore(failures=1, in_doubt=True)
    log = await log_on(store)
    with pytest.raises(StoreUnavailable):
        await log.append_group("run_1", [("tick", {})])
    await asyncio.wait_for(log.append_group("run_1", [("tick", {})]), 5)  # the next write goes through
    await log.stop()
    assert [e.seq for e in await store.read_events("run_1", 0, 100)] == [1]
