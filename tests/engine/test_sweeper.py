"""The retention sweep runs in a task of its own: however long it takes (a large run
is deleted in many short writes), the maintenance loop goes on renewing leases."""

from __future__ import annotations

import asyncio

from runyard.store.base import LeaseRenewal
from tests.support import make_app


async def test_a_sweep_that_takes_long_never_delays_lease_renewals() -> None:
    async with make_app(store="memory://", sweep_interval_s=0.1, lease_s=0.3).running() as rt:
        store = rt.store
        sweeping, renewals = asyncio.Event(), asyncio.Condition()
        renewed = 0

        async def endless_sweep(finished_before: float) -> int:
            sweeping.set()
            await asyncio.Event().wait()  # a sweep of a huge run, never done within this test
            return 0

        renew = store.renew_leases

        async def counted_renewal(worker_id: str, run_ids: list[str], until: float) -> LeaseRenewal:
            nonlocal renewed
            async with renewals:
                renewed += 1
                renewals.notify_all()
            return await renew(worker_id, run_ids, until)

        store.sweep_runs = endless_sweep  # type: ignore[method-assign]
        store.renew_leases = counted_renewal  # type: ignore[method-assign,assignment]
        run = await rt.create_run("alice", "nap", {"seconds": 30})
        await asyncio.wait_for(sweeping.wait(), 5)
        seen = renewed

        async with renewals:
            await asyncio.wait_for(renewals.wait_for(lambda: renewed >= seen + 3), 5)

        await rt.cancel_run("alice", run.run_id)
