"""The event log across a store outage: a write that surely did not happen is
retried until the store answers again, so a PostgreSQL restart loses and
repeats nothing; a write that may have happened is never retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from runyard import RunContext
from runyard.broker.local import LocalBroker
from runyard.errors import StoreUnavailable
from runyard.events import EventLog
from runyard.events.log import IN_FLIGHT, QUEUED, EventsLost
from runyard.models import Run, RunError, RunStatus, RunUpdate
from runyard.store.base import AppendGroup, AppendResult
from runyard.store.memory import MemoryStore
from tests.support import make_app


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


async def test_a_run_ending_during_an_outage_that_is_ridden_out_still_succeeds() -> None:
    """Events held through an outage are not lost: the run's end lands after them."""
    store = FlakyStore(failures=3)
    log = await log_on(store)
    for i in range(5):
        await log.append("run_1", "tick", {"i": i})
    await log.append_group("run_1", [("status", {"status": "succeeded"})], RunUpdate(RunStatus.SUCCEEDED))
    await log.stop()
    run = await store.get_run("run_1")
    assert run is not None and run.status is RunStatus.SUCCEEDED
    assert [e.type for e in await store.read_events("run_1", 0, 100)] == ["tick"] * 5 + ["status"]


async def test_a_write_that_may_have_committed_is_not_retried() -> None:
    store = FlakyStore(failures=1, in_doubt=True)
    log = await log_on(store)
    with pytest.raises(StoreUnavailable):
        await log.append_group("run_1", [("tick", {})])
    await asyncio.wait_for(log.append_group("run_1", [("tick", {})]), 5)  # the next write goes through
    await log.stop()
    assert [e.seq for e in await store.read_events("run_1", 0, 100)] == [1]


# -- issue 10: lost writes -------------------------------------------------------------


class StoreThatLosesEvents(MemoryStore):
    """A memory store whose disk fails for good once ``keep`` events are stored:
    every later group of events alone is refused (a status change still lands,
    as a small write may on a full disk)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep
        self.stored = 0

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult | Exception]:
        doomed = []
        for group in groups:
            doomed.append(group.update is None and self.stored >= self.keep)
            self.stored += len(group.drafts) if not doomed[-1] else 0
        written = iter(await super().append([g for g, lost in zip(groups, doomed, strict=True) if not lost]))
        return [OSError("disk I/O error") if lost else next(written) for lost in doomed]


async def test_a_run_whose_events_could_not_be_stored_is_refused_succeeded(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10: a lost batch was dropped when the run's end came with an update,
    so the run ended ``succeeded`` with events missing."""
    store = StoreThatLosesEvents(keep=1)
    log = await log_on(store)  # type: ignore[arg-type]
    for i in range(3):
        await log.append("run_1", "said", {"i": i})  # not awaited: the loss is only known to the writer
    with pytest.raises(EventsLost) as lost:
        await log.append_group("run_1", [("status", {"status": "succeeded"})], RunUpdate(RunStatus.SUCCEEDED))
    assert (lost.value.code, lost.value.count, dict(lost.value.types)) == ("events_lost", 2, {"said": 2})
    failed = RunUpdate(RunStatus.FAILED, error=RunError(lost.value.code, str(lost.value)))
    await log.append_group("run_1", [("status", {"status": "failed"})], failed)
    await log.stop()
    run = await store.get_run("run_1")
    assert run is not None and run.status is RunStatus.FAILED and run.error == failed.error
    (line,) = [r for r in caplog.records if r.name == "runyard.events" and getattr(r, "lost_events", 0)]
    assert (line.run_id, line.lost_events, line.lost_types) == ("run_1", 2, {"said": 2})  # type: ignore[attr-defined]


async def test_a_store_refusal_carrying_its_own_code_ends_the_run_with_that_code() -> None:
    """The per-run byte cap's refusal (``too_large``) takes the same path as a loss."""

    class TooLarge(Exception):
        run_error_code = "too_large"

    class CappedStore(StoreThatLosesEvents):
        async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult | Exception]:
            return [TooLarge("past the cap") if isinstance(r, OSError) else r for r in await super().append(groups)]

    log = await log_on(CappedStore(keep=1))  # type: ignore[arg-type]
    await log.append("run_1", "chunk", {})
    await log.append("run_1", "chunk", {})
    with pytest.raises(EventsLost) as lost:
        await log.append_group("run_1", [], RunUpdate(RunStatus.SUCCEEDED))
    with pytest.raises(EventsLost):
        await log.append("run_1", "chunk", {})  # and every later append of the attempt
    await log.stop()
    assert lost.value.code == "too_large"


async def test_a_pipeline_whose_events_are_lost_for_good_mid_run_ends_failed_events_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 10, end to end: the pipeline returns normally after its last events
    were lost; the run ends ``failed`` with ``events_lost``, never ``succeeded``."""
    store = StoreThatLosesEvents(keep=2)
    monkeypatch.setattr("runyard.runtime.store_from_url", lambda url, **options: store)
    app = make_app(store="memory://")

    @app.pipeline("last_words")
    async def last_words(ctx: RunContext, input: Any) -> str:
        for i in range(5):
            await ctx.emit("said", {"i": i})
        return "all said"

    async with app.running() as rt:
        created = await rt.create_run("alice", "last_words", None)
        done = await rt.wait(created, 20)
    assert done is not None and done.status is RunStatus.FAILED and done.error is not None
    assert done.error.code == "events_lost"
    types = [e.type for e in await store.read_events(created.run_id, 0, 100)]
    kept = types.count("said")
    assert 0 < kept < 5 and types == ["status"] + ["said"] * kept + ["error", "status", "end"]
    assert f"{5 - kept} events" in done.error.message and f"said x{5 - kept}" in done.error.message


class GatedStore(MemoryStore):
    """A memory store whose appends wait until ``gate`` opens (a slow commit)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def append(self, groups: Sequence[AppendGroup]) -> list[AppendResult]:
        await self.gate.wait()
        return await super().append(groups)


async def test_appends_wait_for_their_commit_once_all_runs_have_queued_the_process_bound() -> None:
    """Each run stays under its own bound, but together they may queue only
    ``QUEUED`` events: past that an append waits, so a crowd of fast runs cannot
    put seconds of writing ahead of every new event."""
    store = GatedStore()
    runs = [f"run_{i}" for i in range(20)]
    for run_id in runs:
        await store.create_run(Run(run_id, "ses_1", "o", "ticker", RunStatus.RUNNING, None, 0.0))
    log = EventLog(store, LocalBroker())
    await log.start()
    await log.append(runs[0], "tick", {"i": -1})  # the writer takes it and waits on the store
    await asyncio.sleep(0.01)
    for i in range(QUEUED):
        await asyncio.wait_for(log.append(runs[i % len(runs)], "tick", {"i": i}), 1)  # none waits
    assert max(QUEUED // len(runs) + 2, 1) < IN_FLIGHT, "no run reached its own bound"
    over = asyncio.create_task(log.append(runs[-1], "tick", {"i": QUEUED}))
    await asyncio.sleep(0.05)
    assert not over.done(), "the append past the process's bound waits for its commit"
    store.gate.set()
    await asyncio.wait_for(over, 5)
    await log.stop()
    stored = [len(await store.read_events(run_id, 0, 1000)) for run_id in runs]
    assert sum(stored) == QUEUED + 2
