"""The store contract of scheduled runs (issue 13), every backend: a run created
with ``after_s`` (``scheduled_for``) is not claimed before its time, and crons:
their records, and the firing of a due time, which claims it and creates its run
in one transaction, once.

Runs once per URL in ``tests/conftest.py::STORE_URLS``, as ``test_contract.py``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from runyard.errors import SessionNotFound
from runyard.models import Cron, now
from runyard.store import Store
from runyard.store.base import RunQuery
from runyard.store.crons import CronFiring
from tests.store.test_contract import SERVED, T0, created, run, session

_ids = itertools.count(1)
MINUTE = 60.0


def cron(owner: str = "alice", *, next_run_at: float | None = T0 + MINUTE, **fields: Any) -> Cron:
    fields.setdefault("enabled", next_run_at is not None)
    return Cron(
        cron_id=f"cron_{next(_ids)}",
        owner=owner,
        pipeline="ticker",
        input={"count": 3},
        schedule="* * * * *",
        timezone="UTC",
        created_at=T0,
        updated_at=T0,
        next_run_at=next_run_at,
        **fields,
    )


async def claimed_ids(store: Store, at: float) -> list[str]:
    return [c.run.run_id for c in await store.claim("w1", 10, at, at + 30, pipelines=SERVED)]


# -- after_s -------------------------------------------------------------------


async def test_a_scheduled_run_is_not_claimed_before_its_time_then_is(store: Store) -> None:
    ses = session()
    later = run(ses.session_id, scheduled_for=T0 + 60)
    await store.create_run(later, ses)
    assert (await store.get_run(later.run_id)).scheduled_for == T0 + 60  # type: ignore[union-attr]
    assert await claimed_ids(store, T0 + 59.9) == []
    assert await claimed_ids(store, T0 + 60) == [later.run_id]


async def test_a_session_s_later_runs_stay_behind_its_scheduled_run(store: Store) -> None:
    ses = session()
    scheduled = run(ses.session_id, scheduled_for=T0 + 60)
    await store.create_run(scheduled, ses)
    await created(store, behind := run(ses.session_id, at=T0 + 1))
    assert await claimed_ids(store, T0 + 30) == []  # the session's oldest unfinished run holds it
    assert await claimed_ids(store, T0 + 60) == [scheduled.run_id]
    assert behind.run_id not in await claimed_ids(store, T0 + 61)


async def test_a_run_scheduled_for_later_is_neither_queue_depth_nor_unserved(store: Store) -> None:
    ses, other = session(), session()
    await store.create_run(run(ses.session_id, scheduled_for=now() + 3600), ses)
    await store.create_run(run(other.session_id, scheduled_for=now() - 1), other)
    assert await store.count_queued() == 1  # only the one due already waits for a worker
    assert await store.unserved_pipelines(T0) == {"ticker": 1}


# -- cron records ----------------------------------------------------------------


async def test_crons_are_stored_read_listed_by_owner_changed_and_deleted(store: Store) -> None:
    mine = cron(session_id="ses_9", metadata={"k": "v"}, webhook="https://example.test/hook")
    theirs = cron("bob")
    await store.create_cron(mine)
    await store.create_cron(theirs)
    assert await store.get_cron(mine.cron_id) == mine
    assert await store.list_crons("alice") == [mine]
    mine.schedule, mine.input, mine.enabled, mine.next_run_at, mine.updated_at = "0 * * * *", [1], False, None, T0 + 5
    assert await store.update_cron(mine, T0 + MINUTE)
    assert await store.get_cron(mine.cron_id) == mine
    assert await store.delete_cron(mine.cron_id)
    assert await store.get_cron(mine.cron_id) is None
    assert not await store.delete_cron(mine.cron_id)
    assert not await store.update_cron(mine, None)
    assert await store.list_crons("bob") == [theirs]


async def test_a_change_read_before_a_firing_cannot_set_its_due_time_back(store: Store) -> None:
    due = cron()
    await store.create_cron(due)
    assert await store.fire_cron(CronFiring(due.cron_id, T0 + MINUTE, T0 + 2 * MINUTE))
    due.input = {"count": 4}  # as read before the firing, next_run_at still T0 + 60
    assert not await store.update_cron(due, T0 + MINUTE)
    stored = await store.get_cron(due.cron_id)
    assert stored is not None and (stored.next_run_at, stored.input) == (T0 + 2 * MINUTE, {"count": 3})


async def test_due_crons_are_the_enabled_ones_whose_time_came_soonest_first(store: Store) -> None:
    late, early, future = cron(next_run_at=T0 + 50), cron(next_run_at=T0 + 10), cron(next_run_at=T0 + 500)
    disabled = cron(next_run_at=T0, enabled=False)
    for each in (late, early, future, disabled):
        await store.create_cron(each)
    assert [c.cron_id for c in await store.due_crons(T0 + 100, 10)] == [early.cron_id, late.cron_id]
    assert [c.cron_id for c in await store.due_crons(T0 + 100, 1)] == [early.cron_id]


# -- firing ----------------------------------------------------------------------


async def test_firing_a_due_time_creates_its_run_and_moves_the_cron_on_once(store: Store) -> None:
    due = cron()
    await store.create_cron(due)
    ses = session(at=T0 + 61)
    made = run(ses.session_id, at=T0 + 61, metadata={"cron_id": due.cron_id})
    assert await store.fire_cron(CronFiring(due.cron_id, T0 + 60, T0 + 120, made, ses))
    again = run(ses.session_id, at=T0 + 61)
    assert not await store.fire_cron(CronFiring(due.cron_id, T0 + 60, T0 + 120, again, session(at=T0 + 61)))
    stored = await store.get_cron(due.cron_id)
    assert stored is not None and stored.next_run_at == T0 + 120
    assert (stored.last_run_id, stored.last_run_at) == (made.run_id, T0 + 61)
    assert await store.get_run(made.run_id) == made
    assert await store.get_run(again.run_id) is None


async def test_of_firings_racing_for_one_due_time_exactly_one_creates_a_run(store: Store) -> None:
    due = cron()
    await store.create_cron(due)
    firings = [(ses := session(), run(ses.session_id, metadata={"cron_id": due.cron_id})) for _ in range(5)]
    fired = await asyncio.gather(
        *(store.fire_cron(CronFiring(due.cron_id, T0 + 60, T0 + 120, r, s)) for s, r in firings)
    )
    assert sorted(fired) == [False, False, False, False, True]
    runs = await store.list_runs(RunQuery("alice"))
    assert [r.run_id for r in runs] == [r.run_id for (_, r), ok in zip(firings, fired, strict=True) if ok]


async def test_a_disabled_cron_fires_nothing(store: Store) -> None:
    off = cron(next_run_at=T0 + 60, enabled=False)
    await store.create_cron(off)
    ses = session()
    assert not await store.fire_cron(CronFiring(off.cron_id, T0 + 60, T0 + 120, run(ses.session_id), ses))
    assert await store.list_runs(RunQuery("alice")) == []


async def test_a_firing_without_a_run_only_moves_the_cron_on(store: Store) -> None:
    due = cron()
    await store.create_cron(due)
    assert await store.fire_cron(CronFiring(due.cron_id, T0 + 60, T0 + 600))
    stored = await store.get_cron(due.cron_id)
    assert stored is not None and (stored.next_run_at, stored.last_run_id) == (T0 + 600, None)


async def test_a_cron_s_run_enters_its_session_behind_the_session_s_runs(store: Store) -> None:
    ses = session()
    first = run(ses.session_id)
    await store.create_run(first, ses)
    due = cron(session_id=ses.session_id)
    await store.create_cron(due)
    made = run(ses.session_id, at=T0 + 61)
    assert await store.fire_cron(CronFiring(due.cron_id, T0 + 60, T0 + 120, made, expired_before=T0 - 3600))
    assert [r.run_id for r in await store.unfinished_runs(ses.session_id)] == [first.run_id, made.run_id]


async def test_a_cron_s_run_into_a_deleted_session_writes_nothing(store: Store) -> None:
    ses = session()
    await store.create_session(ses)
    await store.delete_session(ses.session_id, T0)
    due = cron(session_id=ses.session_id)
    await store.create_cron(due)
    made = run(ses.session_id, at=T0 + 61)
    with pytest.raises(SessionNotFound):
        await store.fire_cron(CronFiring(due.cron_id, T0 + 60, T0 + 120, made, expired_before=T0 - 3600))
    assert await store.get_run(made.run_id) is None
    stored = await store.get_cron(due.cron_id)
    assert stored is not None and stored.next_run_at == T0 + 60  # the due time is still unclaimed
