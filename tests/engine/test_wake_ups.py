"""A run queued in a fleet (PostgreSQL + Redis) wakes two workers, however many
there are: the first to claim takes it. Issue 15, item 3: every worker claimed
on every wake-up, and all but one found nothing.

The workers' poll of the store (``POLL_S``) is set beyond every test's length
here, so only wake-ups can explain a claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from runyard import RunStatus, Runyard
from runyard.engine import engine
from runyard.models import Run
from runyard.observability.metrics import REGISTRY
from runyard.runtime import Runtime
from tests.services import redis_url, require_redis
from tests.support import make_app

pytestmark = pytest.mark.postgres


@pytest.fixture
def deployment(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Settings of processes sharing one PostgreSQL database and one Redis prefix."""
    require_redis()
    monkeypatch.setattr(engine, "POLL_S", 60.0)
    return {"store": postgres_url, "broker": redis_url(f"wakes-{secrets.token_hex(4)}")}


class Claims:
    """Counts the claims a worker's store answers, and the empty ones; keeps the runs taken."""

    def __init__(self, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made = self.empty = 0
        self.taken: list[str] = []
        claim = rt.store.claim

        async def counted(*args: Any, **kwargs: Any) -> Any:
            claimed = await claim(*args, **kwargs)
            self.made += 1
            self.empty += not claimed
            self.taken += [item.run.run_id for item in claimed]
            return claimed

        monkeypatch.setattr(rt.store, "claim", counted)


@contextlib.asynccontextmanager
async def fleet(deployment: dict[str, Any], workers: int, **worker_settings: Any) -> AsyncIterator[list[Runtime]]:
    """An API process and ``workers`` workers, started; the API's runtime first."""
    apps: list[Runyard] = [make_app(role="api", **deployment)]
    apps += [make_app(role="worker", **deployment, **worker_settings) for _ in range(workers)]
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(app.running()) for app in apps]


def claims_counted() -> dict[str, float]:
    """``runyard_claims_total`` (of every worker here: they share the process's registry)."""
    return {
        result: REGISTRY.get_sample_value("runyard_claims_total", {"result": result}) or 0.0
        for result in ("took", "empty")
    }


async def settled(rt: Runtime, run: Run) -> Run:
    done = await rt.wait(run, 30)
    assert done is not None, f"run {run.run_id} did not finish"
    return done


async def test_each_run_queued_one_at_a_time_is_looked_for_by_two_workers(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fleet(deployment, workers=4) as (api, *workers):
        await asyncio.sleep(0.3)  # each worker's first claim, at its start, is over
        claims = [Claims(worker, monkeypatch) for worker in workers]
        counted_before = claims_counted()
        for i in range(12):
            run = await api.create_run(f"owner{i}", "ticker", {"marker": "m", "count": 1})
            assert (await settled(api, run)).status is RunStatus.SUCCEEDED
        await asyncio.sleep(0.2)  # the claim after each run's end, for the session's next run

        made, empty = sum(c.made for c in claims), sum(c.empty for c in claims)
        counted = {result: claims_counted()[result] - counted_before[result] for result in counted_before}
    assert counted == {"took": made - empty, "empty": empty}, "runyard_claims_total tells the same"
    # one claim takes the run, the other of the two finds nothing, as does one
    # after the run's end; every worker on every wake-up made 4 claims per run
    # and one more after its end (60, 48 of them empty)
    assert made <= 12 * 3 + 2, (made, empty)
    assert empty <= 12 * 2 + 2, (made, empty)
    assert sum(1 for c in claims if c.made) >= 2, "the runs were spread over the workers"


async def test_a_worker_out_of_slots_with_runs_still_ready_wakes_another(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with fleet(deployment, workers=2, max_concurrent_runs=1) as (api, *workers):
        await asyncio.sleep(0.3)
        wakes = api.broker.wakes
        assert wakes is not None
        with monkeypatch.context() as creating:
            creating.setattr(api.broker, "queued", lambda pipeline: asyncio.sleep(0))
            runs = [await api.create_run(f"owner{i}", "nap", {"seconds": 1.0}) for i in range(2)]
        await wakes.put(["nap"])  # one wake-up for both: one worker takes it, with one slot
        async with asyncio.timeout(0.9):  # before either nap ends: both run at once
            for _ in itertools.count():
                if [(await api.get_run(run.owner, run.run_id)).status for run in runs] == [RunStatus.RUNNING] * 2:
                    break
                await asyncio.sleep(0.02)
        assert {worker.engine.active for worker in workers} == {1}
        for run in runs:
            assert (await settled(api, run)).status is RunStatus.SUCCEEDED


async def test_a_run_s_end_wakes_the_worker_waiting_longest_for_its_session_s_next_run(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the worker whose run ended claimed at once, so a worker with
    more runs ending got more new runs: two workers of the same CPU-bound runs
    split them 1 : 2 (bench/README.md, "A twentieth round"). The second run is
    queued behind the first, in its session, with no wake-up of its own."""
    async with fleet(deployment, workers=2) as (api, *workers):
        await asyncio.sleep(0.3)
        claims = [Claims(worker, monkeypatch) for worker in workers]
        wakes = api.broker.wakes
        assert wakes is not None
        with monkeypatch.context() as creating:
            creating.setattr(api.broker, "queued", lambda pipeline: asyncio.sleep(0))
            first = await api.create_run("alice", "nap", {"seconds": 0.2})
            await wakes.put(["nap"])  # one wake-up: one worker takes the first run, the other waits on
            second = await api.create_run("alice", "nap", {"seconds": 0.01}, session_id=first.session_id)
        first, second = await settled(api, first), await settled(api, second)

    assert sorted(c.taken for c in claims) == sorted([[first.run_id], [second.run_id]])
