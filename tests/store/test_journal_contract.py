"""The store contract of durable work (issue 12), every backend: steps recorded
with their events, replay marks, waiting runs (``Journal``, and ``waiting`` as an
unfinished status everywhere a store says "unfinished").

Runs once per URL in ``tests/conftest.py::STORE_URLS``, as ``test_contract.py``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3

import asyncpg
import pytest

from runyard.errors import SessionBusy
from runyard.models import (
    ASK,
    SLEEP,
    EventDraft,
    Fence,
    LeaseLost,
    Message,
    RunStatus,
    RunUpdate,
    StatusConflict,
    StepRecord,
    Wait,
    dumps,
    rfc3339,
)
from runyard.outcome import Outcome
from runyard.store import AppendGroup, Store, store_from_url
from runyard.store._numbering import end_group
from runyard.store.base import RunQuery
from runyard.store.journal import Replay
from runyard.store.memory import MemoryStore
from runyard.store.postgres import PostgresStore
from runyard.store.postgres.schema import DELETE_STEP_CHUNK
from runyard.store.sqlite import SQLiteStore
from runyard.store.sqlite import retention as sqlite_retention
from tests.store.test_contract import (
    INTERRUPT,
    REJECT,
    SERVED,
    T0,
    all_events,
    assert_cancelled_by_the_store,
    created,
    events,
    run,
    session,
)

RUNNING = frozenset({RunStatus.RUNNING})
WAITING = frozenset({RunStatus.WAITING})
HELD = Fence("w1", 1)


def ask(id: str = "ask_1", *, until: float | None = None, pos: int = 3) -> Wait:
    return Wait(ASK, id, 1, pos, request={"q": "ok?"}, schema={"type": "boolean"}, until=until)


def sleep(until: float, id: str = "sleep_1") -> Wait:
    return Wait(SLEEP, id, 1, 4, until=until)


def step(name: str = "fetch", n: int = 1, value: object = "first", pos: int = 2) -> StepRecord:
    return StepRecord(name, n, dumps(value), pos, T0 + pos)


def step_group(run_id: str, record: StepRecord, fence: Fence | None = HELD) -> AppendGroup:
    """A step's ``step`` event (at its position) with its record, as a pipeline writes them."""
    data = dumps({"name": record.name, "n": record.n, "status": "done"})
    return AppendGroup(run_id, [EventDraft(run_id, "step", data, record.at, pos=record.pos)], fence=fence, step=record)


async def claimed(store: Store, session_id: str = "ses_0") -> str:
    """A run of the session, claimed by w1 (``HELD``)."""
    (r,) = await created(store, run(session_id))
    (claim,) = await store.claim("w1", 1, T0, T0 + 30, pipelines=SERVED)
    assert claim.run.run_id == r.run_id
    return r.run_id


async def suspend(store: Store, run_id: str, wait: Wait, executed_s: float = 1.5) -> None:
    """The run goes waiting (no worker, no lease), as ``ctx.ask``/``ctx.sleep`` leave it."""
    update = RunUpdate(status=RunStatus.WAITING, expect=RUNNING, waiting=wait, executed_s=executed_s, clear_lease=True)
    status = EventDraft(run_id, "status", dumps({"status": "waiting"}), T0)
    events((await store.append([AppendGroup(run_id, [status], update, HELD)]))[0])


async def waiting_run(store: Store, wait: Wait, session_id: str = "ses_0") -> str:
    run_id = await claimed(store, session_id)
    await suspend(store, run_id, wait)
    return run_id


def resume(expect_wait: str) -> RunUpdate:
    """The answer (or the sleep's end) queues the run again."""
    return RunUpdate(status=RunStatus.QUEUED, expect=WAITING, expect_wait=expect_wait, clear_waiting=True)


# -- steps and the replay mark -------------------------------------------------------


async def test_a_step_is_recorded_with_its_event_in_one_group(store: Store) -> None:
    run_id = await claimed(store)
    (written,) = await store.append([step_group(run_id, step())])
    assert [e.type for e in events(written)] == ["step"]
    assert await store.replay(run_id) == Replay({("fetch", 1): step()}, mark=2)


async def test_a_refused_group_records_neither_its_event_nor_its_step(store: Store) -> None:
    run_id = await claimed(store)
    before = await all_events(store, run_id)
    (refused,) = await store.append([step_group(run_id, step(), fence=Fence("w1", 2))])  # a stale attempt
    assert isinstance(refused, LeaseLost)
    assert await store.replay(run_id) == Replay()
    assert await all_events(store, run_id) == before


async def test_a_step_recorded_twice_keeps_its_first_record(store: Store) -> None:
    run_id = await claimed(store)
    events((await store.append([step_group(run_id, step(value="first"))]))[0])
    # a second execution raced the first to the same step: its event is written, its record is not
    events((await store.append([step_group(run_id, step(value="second", pos=7))]))[0])
    replay = await store.replay(run_id)
    assert replay.steps[("fetch", 1)].value() == "first"
    assert replay.steps[("fetch", 1)].pos == 2


async def test_a_step_recorded_twice_in_one_batch_keeps_the_earlier_group_s_record(store: Store) -> None:
    run_id = await claimed(store)
    first, second = await store.append([step_group(run_id, step(value="first")), step_group(run_id, step(value="2nd"))])
    assert isinstance(first, list) and isinstance(second, list)
    assert (await store.replay(run_id)).steps[("fetch", 1)].value() == "first"


async def test_replay_returns_every_step_of_the_run_and_only_its_own(store: Store) -> None:
    mine, other = await created(store, run(status=RunStatus.RUNNING), run(status=RunStatus.RUNNING))
    records = [step("a", 1, [1], pos=1), step("a", 2, {"x": None}, pos=2), step("b", 1, None, pos=3)]
    results = await store.append([step_group(mine.run_id, r, fence=None) for r in records])
    assert all(isinstance(result, list) for result in results)
    events((await store.append([step_group(other.run_id, step("c"), fence=None)]))[0])
    replay = await store.replay(mine.run_id)
    assert replay.steps == {(r.name, r.n): r for r in records}
    assert [replay.steps[("a", 2)].value(), replay.mark] == [{"x": None}, 3]


async def test_the_mark_is_the_pos_of_the_last_event_that_has_one(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.RUNNING))
    assert await store.replay(r.run_id) == Replay()  # no event yet: mark 0

    def at(pos: int | None, type: str = "tick") -> AppendGroup:
        return AppendGroup(r.run_id, [EventDraft(r.run_id, type, b"{}", T0, pos=pos)])

    for group in (at(None), at(4), at(5), at(None, "status")):  # the runtime's events carry no pos
        events((await store.append([group]))[0])
    assert (await store.replay(r.run_id)).mark == 5
    events((await store.append([at(2, "step")]))[0])  # a step's restarted marker: back to 2
    assert (await store.replay(r.run_id)).mark == 2
    (refused,) = await store.append([AppendGroup(r.run_id, [EventDraft(r.run_id, "x", b"{}", T0, pos=9)], fence=HELD)])
    assert isinstance(refused, LeaseLost)  # a refused group moves no mark
    assert (await store.replay(r.run_id)).mark == 2


async def test_replay_of_an_unknown_run_is_empty(store: Store) -> None:
    assert await store.replay("run_missing") == Replay()


async def test_a_step_s_result_counts_toward_its_run_s_bytes(store_url: str) -> None:
    capped = store_from_url(store_url, max_run_bytes=2_000)
    await capped.open()
    try:
        (r,) = await created(capped, run(status=RunStatus.RUNNING))
        (refused,) = await capped.append([step_group(r.run_id, step(value="x" * 3_000), fence=None)])
        assert not isinstance(refused, list)  # RunTooLarge: neither event nor step written
        assert await capped.replay(r.run_id) == Replay()
    finally:
        await capped.close()


async def test_a_step_s_bytes_still_count_after_a_reopen(store_url: str) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("memory:// keeps nothing once closed, by design")
    first = store_from_url(store_url, max_run_bytes=2_000)
    await first.open()
    try:
        (r,) = await created(first, run(status=RunStatus.RUNNING))
        events((await first.append([step_group(r.run_id, step(value="ü" * 700), fence=None)]))[0])  # 1,402 bytes
    finally:
        await first.close()
    second = store_from_url(store_url, max_run_bytes=2_000)
    await second.open()
    try:
        (refused,) = await second.append([AppendGroup(r.run_id, [EventDraft(r.run_id, "t", b"x" * 500, T0)])])
        assert not isinstance(refused, list)  # the step (its event, and 1,402 bytes of result) + 533 > 2,000
    finally:
        await second.close()


# -- waiting runs --------------------------------------------------------------------


async def test_what_a_run_waits_for_round_trips_through_updates(store: Store) -> None:
    run_id = await waiting_run(store, ask(until=T0 + 60))
    waiting = await store.get_run(run_id)
    assert waiting is not None
    assert (waiting.status, waiting.waiting, waiting.executed_s) == (RunStatus.WAITING, ask(until=T0 + 60), 1.5)
    assert (waiting.worker_id, waiting.lease_expires_at) == (None, None)
    assert waiting.snapshot()["waiting_for"] == {
        "ask_id": "ask_1",
        "request": {"q": "ok?"},
        "schema": {"type": "boolean"},
    }

    events((await store.append([AppendGroup(run_id, [], resume("ask_1"))]))[0])
    resumed = await store.get_run(run_id)
    assert resumed is not None
    assert (resumed.status, resumed.waiting, resumed.executed_s) == (RunStatus.QUEUED, None, 1.5)
    assert resumed.snapshot()["waiting_for"] is None

    (claim,) = await store.claim("w2", 1, T0 + 1, T0 + 31, pipelines=SERVED)
    update = RunUpdate(status=RunStatus.WAITING, expect=RUNNING, waiting=sleep(T0 + 90), executed_s=2.25)
    events((await store.append([AppendGroup(run_id, [], update, Fence("w2", 1))]))[0])
    slept = await store.get_run(run_id)
    assert slept is not None and (slept.waiting, slept.executed_s) == (sleep(T0 + 90), 2.25)
    assert slept.snapshot()["waiting_for"] == {"until": rfc3339(T0 + 90)}
    assert claim.run.run_id == run_id


async def test_a_run_created_waiting_reads_back_equal(store: Store) -> None:
    (r,) = await created(store, run(status=RunStatus.WAITING, waiting=sleep(T0 + 5), executed_s=0.5))
    assert await store.get_run(r.run_id) == r
    assert [due.run_id for due in await store.due_waits(T0 + 5, 10)] == [r.run_id]


async def test_expect_wait_refuses_a_group_unless_the_run_waits_for_that_wait(store: Store) -> None:
    run_id = await waiting_run(store, ask("ask_1"))
    answer = EventDraft(run_id, "input.received", dumps({"ask_id": "ask_2"}), T0)
    (refused,) = await store.append([AppendGroup(run_id, [answer], resume("ask_2"))])
    assert isinstance(refused, StatusConflict) and refused.actual is RunStatus.WAITING
    assert await store.replay(run_id) == Replay()  # nothing of the group was written
    events((await store.append([AppendGroup(run_id, [], resume("ask_1"))]))[0])
    # answered already: the run waits for nothing, so a second answer is refused too
    (again,) = await store.append([AppendGroup(run_id, [], resume("ask_1"))])
    assert isinstance(again, StatusConflict) and again.actual is RunStatus.QUEUED


async def test_expect_wait_sees_an_earlier_group_of_the_same_batch(store: Store) -> None:
    run_id = await waiting_run(store, ask("ask_1"))
    first, second = await store.append(
        [AppendGroup(run_id, [], resume("ask_1")), AppendGroup(run_id, [], resume("ask_1"))]
    )
    assert isinstance(first, list) and isinstance(second, StatusConflict)


async def test_a_waiting_run_keeps_its_session_s_later_runs_queued(store: Store) -> None:
    waiting = await waiting_run(store, ask())
    (later,) = await created(store, run("ses_0"))
    assert await store.claim("w1", 5, T0 + 1, T0 + 31, pipelines=SERVED) == []  # never the waiting run either
    assert [r.run_id for r in await store.unfinished_runs("ses_0")] == [waiting, later.run_id]
    events((await store.append([AppendGroup(waiting, [], resume("ask_1"))]))[0])
    (claim,) = await store.claim("w2", 5, T0 + 2, T0 + 32, pipelines=SERVED)
    assert claim.run.run_id == waiting  # resumed, it is its session's head again
    events((await store.append([end_group(waiting, Outcome.succeeded(1), RUNNING, T0 + 3)]))[0])
    assert [c.run.run_id for c in await store.claim("w2", 5, T0 + 4, T0 + 34, pipelines=SERVED)] == [later.run_id]


async def test_claim_never_takes_a_waiting_run(store: Store) -> None:
    await created(store, run("ses_a", status=RunStatus.WAITING, waiting=ask()))
    assert await store.claim("w1", 5, T0, T0 + 30, pipelines=SERVED) == []
    assert await store.count_queued() == 0


async def test_deleting_a_session_cancels_its_waiting_run(store: Store) -> None:
    s = session()
    await store.create_session(s)
    run_id = await waiting_run(store, ask(until=T0 + 60), s.session_id)
    (cancelled,) = await store.delete_session(s.session_id, T0 + 5)
    assert_cancelled_by_the_store(cancelled, run_id, was_running=False)
    ended = await store.get_run(run_id)
    assert ended is not None and (ended.status, ended.waiting) == (RunStatus.CANCELLED, None)
    assert await store.unfinished_runs(s.session_id) == []
    assert await store.due_waits(T0 + 100, 10) == []


async def test_entering_a_session_with_a_waiting_run(store: Store) -> None:
    s = session()
    await store.create_session(s)
    run_id = await waiting_run(store, ask(), s.session_id)
    with pytest.raises(SessionBusy, match=run_id):
        await store.enter_session(run(s.session_id), REJECT)
    newcomer = run(s.session_id, at=T0 + 5)
    (cancelled,) = (await store.enter_session(newcomer, INTERRUPT)).cancelled
    assert_cancelled_by_the_store(cancelled, run_id, was_running=False)
    ended = await store.get_run(run_id)
    assert ended is not None and (ended.status, ended.waiting) == (RunStatus.CANCELLED, None)
    assert [r.run_id for r in await store.unfinished_runs(s.session_id)] == [newcomer.run_id]


async def test_a_session_with_a_waiting_run_is_busy_never_idle(store: Store) -> None:
    s = session()
    await store.create_session(s)
    await store.append_message(s.session_id, Message("user", "hold on", T0), keep=5)
    await waiting_run(store, ask(), s.session_id)
    assert await store.forget_idle_sessions(T0 + 1_000) == 0
    assert [m.content for m in await store.history(s.session_id)] == ["hold on"]


async def test_due_waits_are_the_waiting_runs_due_soonest_first(store: Store) -> None:
    late = await waiting_run(store, sleep(T0 + 30), "ses_late")
    soon = await waiting_run(store, ask("ask_soon", until=T0 + 10), "ses_soon")
    await waiting_run(store, sleep(T0 + 100), "ses_future")
    await waiting_run(store, ask("ask_forever"), "ses_forever")  # no timeout: never due
    resumed = await waiting_run(store, sleep(T0 + 5), "ses_resumed")
    events((await store.append([AppendGroup(resumed, [], resume("sleep_1"))]))[0])

    due = await store.due_waits(T0 + 30, 10)
    assert [r.run_id for r in due] == [soon, late]
    assert due[0].waiting == ask("ask_soon", until=T0 + 10) and due[0].status is RunStatus.WAITING
    assert [r.run_id for r in await store.due_waits(T0 + 30, 1)] == [soon]
    assert await store.due_waits(T0 + 9, 10) == []
    assert await store.due_waits(T0 + 30, 0) == []


async def test_list_runs_by_the_waiting_status(store: Store) -> None:
    waiting = await waiting_run(store, ask(), "ses_w")
    await created(store, run("ses_q"))
    listed = await store.list_runs(RunQuery("alice", statuses=(RunStatus.WAITING,)))
    assert [r.run_id for r in listed] == [waiting]


async def test_sweeping_a_finished_run_forgets_its_steps(store: Store) -> None:
    run_id = await claimed(store)
    events((await store.append([step_group(run_id, step())]))[0])
    events((await store.append([end_group(run_id, Outcome.succeeded(None), RUNNING, T0 + 10)]))[0])
    assert await store.sweep_runs(T0 + 50) == 1
    assert await store.replay(run_id) == Replay()


async def test_sweeping_a_run_of_many_large_steps_in_chunks_deletes_them_all(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's result may weigh as much as an event: a run's steps are deleted in
    chunks too (``_sweep``), and with small runs several to a write."""
    for module in ("runyard.store.sqlite.retention", "runyard.store.postgres.retention"):
        monkeypatch.setattr(f"{module}.CHUNK_EVENTS", 7, raising=False)
        monkeypatch.setattr(f"{module}.CHUNK_BYTES", 3_000, raising=False)
    large, small, kept = await created(store, *(run(status=RunStatus.RUNNING) for _ in range(3)))
    for r, count in ((large, 40), (small, 2), (kept, 40)):
        records = [step("big", n, "x" * 1_000, pos=n) for n in range(count)]
        results = await store.append([step_group(r.run_id, record, fence=None) for record in records])
        assert all(isinstance(result, list) for result in results)
    done = RunUpdate(RunStatus.SUCCEEDED, finished_at=T0 + 10)
    await store.append([AppendGroup(r.run_id, [], done) for r in (large, small)])
    await store.append([AppendGroup(kept.run_id, [], RunUpdate(RunStatus.SUCCEEDED, finished_at=T0 + 100))])

    assert await store.sweep_runs(T0 + 50) == 2
    for r in (large, small):
        assert await store.replay(r.run_id) == Replay()
    assert len((await store.replay(kept.run_id)).steps) == 40
    assert await stored_steps(store) == 40  # no orphaned record left behind (SQLite may reuse a run's key)


async def test_one_chunk_of_a_sweep_deletes_at_most_its_bytes_of_steps_but_one_at_least(store: Store) -> None:
    """What bounds each write of a large run's sweep (``_sweep``), in each SQL backend."""
    if isinstance(store, MemoryStore):
        pytest.skip("memory:// deletes in no chunks: nothing waits behind it")
    (r,) = await created(store, run(status=RunStatus.RUNNING))
    records = [step("big", n, "x" * 1_000, pos=n) for n in range(5)]
    await store.append([step_group(r.run_id, record, fence=None) for record in records])
    await delete_step_chunk(store, r.run_id, 10, 2_100)
    assert await stored_steps(store) == 3  # 1,002 bytes each: two fit
    await delete_step_chunk(store, r.run_id, 10, 10)
    assert await stored_steps(store) == 2  # one at least
    await delete_step_chunk(store, r.run_id, 1, 100_000)
    assert await stored_steps(store) == 1


async def delete_step_chunk(store: Store, run_id: str, events: int, size: int) -> None:
    if isinstance(store, SQLiteStore):
        (pk,) = (await store._read("SELECT created_seq FROM runs WHERE run_id = ?", (run_id,)))[0]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sqlite_retention, "CHUNK_EVENTS", events)
            patch.setattr(sqlite_retention, "CHUNK_BYTES", size)
            await store._write(lambda db: sqlite_retention._delete_step_chunk(db, pk))
    else:
        assert isinstance(store, PostgresStore)
        await store._db().fetchval(DELETE_STEP_CHUNK, run_id, events, size)


async def stored_steps(store: Store) -> int:
    """Every step record the backend holds, whatever run it belongs to."""
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            count: int = db.execute("SELECT count(*) FROM steps").fetchone()[0]
            return count
    if isinstance(store, PostgresStore):
        conn = await asyncpg.connect(store.url)
        try:
            rows: int = await conn.fetchval("SELECT count(*) FROM steps")
            return rows
        finally:
            await conn.close()
    assert isinstance(store, MemoryStore)
    return sum(len(steps) for steps in store._steps.values())


async def test_steps_marks_and_waits_survive_close_and_reopen(store_url: str) -> None:
    if store_url.startswith("memory:"):
        pytest.skip("memory:// keeps nothing once closed, by design")
    first = store_from_url(store_url)
    await first.open()
    try:
        run_id = await claimed(first)
        events((await first.append([step_group(run_id, step())]))[0])
        await suspend(first, run_id, ask(until=T0 + 60))
    finally:
        await first.close()
    second = store_from_url(store_url)
    await second.open()
    try:
        assert await second.replay(run_id) == Replay({("fetch", 1): step()}, mark=2)
        assert [r.run_id for r in await second.due_waits(T0 + 60, 10)] == [run_id]
        # a new process knows what the run waits for: only its own answer resumes it
        (refused,) = await second.append([AppendGroup(run_id, [], resume("ask_2"))])
        assert isinstance(refused, StatusConflict)
        events((await second.append([AppendGroup(run_id, [], resume("ask_1"))]))[0])
        assert json.loads((await all_events(second, run_id))[-1].data) == {"status": "waiting"}
    finally:
        await second.close()
