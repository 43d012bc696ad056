"""The row codec every store shares (``runyard.store._rows``)."""

from __future__ import annotations

from runyard.models import ASK, SLEEP, Message, Run, RunError, RunStatus, RunUpdate, Session, StepRecord, Wait
from runyard.store import _rows
from runyard.store.sqlite.schema import STORED_RUN_FIELDS


def full_run() -> Run:
    return Run(
        "run_1",
        "ses_1",
        "alice",
        "ticker",
        RunStatus.FAILED,
        {"q": "\u0000 and ünïcode"},
        created_at=1.5,
        output=[1, 2],
        error=RunError("boom", "it broke"),
        metadata={"k": "v"},
        started_at=2.5,
        finished_at=3.5,
        last_seq=7,
        attempt=2,
        timeout_s=30.0,
        max_attempts=3,
        worker_id="w1",
        lease_expires_at=9.5,
        waiting=Wait(ASK, "ask_1", 2, 5, request={"q": "\u0000?"}, schema={"type": "string"}, until=10.5),
        executed_s=1.25,
        trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\nvendor=opaque",
    )


def test_a_run_round_trips_through_its_row_in_every_field() -> None:
    row = _rows.run_row(full_run())
    assert len(row) == len(_rows.RUN_FIELDS)
    assert _rows.run_from_row(row) == full_run()


def test_the_sqlite_row_is_the_run_row_without_last_seq() -> None:
    """SQLite reads last_seq from the events: its INSERT takes every other field, in order."""
    row = _rows.run_row(full_run())
    stored = dict(zip(STORED_RUN_FIELDS, _rows.run_row(full_run(), last_seq=False), strict=True))
    assert stored == {name: value for name, value in zip(_rows.RUN_FIELDS, row, strict=True) if name != "last_seq"}


def test_sessions_and_messages_round_trip() -> None:
    session = Session("ses_1", "alice", 1.0, 2.0, {"topic": "x"}, deleted=True)
    assert _rows.session_from_row(_rows.session_row(session)) == session
    message = Message("user", {"text": "hi"}, 3.0, {"name": "a"})
    assert _rows.message_from_row(_rows.message_row(message)) == message


def test_an_update_sets_only_the_fields_it_names_a_later_pair_winning() -> None:
    run = full_run()
    _rows.apply_update(run, RunUpdate(status=RunStatus.RUNNING, clear_lease=True, worker_id="w2", attempt=3))
    assert (run.status, run.worker_id, run.lease_expires_at, run.attempt) == (RunStatus.RUNNING, "w2", None, 3)
    assert (run.output, run.error, run.finished_at) == ([1, 2], RunError("boom", "it broke"), 3.5)  # untouched


def test_update_columns_encode_what_update_fields_set_a_later_update_winning() -> None:
    first = RunUpdate(status=RunStatus.SUCCEEDED, output={"a": 1}, set_output=True, finished_at=4.0)
    second = RunUpdate(error=RunError("late", "x"), clear_lease=True)
    assert _rows.update_columns([first, second]) == {
        "status": "succeeded",
        "output": '{"a":1}',
        "finished_at": 4.0,
        "error": '{"code":"late","message":"x"}',
        "worker_id": None,
        "lease_expires_at": None,
    }
    assert set(_rows.update_columns([first, second])) <= set(_rows.UPDATE_FIELDS)


def test_a_wait_sets_wake_at_beside_it_and_clearing_it_empties_both() -> None:
    sleep = Wait(SLEEP, "sleep_1", 1, 4, until=20.0)
    columns = _rows.update_columns([RunUpdate(status=RunStatus.WAITING, waiting=sleep, executed_s=2.5)])
    assert columns == {
        "status": "waiting",
        "waiting": _rows.dump_wait(sleep),
        "wake_at": 20.0,
        "executed_s": 2.5,
    }
    assert _rows.load_wait(columns["waiting"]) == sleep
    cleared = _rows.update_columns([RunUpdate(waiting=sleep), RunUpdate(clear_waiting=True)])
    assert cleared == {"waiting": None, "wake_at": None}


def test_a_step_round_trips_through_its_row() -> None:
    step = StepRecord("fetch", 3, b'{"a":"\\u0000 \xc3\xbc"}', 7, 1.5)
    assert _rows.step_from_row(_rows.step_row(step)) == step
