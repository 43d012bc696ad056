"""Durable steps, questions and sleeps, in one process, on every store: each
completed step is called once, and a run's log holds every event once however
many times the run executed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from runyard import RunStatus, Settings
from runyard.errors import AskMismatch, InvalidAnswer, RunNotWaiting
from runyard.models import Event
from runyard.runtime import Runtime
from tests.durable.app import CALLS, build_durable_app
from tests.governance.support import wait_until


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    CALLS.clear()
    app = build_durable_app(Settings(store=store_url))  # type: ignore[call-arg]
    async with app.running() as runtime:
        yield runtime


async def status_of(rt: Runtime, run_id: str) -> RunStatus:
    return (await rt.get_run("alice", run_id)).status


async def until_status(rt: Runtime, run_id: str, status: RunStatus, timeout_s: float = 10) -> None:
    async def reached() -> bool:
        return await status_of(rt, run_id) is status

    await wait_until(reached, timeout_s)


async def slot_freed(rt: Runtime) -> None:
    """A waiting run holds no worker slot (once its execution has unwound)."""

    async def free() -> bool:
        return rt.engine.active == 0

    await wait_until(free, 5)


async def log_of(rt: Runtime, run_id: str) -> list[Event]:
    return await rt.store.read_events(run_id, 0, 100_000)


def described(events: list[Event]) -> list[tuple[str, Any]]:
    """Each event as (type, data): what a client sees, beyond its seq."""
    return [(e.type, orjson.loads(e.data)) for e in events]


async def finished(rt: Runtime, run_id: str) -> Any:
    run = await rt.wait(await rt.get_run("alice", run_id), 20)
    assert run is not None, "the run did not finish"
    return run


async def test_an_answered_ask_replays_past_recorded_steps_without_calling_them_or_repeating_events(
    rt: Runtime,
) -> None:
    run = await rt.create_run("alice", "stages", {"stages": 3, "ask": True})
    await until_status(rt, run.run_id, RunStatus.WAITING)
    waiting = await rt.get_run("alice", run.run_id)
    assert waiting.waiting is not None
    assert waiting.snapshot()["waiting_for"]["request"] == {"question": "go on?"}
    assert waiting.snapshot()["waiting_for"]["schema"]["properties"]["approve"] == {
        "title": "Approve",
        "type": "boolean",
    }
    await slot_freed(rt)  # the store says waiting a moment before the pipeline's task has unwound
    assert CALLS == {"stage1": 1}

    answered = await rt.answer("alice", run.run_id, {"approve": True, "note": "ok"}, waiting.waiting.id)
    assert answered.status in (RunStatus.QUEUED, RunStatus.RUNNING)
    done = await finished(rt, run.run_id)

    assert done.status is RunStatus.SUCCEEDED
    assert CALLS == {"stage1": 1, "stage2": 1, "stage3": 1}
    events = described(await log_of(rt, run.run_id))
    assert [seq for seq, _ in enumerate(events, 1)] == [e.seq for e in await log_of(rt, run.run_id)]
    emitted = [(t, d) for t, d in events if t not in ("status", "end")]
    assert emitted == [
        ("stage.begin", {"i": 1}),
        ("progress", {"current": 1, "total": 3, "fraction": pytest.approx(1 / 3), "message": None}),
        ("step", {"name": "stage1", "n": 1, "status": "started"}),
        ("step", {"name": "stage1", "n": 1, "status": "done"}),
        ("stage.end", {"i": 1}),
        (
            "input.requested",
            {"ask_id": waiting.waiting.id, "request": {"question": "go on?"}, "schema": waiting.waiting.schema},
        ),
        ("input.received", {"ask_id": waiting.waiting.id}),
        ("answered", {"approve": True, "note": "ok"}),
        ("stage.begin", {"i": 2}),
        ("progress", {"current": 2, "total": 3, "fraction": pytest.approx(2 / 3), "message": None}),
        ("step", {"name": "stage2", "n": 1, "status": "started"}),
        ("step", {"name": "stage2", "n": 1, "status": "done"}),
        ("stage.end", {"i": 2}),
        ("stage.begin", {"i": 3}),
        ("progress", {"current": 3, "total": 3, "fraction": 1.0, "message": None}),
        ("step", {"name": "stage3", "n": 1, "status": "started"}),
        ("step", {"name": "stage3", "n": 1, "status": "done"}),
        ("stage.end", {"i": 3}),
    ]
    statuses = [d["status"] for t, d in events if t == "status"]
    assert statuses == ["running", "waiting", "queued", "running", "succeeded"]
    assert done.attempt == 1, "an answer uses up no retry"


async def test_several_questions_in_turn_each_answered_once(rt: Runtime) -> None:
    run = await rt.create_run("alice", "interview", None)
    answers: list[Any] = ["Ada", "green", 36]
    for answer in answers:
        await until_status(rt, run.run_id, RunStatus.WAITING)
        await rt.answer("alice", run.run_id, answer)
    done = await finished(rt, run.run_id)
    assert done.output == {"name": "Ada", "colour": "green", "age": 36}
    asked = [orjson.loads(e.data)["request"] for e in await log_of(rt, run.run_id) if e.type == "input.requested"]
    assert asked == ["your name?", {"q": "favourite colour?", "to": "Ada"}, "your age?"]


async def test_a_bad_answer_is_refused_and_changes_nothing(rt: Runtime) -> None:
    run = await rt.create_run("alice", "interview", None)
    for answer in ("Ada", "green"):
        await until_status(rt, run.run_id, RunStatus.WAITING)
        await rt.answer("alice", run.run_id, answer)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    before = await rt.get_run("alice", run.run_id)
    with pytest.raises(InvalidAnswer, match="minimum"):
        await rt.answer("alice", run.run_id, -1)
    with pytest.raises(InvalidAnswer, match="not of type"):
        await rt.answer("alice", run.run_id, "old")
    after = await rt.get_run("alice", run.run_id)
    assert after.status is RunStatus.WAITING and after.last_seq == before.last_seq
    assert after.waiting == before.waiting


async def test_a_stale_or_foreign_ask_id_is_refused(rt: Runtime) -> None:
    run = await rt.create_run("alice", "interview", None)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    first = (await rt.get_run("alice", run.run_id)).waiting
    assert first is not None
    await rt.answer("alice", run.run_id, "Ada", first.id)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    with pytest.raises(AskMismatch):
        await rt.answer("alice", run.run_id, "again", first.id)
    second = (await rt.get_run("alice", run.run_id)).waiting
    assert second is not None and second.id != first.id and second.n == 2


async def test_answering_a_run_that_does_not_wait_is_a_conflict(rt: Runtime) -> None:
    run = await rt.create_run("alice", "stages", {"stages": 1})
    done = await finished(rt, run.run_id)
    with pytest.raises(RunNotWaiting):
        await rt.answer("alice", done.run_id, True)


async def test_an_unanswered_ask_times_out(rt: Runtime) -> None:
    run = await rt.create_run("alice", "impatient", 0.3)
    done = await finished(rt, run.run_id)
    assert done.status is RunStatus.TIMED_OUT
    assert done.error is not None and done.error.code == "timed_out"
    assert done.waiting is None
    types = [e.type for e in await log_of(rt, run.run_id)]
    assert types[-3:] == ["error", "status", "end"]


async def test_a_waiting_run_can_be_cancelled(rt: Runtime) -> None:
    run = await rt.create_run("alice", "interview", None)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    cancelled = await rt.cancel_run("alice", run.run_id)
    assert cancelled.status is RunStatus.CANCELLED and cancelled.waiting is None
    with pytest.raises(RunNotWaiting):
        await rt.answer("alice", run.run_id, "late")


async def test_deleting_the_session_cancels_its_waiting_run(rt: Runtime) -> None:
    run = await rt.create_run("alice", "interview", None)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    _, status, _ = await rt.get_session("alice", run.session_id)
    assert status == "busy", "a waiting run keeps its session busy"
    await rt.delete_session("alice", run.session_id)
    assert await status_of(rt, run.run_id) is RunStatus.CANCELLED


async def test_a_sleep_waits_without_a_slot_and_goes_on_after_its_time(rt: Runtime) -> None:
    run = await rt.create_run("alice", "stages", {"stages": 2, "sleep_s": 1.0})
    await until_status(rt, run.run_id, RunStatus.WAITING)
    snapshot = (await rt.get_run("alice", run.run_id)).snapshot()
    assert set(snapshot["waiting_for"]) == {"until"}
    await slot_freed(rt)
    started = time.monotonic()
    done = await finished(rt, run.run_id)
    assert done.status is RunStatus.SUCCEEDED
    assert 0.5 <= time.monotonic() - started <= 2.0
    assert CALLS == {"stage1": 1, "stage2": 1}
    types = [e.type for e in await log_of(rt, run.run_id)]
    assert types.count("slept") == 1 and types.count("stage.begin") == 2


async def test_a_result_that_is_not_json_fails_the_run_naming_the_step(rt: Runtime) -> None:
    run = await rt.create_run("alice", "not_json", None)
    done = await finished(rt, run.run_id)
    assert done.status is RunStatus.FAILED
    assert done.error.code == "pipeline_error" and "step 'bad'" in done.error.message
    assert not (await rt.store.replay(run.run_id)).steps


async def test_the_timeout_counts_executing_time_only(rt: Runtime) -> None:
    run = await rt.create_run("alice", "clock", 2.0)
    done = await finished(rt, run.run_id)
    assert done.status is RunStatus.SUCCEEDED, done.error
    assert 1.1 <= done.executed_s < 2.5, "the 2 s wait is not executing time"


async def test_a_sync_step_runs_in_a_thread_and_every_execution_sees_the_recorded_json(rt: Runtime) -> None:
    run = await rt.create_run("alice", "kinds", None)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    await rt.answer("alice", run.run_id, "yes")
    done = await finished(rt, run.run_id)
    assert done.status is RunStatus.SUCCEEDED, done.error
    assert done.output["thread"] != "MainThread"
    assert done.output["model"] == {"approve": True, "note": ""}, "a pydantic result is recorded dumped"
    assert done.output["flaky"] == 2, "a step that raised is not recorded: it runs again next execution"
    steps = (await rt.store.replay(run.run_id)).steps
    assert sorted(steps) == [(":ask", 1), ("model", 1), ("sync", 1)]


async def test_a_step_cut_off_mid_way_runs_again_after_a_restarted_marker(rt: Runtime) -> None:
    run = await rt.create_run("alice", "cut_off", None)
    await until_status(rt, run.run_id, RunStatus.WAITING)
    await rt.answer("alice", run.run_id, 42)
    done = await finished(rt, run.run_id)
    assert done.output == 42
    emitted = [(t, d) for t, d in described(await log_of(rt, run.run_id)) if t not in ("status", "end")]

    def brief(event: tuple[str, Any]) -> Any:
        kind, data = event
        return (kind, data["status"]) if kind == "step" else kind if kind.startswith("input.") else event

    assert [brief(event) for event in emitted] == [
        ("before", {}),
        ("step", "started"),
        ("inside", {"call": 0}),
        "input.requested",
        "input.received",
        ("step", "restarted"),
        ("step", "started"),
        ("inside", {"call": 1}),
        ("step", "done"),
        ("after", {"answer": 42}),
    ]


async def test_step_names_are_checked(rt: Runtime) -> None:
    from runyard.journal import RunJournal
    from runyard.store.journal import Replay

    run = await rt.create_run("alice", "stages", {"stages": 0})
    journal = RunJournal(run, rt.events, Replay(), None, time.time())
    for bad in ("", ":ask", "x" * 129):
        with pytest.raises(ValueError, match="step's name"):
            await journal.step(bad, lambda: None, (), {})


async def test_a_run_executed_three_times_has_every_event_once_by_type_and_data(rt: Runtime) -> None:
    run = await rt.create_run("alice", "stages", {"stages": 3, "ask": True, "sleep_s": 0.3})
    await until_status(rt, run.run_id, RunStatus.WAITING)
    await rt.answer("alice", run.run_id, {"approve": True})
    done = await finished(rt, run.run_id)
    assert done.status is RunStatus.SUCCEEDED, done.error
    events = described(await log_of(rt, run.run_id))
    executions = [d for t, d in events if t == "status" and d["status"] == "running"]
    assert len(executions) == 3, "ran, asked; ran, slept; ran to the end"
    own = [repr(event) for event in events if event[0] not in ("status", "end")]
    assert len(own) == len(set(own)), [item for item in own if own.count(item) > 1]
    assert [t for t, _ in events].count("stage.begin") == 3
    assert CALLS == {"stage1": 1, "stage2": 1, "stage3": 1}
