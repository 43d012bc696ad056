"""The engine, in process on the memory store: order, fairness, endings."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runyard import RunContext, RunStatus
from runyard.context import RESERVED_TYPES
from runyard.engine.engine import CLAIMS_IN_FLIGHT, GATHER_FROM
from runyard.errors import RunNotFound, SessionBusy
from runyard.models import LeaseLost, Multitask, Run, Session
from runyard.observability.metrics import REGISTRY
from runyard.runtime import Runtime
from runyard.store import store_from_url
from runyard.store.memory import MemoryStore
from runyard.store.sqlite import SQLiteStore
from tests.governance.support import wait_until
from tests.sse_reader import read_events
from tests.support import make_app, serve_in_thread


async def finished(rt: Runtime, owner: str, run_id: str) -> Any:
    run = await rt.get_run(owner, run_id)
    done = await rt.wait(run, 20)
    assert done is not None, f"run {run_id} did not finish"
    return done


async def events_of(rt: Runtime, run_id: str) -> list[Any]:
    return await rt.store.read_events(run_id, 0, 100_000)


async def test_a_run_goes_queued_running_succeeded_with_one_end_event_last() -> None:
    async with make_app(store="memory://").running() as rt:
        run = await rt.create_run("alice", "ticker", {"marker": "m", "count": 3})
        assert run.status is RunStatus.QUEUED
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.SUCCEEDED
        assert done.output == {"marker": "m", "count": 3}
        types = [e.type for e in await events_of(rt, run.run_id)]
        assert types == ["status", "tick", "tick", "tick", "status", "end"]
        assert done.last_seq == len(types)


async def test_one_owners_burst_delays_anothers_single_run_by_at_most_one_slot_turnover() -> None:
    async with make_app(store="memory://", max_concurrent_runs=1).running() as rt:
        burst = [await rt.create_run("greedy", "nap", {"seconds": 0.02}) for _ in range(20)]
        single = await rt.create_run("modest", "nap", {"seconds": 0.02})
        await finished(rt, "modest", single.run_id)
        started_before = [r for r in [await rt.get_run("greedy", b.run_id) for b in burst] if r.started_at is not None]
        single_done = await rt.get_run("modest", single.run_id)
        assert single_done.started_at is not None
        ahead = [r for r in started_before if r.started_at < single_done.started_at]  # type: ignore[operator]
        assert len(ahead) == 1, "only the run holding the slot may go first"


async def test_at_most_max_concurrent_runs_execute_at_once() -> None:
    async with make_app(store="memory://", max_concurrent_runs=3).running() as rt:
        runs = [await rt.create_run(f"o{i}", "nap", {"seconds": 0.2}) for i in range(7)]
        await asyncio.sleep(0.1)
        assert rt.engine.active == 3 and await rt.store.count_queued() == 4
        for run in runs:
            await finished(rt, run.owner, run.run_id)


async def test_runs_of_one_session_execute_one_at_a_time_in_order() -> None:
    async with make_app(store="memory://").running() as rt:
        first = await rt.create_run("alice", "nap", {"seconds": 0.1})
        second = await rt.create_run("alice", "nap", {"seconds": 0.01}, session_id=first.session_id)
        third = await rt.create_run("alice", "nap", {"seconds": 0.01}, session_id=first.session_id)
        a, b, c = [await finished(rt, "alice", r.run_id) for r in (first, second, third)]
        assert a.finished_at <= b.started_at and b.finished_at <= c.started_at


async def test_multitask_reject_refuses_while_the_session_is_busy() -> None:
    async with make_app(store="memory://").running() as rt:
        first = await rt.create_run("alice", "nap", {"seconds": 5})
        with pytest.raises(SessionBusy):
            await rt.create_run("alice", "nap", {}, session_id=first.session_id, multitask=Multitask.REJECT)
        await rt.cancel_run("alice", first.run_id)


async def test_multitask_interrupt_cancels_the_unfinished_run_first() -> None:
    async with make_app(store="memory://").running() as rt:
        first = await rt.create_run("alice", "nap", {"seconds": 5})
        await asyncio.sleep(0.05)
        second = await rt.create_run(
            "alice", "nap", {"seconds": 0.01}, session_id=first.session_id, multitask=Multitask.INTERRUPT
        )
        assert (await finished(rt, "alice", second.run_id)).status is RunStatus.SUCCEEDED
        assert (await rt.get_run("alice", first.run_id)).status is RunStatus.CANCELLED


@pytest.mark.parametrize("when", ["queued", "running"])
async def test_cancel_ends_the_run_cancelled_with_exactly_one_end(when: str) -> None:
    async with make_app(store="memory://", max_concurrent_runs=1).running() as rt:
        blocker = await rt.create_run("bob", "nap", {"seconds": 0.3})
        run = await rt.create_run("alice", "nap", {"seconds": 5})
        if when == "running":
            await finished(rt, "bob", blocker.run_id)
            await asyncio.sleep(0.05)
            assert (await rt.get_run("alice", run.run_id)).status is RunStatus.RUNNING
        await rt.cancel_run("alice", run.run_id)
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.CANCELLED and done.error is not None
        types = [e.type for e in await events_of(rt, run.run_id)]
        assert types.count("end") == 1 and types[-1] == "end"


async def test_a_pipeline_that_swallows_its_cancellation_still_ends_cancelled() -> None:
    async with make_app(store="memory://").running() as rt:
        run = await rt.create_run("alice", "stubborn", None)
        await asyncio.sleep(0.05)
        await rt.cancel_run("alice", run.run_id)
        assert (await finished(rt, "alice", run.run_id)).status is RunStatus.CANCELLED


async def test_timeout_ends_the_run_timed_out() -> None:
    async with make_app(store="memory://").running() as rt:
        run = await rt.create_run("alice", "nap_short", {"seconds": 5})
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.TIMED_OUT and done.error.code == "timed_out"


async def test_a_request_timeout_overrides_the_pipelines() -> None:
    async with make_app(store="memory://").running() as rt:
        run = await rt.create_run("alice", "nap", {"seconds": 5}, timeout_s=0.1)
        assert (await finished(rt, "alice", run.run_id)).status is RunStatus.TIMED_OUT


async def test_an_exception_fails_the_run_with_its_message_and_no_traceback() -> None:
    async with make_app(store="memory://").running() as rt:
        run = await rt.create_run("alice", "boom", None)
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.FAILED
        assert done.error.code == "pipeline_error"
        assert "flux capacitor" in done.error.message and "Traceback" not in done.error.message
        error_events = [e for e in await events_of(rt, run.run_id) if e.type == "error"]
        assert len(error_events) == 1 and b"File " not in error_events[0].data


async def test_current_run_reaches_the_run_from_a_nested_helper() -> None:
    async with make_app(store="memory://").running() as rt:
        runs = [await rt.create_run(f"owner{i}", "whoami", None) for i in range(20)]
        for run in runs:
            done = await finished(rt, run.owner, run.run_id)
            assert done.output == {"run_id": run.run_id, "session_id": run.session_id, "owner": run.owner}


async def test_memory_belongs_to_the_session_and_is_bounded() -> None:
    async with make_app(store="memory://", history_max=3).running() as rt:
        first = await rt.create_run("alice", "remember", {"note": "a0"})
        other = await rt.create_run("alice", "remember", {"note": "b0"})
        for i in range(1, 5):
            await rt.create_run("alice", "remember", {"note": f"a{i}"}, session_id=first.session_id)
        runs = await rt.list_runs("alice", session_id=first.session_id)
        last = await finished(rt, "alice", runs[0].run_id)
        assert [m["content"] for m in last.output["history"]] == ["a2", "a3", "a4"]
        assert [m["content"] for m in (await finished(rt, "alice", other.run_id)).output["history"]] == ["b0"]


async def test_a_limit_serves_waiting_owners_fairly() -> None:
    async with make_app(store="memory://").running() as rt:
        burst = [await rt.create_run("greedy", "limited", {"hold": 0.05}) for _ in range(10)]
        await asyncio.sleep(0.02)
        single = await rt.create_run("modest", "limited", {"hold": 0.05})
        await finished(rt, "modest", single.run_id)
        done = [await rt.get_run("greedy", r.run_id) for r in burst]
        assert sum(r.status is RunStatus.SUCCEEDED for r in done) <= 2
        for r in burst:
            await finished(rt, "greedy", r.run_id)


async def test_runs_left_queued_are_queued_again_on_start(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    async with make_app(store=url, max_concurrent_runs=1, drain_s=0).running() as rt:
        blocker = await rt.create_run("alice", "nap", {"seconds": 5})
        waiting = await rt.create_run("bob", "ticker", {"marker": "later", "count": 2})
        await asyncio.sleep(0.05)
    async with make_app(store=url, drain_s=0).running() as rt:
        assert (await finished(rt, "bob", waiting.run_id)).status is RunStatus.SUCCEEDED
        handed_back = await rt.get_run("alice", blocker.run_id)
        assert handed_back.attempt == 1 and not handed_back.status.finished, "a drain never fails a run"


async def test_a_worker_running_runs_claims_at_most_its_stores_claim_at_most_at_a_time(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    at, most = time.time(), SQLiteStore.claim_at_most
    busy = Run("run_busy", "ses_busy", "alice", "nap", RunStatus.QUEUED, created_at=at, input={"seconds": 5})
    due = {"created_at": at, "input": {"marker": "m", "count": 1}, "scheduled_for": at + 1.5}
    queued = [Run(f"run_{i}", f"ses_{i}", f"o{i % 3}", "ticker", RunStatus.QUEUED, **due) for i in range(2 * most + 5)]
    store = store_from_url(url)
    await store.open()
    for run in [busy, *queued]:
        await store.create_run(run, Session(run.session_id, run.owner, at, at))
    await store.close()
    asked: list[int] = []
    got: list[int] = []
    under_way = [0, 0]  # claims under way, the most at once
    claim = SQLiteStore.claim

    async def counted(self: SQLiteStore, worker_id: str, limit: int, *args: Any, **kwargs: Any) -> Any:
        asked.append(limit)
        under_way[0] += 1
        under_way[1] = max(under_way)
        claimed = await claim(self, worker_id, limit, *args, **kwargs)
        under_way[0] -= 1
        got.append(len(claimed))
        return claimed

    monkeypatch.setattr(SQLiteStore, "claim", counted)
    async with make_app(store=url, max_concurrent_runs=500, drain_s=0).running() as rt:
        for run in queued:  # due while the busy run runs
            assert (await finished(rt, run.owner, run.run_id)).status is RunStatus.SUCCEEDED
    assert (asked[0], got[0]) == (500, 1), "with nothing running, a claim takes all it may"
    assert set(asked[1:]) == {most}
    assert [n for n in got if n] == [1, most, most, 5]  # the busy run; then two full claims and the rest
    assert under_way[1] == CLAIMS_IN_FLIGHT, "the next claim waits in the writer's queue, not for the last's answer"


@pytest.mark.parametrize("gather_s", [0.0, 0.5])
async def test_a_worker_whose_claims_took_many_runs_lets_more_gather_before_it_claims_again(
    gather_s: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store whose claim is a transaction of its own (PostgreSQL) asks for fewer,
    larger claims while runs arrive faster than a worker claims: after a round that
    took ``GATHER_FROM`` runs or more, the worker waits ``claim_gather_s`` before its
    next claim; after a smaller round it claims each new run at once."""
    got: list[int] = []
    claim = MemoryStore.claim

    async def counted(self: MemoryStore, *args: Any, **kwargs: Any) -> Any:
        claimed = await claim(self, *args, **kwargs)
        got.append(len(claimed))
        return claimed

    monkeypatch.setattr(MemoryStore, "claim", counted)
    monkeypatch.setattr(MemoryStore, "claim_gather_s", gather_s)
    nap = {"seconds": 0.01}
    async with make_app(store="memory://", max_concurrent_runs=500).running() as rt:
        burst = await asyncio.gather(*(rt.create_run(f"o{i}", "nap", nap) for i in range(GATHER_FROM + 8)))
        await wait_until(lambda: GATHER_FROM + 8 in got)
        arriving = []
        for i in range(5):  # while the worker lets them gather, if it does
            arriving.append(await rt.create_run(f"late{i}", "nap", nap))
            await asyncio.sleep(0.02)
        for run in [*burst, *arriving]:
            await finished(rt, run.owner, run.run_id)
        for _ in range(2):  # after a small round: claimed at once, each
            await finished(rt, "after", (await rt.create_run("after", "nap", nap)).run_id)
    taken = [n for n in got if n]
    assert taken == ([GATHER_FROM + 8, 5, 1, 1] if gather_s else [GATHER_FROM + 8, 1, 1, 1, 1, 1, 1, 1])


async def test_shutdown_hands_back_a_run_queued_in_the_same_attempt(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    async with make_app(store=url, drain_s=0).running() as rt:
        run = await rt.create_run("alice", "nap", {"seconds": 5})  # no retries: a drain uses none
        await asyncio.sleep(0.1)
    async with make_app(store=url, drain_s=0).running() as rt:
        await asyncio.sleep(0.1)
        current = await rt.get_run("alice", run.run_id)
        assert current.attempt == 1 and current.status is RunStatus.RUNNING
        statuses = [json.loads(e.data) for e in await events_of(rt, run.run_id) if e.type == "status"]
        assert statuses[1] == {"status": "queued", "attempt": 1, "reason": "handed_back"}
        assert statuses[2] == {"status": "running", "attempt": 1}
        await rt.cancel_run("alice", run.run_id)


async def test_a_run_waiting_over_a_second_for_a_limit_is_told_what_it_waits_for() -> None:
    async with make_app(store="memory://").running() as rt:
        holder = await rt.create_run("alice", "limited", {"hold": 1.6})
        await asyncio.sleep(0.05)
        waiter = await rt.create_run("bob", "limited", {"hold": 0})
        await finished(rt, "bob", waiter.run_id)
        waits = [e for e in await events_of(rt, waiter.run_id) if e.type == "limit.wait"]
        assert len(waits) == 1 and waits[0].data == b'{"limit":"test-api","queued_behind":0}'
        assert not [e for e in await events_of(rt, holder.run_id) if e.type == "limit.wait"]


async def test_finished_runs_are_swept_after_their_retention() -> None:
    async with make_app(store="memory://", retention_s=0.2, sweep_interval_s=0.1).running() as rt:
        run = await rt.create_run("alice", "ticker", {"marker": "old", "count": 1})
        await finished(rt, "alice", run.run_id)
        await asyncio.sleep(0.6)
        with pytest.raises(RunNotFound):
            await rt.get_run("alice", run.run_id)


# -- issue 10: pipelines that ignore their cancellation, reserved event types ----------


class Deaf:
    """A pipeline that swallows every cancellation and goes on, emitting a ``beat``
    each tick, until the test releases it (so that the test's loop can close);
    it keeps what its emits raised."""

    def __init__(self) -> None:
        self.released = False
        self.refused: list[BaseException] = []
        self.alive = 0

    async def run(self, ctx: RunContext, input: Any) -> None:
        self.alive += 1
        try:
            while not self.released:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.02)
                try:
                    await ctx.emit("beat", {})
                except Exception as exc:
                    self.refused.append(exc)
        finally:
            self.alive -= 1


@pytest.fixture
async def deaf() -> AsyncIterator[Deaf]:
    pipeline = Deaf()
    yield pipeline
    pipeline.released = True  # before the test's loop closes: it would wait for the pipeline for ever
    await wait_until(lambda: pipeline.alive == 0)


async def test_an_api_cancel_of_a_pipeline_that_swallows_cancellation_ends_cancelled_within_the_grace(
    deaf: Deaf,
) -> None:
    """Issue 10: a cancel left such a run ``running`` for ever. Now the run is
    recorded ``cancelled`` after ``cancel_grace_s``, and the abandoned pipeline's
    later writes are refused by the run's fence."""
    app = make_app(store="memory://", cancel_grace_s=0.3)
    app.pipeline("deaf_here")(deaf.run)
    async with app.running() as rt:
        run = await rt.create_run("alice", "deaf_here", None)
        await wait_until(lambda: deaf.alive == 1)  # its code runs, not only its execution
        asked = time.monotonic()
        await rt.cancel_run("alice", run.run_id)
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.CANCELLED
        assert time.monotonic() - asked < 0.3 + 1.0, "within the grace (and a second of slack)"
        await wait_until(lambda: any(isinstance(exc, LeaseLost) for exc in deaf.refused))
        types = [e.type for e in await events_of(rt, run.run_id)]
        assert types[-1] == "end" and types.count("end") == 1, "nothing written after the run's end"
        assert rt.engine.active == 0


async def test_a_pipeline_that_swallows_its_timeout_ends_timed_out_a_grace_later(deaf: Deaf) -> None:
    app = make_app(store="memory://", cancel_grace_s=0.2)
    app.pipeline("deaf_timed", timeout_s=0.2)(deaf.run)
    async with app.running() as rt:
        run = await rt.create_run("alice", "deaf_timed", None)
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.TIMED_OUT


async def test_shutdown_with_a_pipeline_that_swallows_cancellation_hands_it_back_within_drain_and_grace(
    deaf: Deaf, tmp_path: Any
) -> None:
    """Issue 10: SIGTERM waited for such a pipeline for ever."""
    db = f"sqlite:///{tmp_path}/r.db"
    app = make_app(store=db, drain_s=0.2, cancel_grace_s=0.2)
    app.pipeline("deaf_retry", retries=1)(deaf.run)
    async with app.running() as rt:
        run = await rt.create_run("alice", "deaf_retry", None)
        await wait_until(lambda: rt.engine.active == 1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 0.2 + 0.2 + 1.0
    store = store_from_url(db)
    await store.open()
    try:
        again = await store.get_run(run.run_id)
    finally:
        await store.close()
    assert again is not None and (again.status, again.attempt) == (RunStatus.QUEUED, 1)


@pytest.mark.parametrize("reserved", sorted(RESERVED_TYPES))
async def test_ctx_emit_refuses_the_runtimes_own_event_types(reserved: str) -> None:
    """Issue 10: ``ctx.emit("end", ...)`` was accepted, and every stream closed at it."""
    refusals: list[str] = []
    app = make_app(store="memory://")

    @app.pipeline("forger")
    async def forger(ctx: RunContext, input: Any) -> str:
        try:
            await ctx.emit(reserved, {"status": "succeeded"})
        except ValueError as exc:
            refusals.append(str(exc))
        await ctx.emit("after", {})
        return "done"

    async with app.running() as rt:
        run = await rt.create_run("alice", "forger", None)
        done = await finished(rt, "alice", run.run_id)
        assert done.status is RunStatus.SUCCEEDED
        assert refusals == [refusals[0]] and f"{reserved!r} is the runtime's own" in refusals[0]
        types = [e.type for e in await events_of(rt, run.run_id)]
        assert types == ["status", "after", "status", "end"]


async def test_an_emitted_end_no_longer_closes_the_runs_stream_early() -> None:
    """Issue 10: a stream closed at a pipeline's own ``end`` while the run went on."""
    app = make_app(store="memory://")

    @app.pipeline("forger")
    async def forger(ctx: RunContext, input: Any) -> str:
        with contextlib.suppress(ValueError):
            await ctx.emit("end", {"status": "succeeded", "output": "forged"})
        await ctx.emit("after", {})
        return "real"

    with serve_in_thread(app) as url:
        async with httpx.AsyncClient(base_url=url, headers={"X-Client-Id": "alice"}, timeout=30) as client:
            created = await client.post("/v1/runs", json={"pipeline": "forger", "input": None})
            events = await read_events(client, created.json()["run_id"])
    assert [e["type"] for e in events] == ["status", "after", "status", "end"]
    assert events[-1]["data"]["output"] == "real"


@pytest.mark.parametrize("how", ["interrupt", "delete"])
async def test_a_running_run_the_store_cancels_stops_on_its_worker_quietly(
    how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An interrupt or a session's deletion ends a running run ``cancelled`` in the
    store's transaction; its worker stops the pipeline at once (the cancel signal;
    its fenced writes are refused anyway), writes nothing more, and logs no warning."""

    def cancels_counted() -> float:
        return REGISTRY.get_sample_value("runyard_runs_total", {"pipeline": "nap", "status": "cancelled"}) or 0.0

    caplog.set_level(logging.INFO, logger="runyard.runs")
    counted_before = cancels_counted()
    async with make_app(store="memory://").running() as rt:
        first = await rt.create_run("alice", "nap", {"seconds": 30})
        async with contextlib.aclosing(rt.follow(first, 0)) as frames:
            async for batch in frames:
                if any(b"napping" in frame for _, _, frame in batch):
                    break  # the pipeline is running
        if how == "interrupt":
            await rt.create_run(
                "alice", "nap", {"seconds": 0}, session_id=first.session_id, multitask=Multitask.INTERRUPT
            )
        else:
            await rt.delete_session("alice", first.session_id)
        ended = await rt.get_run("alice", first.run_id)
        assert ended.status is RunStatus.CANCELLED  # at once: decided in the store
        await asyncio.wait(set(rt.engine._tasks), timeout=5)
        assert first.run_id not in rt.engine._running  # stopped, not left to its 30 s nap
        types = [e.type for e in await events_of(rt, first.run_id)]
        assert types == ["status", "napping", "status", "end"]
    noisy = [r for r in caplog.records if r.name.startswith("runyard") and r.levelno >= logging.WARNING]
    assert noisy == []
    ended = [r for r in caplog.records if getattr(r, "transition", None) == "ended" and r.run_id == first.run_id]
    assert [(r.session_id, r.owner, r.attempt, r.status) for r in ended] == [  # type: ignore[attr-defined]
        (first.session_id, "alice", 1, "cancelled")
    ], "the store's cancel is a line of the run's life, once"
    assert cancels_counted() - counted_before == 1  # by the store's cancel; the worker's end was refused
