"""The cron scheduler (issue 13) in one process, on every store: a due time makes
a run of the cron's pipeline whose metadata carries ``cron_id``; times missed
while nothing ran make one catch-up run; a disabled cron makes nothing. The
scheduler's clock is the ``at`` given to ``fire_due`` (its loop gives now)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from runyard import RunStatus
from runyard.crons import next_time
from runyard.errors import InvalidSchedule
from runyard.models import Cron, Run, now
from runyard.runtime import Runtime
from tests.support import make_app

# Hourly, not every minute: the runtime's own scheduler loop fires a due cron
# too, and a minute boundary falling between its firing and the test's would
# make a second due time (seen once in CI); an hour boundary almost never does.
SCHEDULE = "0 * * * *"
PERIOD_S = 3600.0


@pytest.fixture
async def rt(store_url: str) -> AsyncIterator[Runtime]:
    app = make_app(store=store_url)
    async with app.running() as runtime:
        yield runtime


async def overdue(rt: Runtime, periods: int, **fields: object) -> Cron:
    """An hourly cron whose next due time passed ``periods`` periods ago (nothing ran meanwhile)."""
    cron = await rt.crons.create("alice", "nap", {"seconds": 0.01}, SCHEDULE, **fields)  # type: ignore[arg-type]
    return await made_overdue(rt, cron, periods)


async def made_overdue(rt: Runtime, cron: Cron, periods: int) -> Cron:
    """``cron``, its next due time moved ``periods`` periods into the past."""
    created_next = cron.next_run_at
    cron.next_run_at = (created_next or 0.0) - periods * PERIOD_S
    assert await rt.store.update_cron(cron, created_next)
    return cron


async def runs_of(rt: Runtime, cron: Cron) -> list[Run]:
    return [run for run in await rt.list_runs("alice") if run.metadata.get("cron_id") == cron.cron_id]


async def test_times_missed_while_nothing_ran_make_one_catch_up_run(rt: Runtime) -> None:
    cron = await overdue(rt, periods=5)
    at = now()
    await rt.crons.fire_due(at)
    await rt.crons.fire_due(at + 0.5)  # the loop's next tick, racing or not, finds nothing due
    (run,) = await runs_of(rt, cron)
    assert (run.pipeline, run.input["seconds"], run.metadata) == ("nap", 0.01, {"cron_id": cron.cron_id})
    moved = await rt.crons.get("alice", cron.cron_id)
    assert moved.next_run_at == next_time(SCHEDULE, "UTC", at)  # the next time from now, not from then
    assert moved.last_run_id == run.run_id
    finished = await rt.wait(run, 20)
    assert finished is not None and finished.status is RunStatus.SUCCEEDED


async def test_a_disabled_cron_makes_nothing(rt: Runtime) -> None:
    cron = await rt.crons.create("alice", "nap", {"seconds": 0.01}, SCHEDULE)
    # disabled before it is due: made due first, the runtime's own loop fired it
    # before the test could disable it (seen once in CI)
    cron = await rt.crons.update("alice", cron.cron_id, enabled=False)
    cron.next_run_at = now() - PERIOD_S  # even with a due time in its row
    assert await rt.store.update_cron(cron, None)
    assert await rt.crons.fire_due(now()) == 0
    assert await runs_of(rt, cron) == []


async def test_a_cron_s_runs_enter_its_session(rt: Runtime) -> None:
    session = await rt.create_session("alice")
    cron = await overdue(rt, periods=1, session_id=session.session_id)
    await rt.crons.fire_due(now())
    (run,) = await runs_of(rt, cron)
    assert run.session_id == session.session_id


async def test_a_cron_whose_session_is_gone_skips_its_time_and_makes_nothing(rt: Runtime) -> None:
    session = await rt.create_session("alice")
    cron = await rt.crons.create("alice", "nap", {"seconds": 0.01}, SCHEDULE, session_id=session.session_id)
    await rt.delete_session("alice", session.session_id)
    # due only now that its session is gone: the runtime's own scheduler loop, which
    # may fire it before the call below, must not find it due with its session alive
    cron = await made_overdue(rt, cron, periods=1)
    at = now()
    await rt.crons.fire_due(at)
    assert await runs_of(rt, cron) == []
    assert (await rt.crons.get("alice", cron.cron_id)).next_run_at == next_time(SCHEDULE, "UTC", at)


def test_a_schedule_is_read_in_its_time_zone() -> None:
    winter = 1_767_225_600.0  # 2026-01-01T00:00:00Z, 01:00 in Paris
    assert next_time("0 9 * * *", "Europe/Paris", winter) - winter == 8 * 3600  # 09:00 CET is 08:00Z
    assert next_time("0 9 * * *", "UTC", winter) - winter == 9 * 3600
    with pytest.raises(InvalidSchedule):
        next_time("0 9 * * *", "Nowhere/Town", winter)


async def test_a_cron_whose_schedule_can_no_longer_be_read_is_disabled_and_holds_up_no_other(rt: Runtime) -> None:
    broken = await rt.crons.create("alice", "nap", {"seconds": 0.01}, SCHEDULE)
    broken.timezone = "Gone/Zone"  # as if its zone had left the zone data since
    # broken and due in one write: due first, the runtime's own scheduler loop
    # fired it before the test could break it (seen once in CI)
    broken = await made_overdue(rt, broken, periods=2)
    sound = await overdue(rt, periods=1)
    await rt.crons.fire_due(now())
    assert await runs_of(rt, broken) == []
    assert len(await runs_of(rt, sound)) == 1
    disabled = await rt.crons.get("alice", broken.cron_id)
    assert (disabled.enabled, disabled.next_run_at) == (False, None)
